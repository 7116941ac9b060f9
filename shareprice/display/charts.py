"""Plotly figures and the "what is shown" table of the explorer. No streamlit here.

One figure holds three rows (price, stake, rewards) on ONE x axis with three y axes, so zooming
or panning moves all three and `hoversubplots="axis"` with `hovermode="x unified"` gives one
tooltip per epoch listing every visible series of every row (the old dashboard's synced charts;
three matched x axes would give one tooltip per row). Traces get numpy arrays, which plotly
ships to the browser as base64 typed arrays: ~11 bytes per float instead of ~19 as text.

A hole in the data is drawn as a hole: wherever an operator's row has a previous row more than
one epoch back (`prev_epoch`, which both the full and the downsampled reads carry) a NaN point
is inserted, so no line is drawn across epochs that have no data. The downsampling query keeps
the first row after every hole, so the downsampled series breaks in the same places.

The "all operators" overview is a percentile band (two polygons and a median), never one trace
per operator: 900 traces take 12 s (SVG) to over 100 s (WebGL) to draw in headless Chromium.
It is only drawn from BAND_MIN_OPERATORS operators: percentiles of two prices mean nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import plotly.graph_objects as go
import polars as pl

from shareprice.queries import PERQ, perq_to_decimal

Mode = Literal["absolute", "bps", "indexed"]
Scale = Literal["auto", "fit", "log"]
Unit = Literal["AI3", "Shannons"]
Row = Literal["price", "stake", "rewards"]

MODES: dict[Mode, str] = {
    "absolute": "Absolute",
    "bps": "Change per epoch (bps)",
    "indexed": "Indexed to range start",
}
SCALES: dict[Scale, str] = {"auto": "Auto", "fit": "Fit", "log": "Log"}
#: Each row's default axis: prices differ in the 6th digit (Fit), stakes from zero (Auto),
#: rewards over orders of magnitude (Log).
DEFAULT_SCALES: dict[Row, Scale] = {"price": "fit", "stake": "auto", "rewards": "log"}
UNITS: tuple[Unit, ...] = ("AI3", "Shannons")
#: Fit: the data's min to max plus this share of the span on each side (FLAT_PAD of the value
#: when every value is the same).
FIT_PAD = 0.05
FLAT_PAD = 0.02
#: The all-operators band needs at least this many operators to mean anything.
BAND_MIN_OPERATORS = 10

#: Statuses whose series ends: marked with a symbol where the line stops.
ENDED_STATUSES = {
    "deregistered": ("x", "#6b7280"),
    "slashed": ("x-thin-open", "#dc2626"),
    "pendingSlash": ("triangle-down", "#f97316"),
    "deactivated": ("square-open", "#6b7280"),
    "invalidBundle": ("diamond-open", "#dc2626"),
}
BAND_COLOR = "rgba(100, 116, 139, {alpha})"
#: Rewards are drawn as filled steps (bars without the rectangles): this alpha lets every
#: operator's outline show through the others' fills.
REWARDS_FILL_ALPHA = 0.3
FALLBACK_COLOR = "#64748b"
TOTAL_COLOR = "#111827"
#: y-axis domains of the three rows (bottom to top: rewards, stake, price).
ROW_DOMAINS: dict[Row, tuple[float, float]] = {
    "price": (0.46, 1.0),
    "stake": (0.235, 0.425),
    "rewards": (0.0, 0.195),
}
ROW_AXES: dict[Row, str] = {"price": "y", "stake": "y2", "rewards": "y3"}
#: The explorer figure's margins (px), wide enough for what the default view pushes.
FIGURE_MARGIN = {"l": 80, "r": 10, "t": 80, "b": 66}


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


def gap_positions(epochs: np.ndarray, prev_epochs: np.ndarray | None) -> np.ndarray:
    """Indexes of the rows that follow a hole: their previous row is more than one epoch back.

    `prev_epochs` is the epoch of each row's previous row in the DATA (not in what is drawn):
    a downsampled series skips epochs without skipping data, and must not break there.
    NaN / None = no previous row (the series starts): no hole.
    """
    if prev_epochs is None or len(epochs) == 0:
        return np.zeros(0, dtype=np.int64)
    prev = np.asarray(prev_epochs, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        breaks = (np.asarray(epochs, dtype=np.float64) - prev) > 1
    return np.flatnonzero(breaks)


def with_gaps(
    epochs: np.ndarray, values: Sequence[np.ndarray], at: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Insert one NaN point before each index in `at` (x: the first missing epoch), so plotly
    (connectgaps off) draws no line across the hole.

    x comes back as float32: epochs (and the half epochs of reward steps) are exact in it below
    2**24, and it halves the bytes of every trace's x against float64."""
    x = np.asarray(epochs, dtype=np.float32)
    ys = [np.asarray(v, dtype=np.float64) for v in values]
    at = at[at > 0]  # a hole before the first drawn point is not drawn anyway
    if len(at) == 0:
        return x, ys
    gap_x = x[at - 1] + 1
    return np.insert(x, at, gap_x), [np.insert(y, at, np.nan) for y in ys]


