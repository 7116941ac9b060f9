"""The timings' figures: medians per shape and path, and warm medians across recorded runs.

Both use log scales: v1 and v2 differ by orders of magnitude, and a regression of v2 must still
show as a step up beside v1. Built from `shareprice.timings` results, without streamlit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import plotly.graph_objects as go

from shareprice.timings import CACHE_STATES, VARIANTS, DetailedShape, PathTiming


def _spread(timing: PathTiming) -> tuple[float, float, float]:
    """(median, max - median, median - min) of a timing that has runs."""
    median, low, high = timing.median_ms, timing.min_ms, timing.max_ms
    assert median is not None and low is not None and high is not None
    return median, high - median, median - low


def timings_figure(results: Iterable[DetailedShape]) -> go.Figure:
    """Median per shape and path (bars), min-max as error bars, log scale: v1 and v2 differ by
    orders of magnitude."""
    results = list(results)
    fig = go.Figure()
    colors = {"v1": "#d64545", "v2": "#2e7dd6", "floor": "#7a8594"}
    for variant in VARIANTS:
        for cache in CACHE_STATES:
            cells = [
                (s.name, _spread(t))
                for s in results
                if (t := s.timing(variant, cache)) is not None and t.runs_ms
            ]
            if not cells:
                continue
            fig.add_trace(
                go.Bar(
                    name=f"{variant} {cache}",
                    x=[name for name, _ in cells],
                    y=[median for _, (median, _, _) in cells],
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [up for _, (_, up, _) in cells],
                        "arrayminus": [down for _, (_, _, down) in cells],
                    },
                    marker_color=colors[variant],
                    marker_pattern_shape="/" if cache == "cold" else "",
                    opacity=0.75 if cache == "cold" else 1.0,
                )
            )
    fig.update_layout(
        barmode="group",
        yaxis={"type": "log", "title": "median ms (log)"},
        height=420,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": 1.1},
    )
    return fig


def history_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Warm medians of v1 and v2 per shape across recorded runs: a regression is a step up."""
    fig = go.Figure()
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in rows:
        if r["cache"] == "warm" and r["variant"] in ("v1", "v2") and r["median_ms"] is not None:
            series.setdefault((r["shape"], r["variant"]), []).append((r["run_id"], r["median_ms"]))
    for (shape, variant), points in sorted(series.items()):
        points.sort()
        fig.add_trace(
            go.Scatter(
                name=f"{shape} {variant}",
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="lines+markers",
                line={"dash": "dot" if variant == "v1" else "solid"},
            )
        )
    fig.update_layout(
        xaxis_title="run",
        yaxis={"type": "log", "title": "warm median ms (log)"},
        height=360,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
    )
    return fig


def detailed_table(results: Iterable[DetailedShape]) -> list[dict[str, Any]]:
    """One row per shape, path and cache state, for the page and the CLI."""
    out = []
    for shape in results:
        for t in shape.timings:
            out.append(
                {
                    "shape": shape.name,
                    "path": t.variant,
                    "cache": t.cache,
                    "median ms": t.median_ms,
                    "min ms": t.min_ms,
                    "max ms": t.max_ms,
                    "runs": len(t.runs_ms),
                    "rows": t.rows,
                    "bytes": t.bytes,
                    "python peak MB": round(t.peak_bytes / 2**20, 2) if t.peak_bytes else None,
                    "v1/v2": shape.ratio(t.cache) if t.variant == "v1" else None,
                    "equal": t.equal,
                }
            )
    return out
