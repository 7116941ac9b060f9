"""Plotly figures and the "what is shown" table of the explorer. No streamlit here.

One figure holds three rows sharing one x axis (price, stake, rewards), so zooming or panning any
of them moves all three, like the old dashboard's synced charts. Traces get numpy arrays, which
plotly ships to the browser as base64 typed arrays: ~11 bytes per float instead of ~19 as
decimal text, the difference between a first view under or over 2 MB.

The "all operators" overview is a percentile band (one trace per percentile, five in total),
never one trace per operator: 900 traces take 12 s (SVG) to over 100 s (WebGL, software
rendering) to draw in headless Chromium here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from shareprice.queries import PERQ, perq_to_decimal

Mode = Literal["absolute", "bps", "indexed"]
Scale = Literal["linear", "log"]
Unit = Literal["AI3", "Shannons"]

MODES: dict[Mode, str] = {
    "absolute": "Absolute",
    "bps": "Change per epoch (bps)",
    "indexed": "Indexed to range start",
}
SCALES: dict[Scale, str] = {"linear": "Linear", "log": "Log"}
UNITS: tuple[Unit, ...] = ("AI3", "Shannons")

#: Statuses whose series ends: marked with a symbol where the line stops.
ENDED_STATUSES = {
    "deregistered": ("x", "#6b7280"),
    "slashed": ("x-thin-open", "#dc2626"),
    "pendingSlash": ("triangle-down", "#f97316"),
    "deactivated": ("square-open", "#6b7280"),
    "invalidBundle": ("diamond-open", "#dc2626"),
}
BAND_COLOR = "rgba(100, 116, 139, {alpha})"
FALLBACK_COLOR = "#64748b"


@dataclass(frozen=True, slots=True)
class OperatorStyle:
    operator_id: int
    name: str
    color: str
    status: str | None
    last_seen_epoch: int | None


def styles_from(operators: pl.DataFrame) -> dict[int, OperatorStyle]:
    return {
        row["operator_id"]: OperatorStyle(
            row["operator_id"],
            row["name"] or f"operator {row['operator_id']}",
            row["color"] or FALLBACK_COLOR,
            row["status"],
            row["last_seen_epoch"],
        )
        for row in operators.select(
            "operator_id", "name", "color", "status", "last_seen_epoch"
        ).iter_rows(named=True)
    }


def operator_label(operator_id: int, name: str) -> str:
    """ "#12 Gamma node", or just "#12" when the name is only the default "Operator 12"."""
    if name.strip().lower() in (f"operator {operator_id}", f"operator #{operator_id}", ""):
        return f"#{operator_id}"
    return f"#{operator_id} {name}"


def mode_values(series: pl.DataFrame, mode: Mode) -> pl.DataFrame:
    """Add `y`: the price as the chosen mode shows it (floats from the exact columns)."""
    if mode == "bps":
        return series.with_columns(pl.col("change_bps").alias("y"))
    if mode == "indexed":
        first = pl.col("share_price_perq").first().over("operator_id")
        return series.with_columns(
            (
                (pl.col("share_price_perq") - first).cast(pl.Float64)
                / first.cast(pl.Float64)
                * 100.0
                + 100.0
            ).alias("y")
        )
    return series.with_columns(pl.col("share_price").alias("y"))


def unit_column(column: str, unit: Unit) -> pl.Expr:
    """Stake/rewards (exact Shannons) as floats in the chosen unit."""
    value = pl.col(column).cast(pl.Float64)
    return value / float(PERQ) if unit == "AI3" else value


def _hover_dates(epochs: np.ndarray, dates: Mapping[int, str] | None) -> np.ndarray | None:
    if not dates:
        return None
    return np.array([dates.get(int(e), "") for e in epochs], dtype=object)


def explorer_figure(
    series: pl.DataFrame,
    styles: Mapping[int, OperatorStyle],
    *,
    mode: Mode = "absolute",
    scale: Scale = "linear",
    unit: Unit = "AI3",
    band: pl.DataFrame | None = None,
    dates: Mapping[int, str] | None = None,
    x_range: tuple[int, int] | None = None,
    height: int = 820,
) -> go.Figure:
    """Price (in the chosen mode), stake and rewards of the selected operators, x shared."""
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        row_heights=[0.56, 0.24, 0.20],
    )
    date_hover = "<br>%{customdata}" if dates else ""
    if band is not None and mode == "absolute" and band.height:
        _add_band(fig, band, dates)
    shown = mode_values(series, mode).with_columns(
        unit_column("stake", unit).alias("stake_y"), unit_column("rewards", unit).alias("rewards_y")
    )
    y_format = {"absolute": ":.12f", "bps": ":.6f", "indexed": ":.10f"}[mode]
    amount_format = ":,.6f" if unit == "AI3" else ":.6e"
    for (operator_id,), part in shown.partition_by(
        "operator_id", as_dict=True, maintain_order=True
    ).items():
        style = styles.get(operator_id) or OperatorStyle(
            operator_id, f"operator {operator_id}", FALLBACK_COLOR, None, None
        )
        epochs = part["epoch"].to_numpy()
        custom = _hover_dates(epochs, dates)
        label = operator_label(operator_id, style.name)
        common = {
            "mode": "lines",
            "legendgroup": str(operator_id),
            "line": {"color": style.color, "width": 1.6},
            "customdata": custom,
        }
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=part["y"].to_numpy(),
                name=label,
                hovertemplate=f"{label}<br>epoch %{{x}}{date_hover}<br>%{{y{y_format}}}<extra></extra>",
                **common,
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=part["stake_y"].to_numpy(),
                name=label,
                showlegend=False,
                hovertemplate=f"{label}<br>epoch %{{x}}<br>stake %{{y{amount_format}}} {unit}<extra></extra>",
                **common,
            ),
            row=2,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=part["rewards_y"].to_numpy(),
                name=label,
                showlegend=False,
                connectgaps=False,
                hovertemplate=f"{label}<br>epoch %{{x}}<br>rewards %{{y{amount_format}}} {unit}<extra></extra>",
                **common,
            ),
            row=3,
            col=1,
        )
        _mark_end(fig, part, style, label)
    price_title = {
        "absolute": "share price (stake per share)",
        "bps": "change per epoch (bps)",
        "indexed": "share price, index (start = 100)",
    }[mode]
    fig.update_yaxes(
        title_text=price_title,
        type="log" if scale == "log" and mode != "bps" else "linear",
        exponentformat="none",
        row=1,
        col=1,
    )
    fig.update_yaxes(title_text=f"stake ({unit})", tickformat=".4~g", row=2, col=1)
    fig.update_yaxes(title_text=f"rewards ({unit})", tickformat=".4~g", row=3, col=1)
    fig.update_xaxes(title_text="epoch", row=3, col=1)
    if x_range is not None:
        fig.update_xaxes(range=[x_range[0], x_range[1]])
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        hovermode="closest",
        legend={
            "orientation": "h",
            "y": 1.01,
            "yanchor": "bottom",
            "x": 0,
            "font": {"size": 11},
        },
        uirevision="explorer",
    )
    return fig


def _add_band(fig: go.Figure, band: pl.DataFrame, dates: Mapping[int, str] | None) -> None:
    """p5-p95 and p25-p75 as filled areas, the median as a dashed line."""
    epochs = band["epoch"].to_numpy()
    pairs = [
        ("p05_price", "p95_price", 0.15, "All operators p5–p95"),
        ("p25_price", "p75_price", 0.3, "All operators p25–p75"),
    ]
    for low, high, alpha, name in pairs:
        # One closed polygon per band (along the top, back along the bottom): one trace each
        # instead of two "tonexty" traces, which is what costs in the browser.
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([epochs, epochs[::-1]]),
                y=np.concatenate([band[high].to_numpy(), band[low].to_numpy()[::-1]]),
                mode="lines",
                line={"width": 0},
                fill="toself",
                fillcolor=BAND_COLOR.format(alpha=alpha),
                name=name,
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=epochs,
            y=band["p50_price"].to_numpy(),
            mode="lines",
            line={"width": 1, "dash": "dot", "color": BAND_COLOR.format(alpha=0.9)},
            name="All operators median",
            customdata=band["operators"].to_numpy(),
            hovertemplate="median of %{customdata} operators<br>epoch %{x}<br>%{y:.12f}<extra></extra>",
        ),
        row=1,
        col=1,
    )


def _mark_end(fig: go.Figure, part: pl.DataFrame, style: OperatorStyle, label: str) -> None:
    """A symbol and the status where a deregistered or slashed operator's series stops."""
    marker = ENDED_STATUSES.get(style.status or "")
    if marker is None or part.height == 0:
        return
    last = part.tail(1)
    last_epoch = int(last["epoch"][0])
    if style.last_seen_epoch is not None and last_epoch < style.last_seen_epoch:
        return  # the series goes on beyond the shown range: it does not end here
    symbol, color = marker
    fig.add_trace(
        go.Scatter(
            x=[last_epoch],
            y=[float(last["y"][0]) if last["y"][0] is not None else None],
            mode="markers+text",
            marker={
                "symbol": symbol,
                "size": 12,
                "color": color,
                "line": {"width": 2, "color": color},
            },
            text=[style.status],
            textposition="top center",
            textfont={"color": color, "size": 11},
            legendgroup=str(style.operator_id),
            showlegend=False,
            hovertemplate=f"{label} {style.status} after epoch %{{x}}<extra></extra>",
        ),
        row=1,
        col=1,
    )