def reward_steps(x: np.ndarray, ys: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rewards as centred steps ("hvh": each value spans halfway to its neighbours, as a bar
    would), one filled path per operator instead of one SVG rectangle per epoch: thousands of
    bars took most of the figure's drawing time. An epoch alone between two holes (or NaN gap
    points) would be a step of no width: it gets two more points half an epoch either side, so
    it shows as a bar of one epoch's width; gaps stay gaps."""
    y = ys[0]
    alone = np.flatnonzero(
        np.isfinite(y) & ~np.isfinite(np.r_[np.nan, y[:-1]]) & ~np.isfinite(np.r_[y[1:], np.nan])
    )
    if len(alone) == 0:
        return x, ys
    at = np.r_[alone, alone + 1]
    return (
        np.insert(x, at, np.r_[x[alone] - 0.5, x[alone] + 0.5]),
        [np.insert(y, at, np.r_[y[alone], y[alone]])],
    )


def _translucent(color: str, alpha: float) -> str:
    """A #rrggbb colour as rgba with `alpha` (other colour texts as they are)."""
    text = color.strip()
    if len(text) == 7 and text.startswith("#"):
        try:
            r, g, b = (int(text[i : i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            return color
        return f"rgba({r}, {g}, {b}, {alpha})"
    return color


def fit_range(values: np.ndarray) -> list[float] | None:
    """The data's min to max plus FIT_PAD of the span (FLAT_PAD of the value when flat)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    pad = (high - low) * FIT_PAD if high > low else (abs(high) * FLAT_PAD or 1.0)
    return [low - pad, high + pad]


def axis_settings(scale: Scale, values: Sequence[np.ndarray]) -> dict[str, object]:
    """type/range/autorange for one row; Log falls back to Fit where nothing can be drawn
    on a log axis (no positive value, or negative ones such as changes per epoch)."""
    joined = np.concatenate([np.asarray(v, dtype=np.float64) for v in values] or [np.zeros(0)])
    finite = joined[np.isfinite(joined)]
    if scale == "log":
        if finite.size and (finite > 0).any() and not (finite < 0).any():
            return {"type": "log", "autorange": True}
        scale = "fit"
    if scale == "fit":
        bounds = fit_range(finite)
        if bounds is not None:
            return {"type": "linear", "range": bounds, "autorange": False}
    return {"type": "linear", "autorange": True}


def _add_hover_dates(fig: go.Figure, epochs: pl.Series, dates: Mapping[int, str] | None) -> bool:
    """Each drawn epoch's date, once, as the first line of the unified tooltip: an invisible
    first trace on an invisible axis of its own (`yaxis4`, over the price row, so it moves no
    range). Dates on every operator's price trace sent the same ~20-byte text once per operator
    and point: a fifth of the default view's bytes, parsed and kept by the browser."""
    if not dates or epochs.is_empty():
        return False
    drawn = epochs.unique().sort().to_numpy()
    fig.add_trace(
        go.Scatter(
            x=drawn.astype(np.float32),
            y=np.zeros(len(drawn), dtype=np.int8),
            mode="none",  # nothing drawn (no path of thousands of points), hover only
            customdata=np.array([dates.get(int(e), "") for e in drawn], dtype=object),
            hovertemplate="%{customdata}<extra></extra>",
            name="date",
            showlegend=False,
            yaxis="y4",
        )
    )
    return True


def explorer_figure(
    series: pl.DataFrame,
    styles: Mapping[int, OperatorStyle],
    *,
    mode: Mode = "absolute",
    scales: Mapping[Row, Scale] | None = None,
    unit: Unit = "AI3",
    band: pl.DataFrame | None = None,
    totals: pl.DataFrame | None = None,
    dates: Mapping[int, str] | None = None,
    holes: Sequence[tuple[int, int]] = (),
    x_range: tuple[int, int] | None = None,
    height: int = 820,
) -> go.Figure:
    """Price (in the chosen mode), stake and rewards (filled steps, like bars) of the selected
    operators.

    `totals` (epoch, total_stake, total_rewards as exact ints) adds a total line to the stake and
    the rewards rows. `scales` maps a row to Auto / Fit / Log (DEFAULT_SCALES when absent).
    `holes` (`queries.epoch_holes`) breaks the band, which has no previous-epoch column.
    """
    chosen = {**DEFAULT_SCALES, **(scales or {})}
    fig = go.Figure()
    row_values: dict[Row, list[np.ndarray]] = {"price": [], "stake": [], "rewards": []}
    has_dates = _add_hover_dates(fig, series["epoch"], dates)  # first: the tooltip's first line
    if band is not None and mode == "absolute" and band.height:
        drawn_band = band.filter(pl.col("operators") >= BAND_MIN_OPERATORS)
        if drawn_band.height:
            row_values["price"] += _add_band(fig, drawn_band, holes)
    shown = mode_values(series, mode).with_columns(
        unit_column("stake", unit).alias("stake_y"), unit_column("rewards", unit).alias("rewards_y")
    )
    y_format = {"absolute": ":.12f", "bps": ":.6f", "indexed": ":.10f"}[mode]
    amount_format = ":,.6f" if unit == "AI3" else ":,.0f"
    for (operator_id,), part in shown.partition_by(
        "operator_id", as_dict=True, maintain_order=True
    ).items():
        style = styles.get(operator_id) or OperatorStyle(
            operator_id, f"operator {operator_id}", FALLBACK_COLOR, None, None
        )
        breaks = gap_positions(part["epoch"].to_numpy(), part["prev_epoch"].to_numpy())
        x, (price_y, stake_y) = with_gaps(
            part["epoch"].to_numpy(),
            [part["y"].to_numpy(), part["stake_y"].to_numpy()],
            breaks,
        )
        row_values["price"].append(price_y)
        row_values["stake"].append(stake_y)
        label = operator_label(operator_id, style.name)
        common = {"legendgroup": str(operator_id), "name": label, "connectgaps": False}
        fig.add_trace(
            go.Scatter(
                x=x,
                y=price_y,
                mode="lines",
                line={"color": style.color, "width": 1.6},
                hovertemplate=f"%{{y{y_format}}}",
                yaxis="y",
                **common,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=stake_y,
                mode="lines",
                line={"color": style.color, "width": 1.6},
                showlegend=False,
                hovertemplate=f"stake %{{y{amount_format}}} {unit}",
                yaxis="y2",
                **common,
            )
        )
        rewards = part["rewards_y"].to_numpy().astype(np.float64)
        row_values["rewards"].append(rewards)
        reward_x, (reward_y,) = reward_steps(
            *with_gaps(part["epoch"].to_numpy(), [rewards], breaks)
        )
        fig.add_trace(
            go.Scatter(
                x=reward_x,
                y=reward_y,
                mode="lines",
                line={"color": style.color, "width": 1, "shape": "hvh"},
                fill="tozeroy",
                fillcolor=_translucent(style.color, REWARDS_FILL_ALPHA),
                showlegend=False,
                hovertemplate=f"rewards %{{y{amount_format}}} {unit}",
                yaxis="y3",
                **common,
            )
        )
        _mark_end(fig, part, style, label)
    if totals is not None and totals.height:
        row_values["stake"] += _add_totals(fig, totals, unit, amount_format)
    price_title = {
        "absolute": "share price (stake per share)",
        "bps": "change per epoch (bps)",
        "indexed": "share price, index (start = 100)",
    }[mode]
    price_scale = chosen["price"]
    if mode == "bps" and price_scale == "log":
        price_scale = "fit"
    layout_axes = {
        "yaxis": {
            "title": {"text": price_title},
            "domain": ROW_DOMAINS["price"],
            "exponentformat": "none",
            **axis_settings(price_scale, row_values["price"]),
        },
        "yaxis2": {
            "title": {"text": f"stake ({unit})"},
            "domain": ROW_DOMAINS["stake"],
            "tickformat": ".3~s",  # 1.5M, not 1.5e+6
            **axis_settings(chosen["stake"], row_values["stake"]),
        },
        "yaxis3": {
            "title": {"text": f"rewards ({unit})"},
            "domain": ROW_DOMAINS["rewards"],
            # AI3 rewards are fractions: 0.001, not SI's "1m" (which reads as a million)
            "tickformat": ".2~g" if unit == "AI3" else ".3~s",
            **axis_settings(chosen["rewards"], row_values["rewards"]),
        },
    }
    if has_dates:
        layout_axes["yaxis4"] = {
            "overlaying": "y",
            "visible": False,
            "fixedrange": True,
            "range": [-1, 1],
        }
    xaxis: dict[str, object] = {
        "title": {"text": "epoch"},
        "anchor": "y3",
        "unifiedhovertitle": {"text": "epoch %{x:,}"},  # the tooltip's header, not a bare number
        "showspikes": True,
        "spikemode": "across",
        "spikesnap": "cursor",
        "spikethickness": 1,
        "spikecolor": "#94a3b8",
        "spikedash": "dot",
    }
    if x_range is not None:
        xaxis["range"] = [x_range[0] - 0.5, x_range[1] + 0.5]
    fig.update_layout(
        height=height,
        # Room for the usual tick labels, axis titles and a two-line legend from the start:
        # plotly grows margins to fit what they push (automargin), but every growth redraws
        # the whole figure once more, which doubled its drawing time in headless Chromium.
        margin=dict(FIGURE_MARGIN),
        hovermode="x unified",
        hoversubplots="axis",
        xaxis=xaxis,
        **layout_axes,
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


def _add_totals(
    fig: go.Figure, totals: pl.DataFrame, unit: Unit, amount_format: str
) -> list[np.ndarray]:
    """Total stake (row 2) and total rewards (row 3) of all operators per epoch, holes kept."""
    frame = totals.sort("epoch").with_columns(
        unit_column("total_stake", unit).alias("stake_y"),
        unit_column("total_rewards", unit).alias("rewards_y"),
        pl.col("epoch").shift(1).alias("prev_epoch"),
    )
    holes = gap_positions(frame["epoch"].to_numpy(), frame["prev_epoch"].to_numpy())
    x, (stake_y, rewards_y) = with_gaps(
        frame["epoch"].to_numpy(),
        [frame["stake_y"].to_numpy(), frame["rewards_y"].to_numpy()],
        holes,
    )
    line = {"color": TOTAL_COLOR, "width": 1.4, "dash": "dash"}
    for name, y, axis in (("Total stake", stake_y, "y2"), ("Total rewards", rewards_y, "y3")):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                line=line,
                name=name,
                legendgroup="totals",
                connectgaps=False,
                hovertemplate=f"%{{y{amount_format}}} {unit}",
                yaxis=axis,
            )
        )
    return [stake_y]


def hole_positions(epochs: np.ndarray, holes: Sequence[tuple[int, int]]) -> np.ndarray:
    """Indexes of drawn points (sorted epochs) with a hole (before, after) right before them.

    For rows without a previous-epoch column (the band: a downsampled band skips epochs that
    exist): the holes come from the data (`queries.epoch_holes`), and the downsampling keeps
    both sides of each, so a hole lies between two consecutive drawn points.
    """
    if not len(holes) or not len(epochs):
        return np.zeros(0, dtype=np.int64)
    found = []
    for before, after in holes:
        index = int(np.searchsorted(epochs, after))
        if 0 < index < len(epochs) and epochs[index - 1] <= before:
            found.append(index)
    return np.array(sorted(set(found)), dtype=np.int64)


def _band_gaps(
    band: pl.DataFrame, holes: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, list[np.ndarray]]:
    epochs = band["epoch"].to_numpy()
    columns = [band[f"{name}_price"].to_numpy() for name in ("p05", "p25", "p50", "p75", "p95")]
    return with_gaps(epochs, columns, hole_positions(epochs, holes))


def _polygons(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outline of the area between low and high: per run between NaN gaps, along the top and
    back along the bottom, runs separated by one NaN."""
    breaks = np.flatnonzero(np.isnan(high))  # the points with_gaps inserted
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    start = 0
    for end in [*breaks.tolist(), len(x)]:
        if end > start:
            if xs:
                xs.append(np.array([np.nan], dtype=x.dtype))
                ys.append(np.array([np.nan]))
            run = slice(start, end)
            xs += [x[run], x[run][::-1]]
            ys += [high[run], low[run][::-1]]
        start = end + 1
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs), np.concatenate(ys)


def _add_band(
    fig: go.Figure, band: pl.DataFrame, holes: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    """p5-p95 and p25-p75 as filled areas, the median as a dashed line; holes stay holes."""
    x, (p05, p25, p50, p75, p95) = _band_gaps(band, holes)
    pairs = [
        (p05, p95, 0.15, "All operators p5–p95"),
        (p25, p75, 0.3, "All operators p25–p75"),
    ]
    for low, high, alpha, name in pairs:
        # One closed polygon per run of epochs (along the top, back along the bottom; a NaN
        # separates runs and "toself" closes each one): one trace per band, not two "tonexty".
        polygon_x, polygon_y = _polygons(x, low, high)
        fig.add_trace(
            go.Scatter(
                x=polygon_x,
                y=polygon_y,
                mode="lines",
                line={"width": 0},
                fill="toself",
                fillcolor=BAND_COLOR.format(alpha=alpha),
                name=name,
                hoverinfo="skip",
                yaxis="y",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=p50,
            mode="lines",
            line={"width": 1, "dash": "dot", "color": BAND_COLOR.format(alpha=0.9)},
            name="All operators median",
            connectgaps=False,
            hovertemplate="%{y:.12f}",
            yaxis="y",
        )
    )
    return [p05, p95]


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
            hovertemplate=f"{style.status} after this epoch",
            name=label,
            yaxis="y",
        )
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
