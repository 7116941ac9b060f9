"""What the migration progress page shows of a backfill's status: the coverage strip and tables.

The figures come from `shareprice.backfill.status.summarize` (cheap queries, refreshed every two
seconds while a backfill runs); here they only become a plotly strip and rows for tables, so the
page stays a description and the rules (colours per state, column names) are tested without a
browser.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from shareprice.backfill.status import (
    Failure,
    ProgressSummary,
    Run,
    TableRows,
    format_duration,
)

# ----------------------------------------------------------------------------- chart

STATE_COLORS = {
    "normalized": "#2e9d5b",
    "stale": "#e0a526",
    "failed": "#d64545",
    "pending": "#b8bec7",
}


def coverage_figure(summary: ProgressSummary) -> go.Figure:
    """A one-row strip of raw epochs coloured by state, so gaps stand out at a glance."""
    fig = go.Figure()
    for state, color in STATE_COLORS.items():
        ranges = [r for r in summary.coverage if r.state == state]
        if not ranges:
            continue
        fig.add_trace(
            go.Bar(
                name=state,
                y=["epochs"] * len(ranges),
                x=[r.last_epoch - r.first_epoch + 1 for r in ranges],
                base=[r.first_epoch for r in ranges],
                orientation="h",
                marker_color=color,
                customdata=[[r.first_epoch, r.last_epoch, r.epochs] for r in ranges],
                hovertemplate=(
                    f"{state}: epochs %{{customdata[0]}}-%{{customdata[1]}} "
                    "(%{customdata[2]} raw epochs)<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        barmode="overlay",
        height=140,
        margin={"l": 10, "r": 10, "t": 10, "b": 30},
        xaxis_title="epoch",
        yaxis={"visible": False},
        legend={"orientation": "h", "y": 1.3},
    )
    return fig


# ----------------------------------------------------------------------------- tables for display


def runs_table(runs: list[Run]) -> list[dict[str, Any]]:
    """Past runs as rows for a table (the page and JSON consumers share the column names)."""
    return [
        {
            "run": r.run_id,
            "status": r.effective_status,
            "started": r.started_at,
            "duration": format_duration(r.elapsed_s),
            "epochs done": r.epochs_done,
            "of": r.epochs_total,
            "failed": r.epochs_failed,
            "rows written": r.rows_total,
            "epochs/s": round(r.epochs_per_s, 2) if r.epochs_per_s else None,
            "range": f"{r.epoch_from}-{r.epoch_to}" if r.epoch_from is not None else "",
            "error": r.error or "",
        }
        for r in runs
    ]


def tables_table(tables: list[TableRows]) -> list[dict[str, Any]]:
    return [
        {"table": t.table, "rows": t.rows, "counted": "estimate" if t.estimated else "exact"}
        for t in tables
    ]


def failures_table(failures: list[Failure]) -> list[dict[str, Any]]:
    return [
        {"epoch": f.epoch, "run": f.run_id, "reason": f.reason, "recorded": f.recorded_at}
        for f in failures
    ]