# --- what is shown, as a table (downloads) --------------------------------------------------------


def shown_frame(
    series: pl.DataFrame,
    styles: Mapping[int, OperatorStyle],
    *,
    mode: Mode,
    unit: Unit,
    dates: Mapping[int, str] | None = None,
) -> pl.DataFrame:
    """Exactly the points the figure draws, with the exact integers behind each one."""
    names = pl.DataFrame(
        {
            "operator_id": list(styles),
            "operator_name": [s.name for s in styles.values()],
        },
        schema={"operator_id": pl.Int64, "operator_name": pl.String},
    )
    value_name = {
        "absolute": "share_price",
        "bps": "change_bps_per_epoch",
        "indexed": "index_start_100",
    }[mode]
    frame = (
        mode_values(series, mode)
        .join(names, on="operator_id", how="left")
        .with_columns(
            pl.col("share_price_perq")
            .map_elements(perq_to_decimal, return_dtype=pl.String)
            .alias("share_price_exact")
        )
    )
    columns: list[str | pl.Expr] = [
        "epoch",
        "operator_id",
        "operator_name",
        pl.col("y").alias(value_name),
        "share_price_exact",
        "share_price_perq",
        pl.col("stake").alias("stake_shannons"),
        pl.col("rewards").alias("rewards_shannons"),
    ]
    if unit == "AI3":
        columns += [
            unit_column("stake", unit).alias("stake_ai3"),
            unit_column("rewards", unit).alias("rewards_ai3"),
        ]
    out = frame.select(columns)
    if dates:
        out = out.with_columns(
            pl.col("epoch")
            .replace_strict(dates, default=None, return_dtype=pl.String)
            .alias("date")
        )
    return out.sort("operator_id", "epoch")


def to_parquet_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """Int128 columns as Decimal(38, 0) (or text beyond that), which every Parquet reader knows:
    polars writes Int128 as a 128-bit integer that pyarrow and pandas refuse to open."""
    converted = []
    for name, dtype in frame.schema.items():
        if dtype == pl.Int128:
            try:
                converted.append(frame[name].cast(pl.Decimal(38, 0), strict=True))
            except pl.exceptions.InvalidOperationError:
                converted.append(frame[name].cast(pl.String))
        else:
            converted.append(frame[name])
    return pl.DataFrame(converted)
