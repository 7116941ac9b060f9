"""The Nominators page's figures and tables, without streamlit: position cards, the value chart
with deposits and withdrawals marked, the nominator count chart and the holders table.

Amounts stay exact ints until they are drawn: cards show exact text (AI3 with 4 decimals,
truncated, or whole Shannons, as the explorer does), charts get floats only as the y values. An
epoch missing between two drawn epochs (a hole in the data or no position) is a gap: a None
point between the two sides, so no line is drawn across it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

import plotly.graph_objects as go
import polars as pl

from shareprice.display.charts import FALLBACK_COLOR, Unit
from shareprice.display.explorer_state import format_amount
from shareprice.queries import PERQ, Holders, NominatorView, Position, Withdrawal

#: The page's path (pages/nominators.py), for links from other pages.
PAGE_PATH = "nominators"
EVENT_MARKERS = {
    "deposit": ("triangle-up", "#16a34a"),
    "withdrawal": ("triangle-down", "#dc2626"),
    "unlock": ("circle-open", "#6b7280"),
}


def nominator_link(address: str) -> str:
    """A relative link to one nominator's view (works from every page of the dashboard)."""
    return f"{PAGE_PATH}?{urlencode({'address': address})}"


def operator_link(operator_id: int) -> str:
    return f"{PAGE_PATH}?{urlencode({'operator': operator_id})}"


def to_unit(shannons: int | None, unit: Unit) -> float | None:
    """A float for drawing only."""
    if shannons is None:
        return None
    return shannons / PERQ if unit == "AI3" else float(shannons)


def fraction_text(perq: int | None, digits: int = 4) -> str:
    """A 10**18-scaled fraction as a percentage with `digits` decimals (truncated, exact)."""
    if perq is None:
        return "–"
    scaled = perq * 100 * 10**digits // PERQ
    whole, part = divmod(scaled, 10**digits)
    return f"{whole}.{part:0{digits}d}%"


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds <= 0:
        return "now"
    minutes = seconds / 60
    if minutes < 120:
        return f"~{minutes:.0f} min"
    hours = minutes / 60
    return f"~{hours:.1f} h" if hours < 48 else f"~{hours / 24:.1f} d"


def withdrawal_text(w: Withdrawal, unit: Unit) -> str:
    if w.kind == "in_shares":
        what = f"{w.shares:,} shares"
        if w.amount is not None:
            what += f" (≈ {format_amount(w.amount, unit)} {unit})"
    else:
        what = f"{format_amount(w.amount, unit)} {unit}"
    if w.unlockable:
        when = f"unlockable since block {w.unlock_block:,}"
    else:
        when = f"unlocks at block {w.unlock_block:,}"
        if w.blocks_left is not None:
            when += f" ({w.blocks_left:,} blocks, ETA {eta_text(w.eta_seconds)})"
    return f"{what}: {when}"


def position_lines(p: Position, unit: Unit) -> list[tuple[str, str]]:
    """(label, text) rows of one position's card, exact."""
    lines = [
        ("Value", f"{format_amount(p.value, unit)} {unit}"),
        ("Effective shares", "–" if p.effective_shares is None else f"{p.effective_shares:,}"),
        ("Share of the pool", fraction_text(p.share_of_pool_perq)),
        ("Principal held", f"{format_amount(p.deposit_on_hold, unit)} {unit}"),
        ("Gain", _signed(p.gain, unit)),
        ("Storage fee", f"{format_amount(p.storage_fee, unit)} {unit}"),
    ]
    if p.pending_amount is not None and p.pending_epoch is not None:
        state = (
            f"converted at the end of epoch {p.pending_epoch:,}"
            if p.pending_converted
            else f"converts at the end of epoch {p.pending_epoch:,}"
        )
        lines.append(
            ("Pending deposit", f"{format_amount(p.pending_amount, unit)} {unit}, {state}")
        )
    for w in p.withdrawals:
        lines.append(("Withdrawal", withdrawal_text(w, unit)))
    return lines


def _signed(value: int | None, unit: Unit) -> str:
    if value is None:
        return "–"
    sign = "-" if value < 0 else "+"
    return f"{sign}{format_amount(abs(value), unit)} {unit}"


def position_cards_html(
    view: NominatorView, unit: Unit, names: Mapping[int, str], colors: Mapping[int, str]
) -> str:
    """One card per operator; database texts (names) are escaped."""
    cards = []
    for p in view.positions:
        color = colors.get(p.operator_id, FALLBACK_COLOR)
        rows = "".join(
            f"<tr><td style='color:#6b7280;padding-right:12px'>{html.escape(label)}</td>"
            f"<td>{html.escape(text)}</td></tr>"
            for label, text in position_lines(p, unit)
        )
        name = html.escape(names.get(p.operator_id, f"operator {p.operator_id}"))
        cards.append(
            f'<div class="sp-nominator-card" style="border-left:6px solid {html.escape(color)};'
            'padding:4px 10px;margin:0 0 8px 0;font-size:0.9rem">'
            f"<b>#{p.operator_id} {name}</b> "
            f'<span style="color:#6b7280">at epoch {p.epoch:,}</span>'
            f"<table>{rows}</table></div>"
        )
    return "".join(cards)


def _with_gaps(epochs: Sequence[int], values: Sequence[float | None]) -> tuple[list, list]:
    """A None point between two epochs that are not consecutive (a hole stays a gap)."""
    xs: list[int | None] = []
    ys: list[float | None] = []
    for i, (epoch, value) in enumerate(zip(epochs, values, strict=True)):
        if i and epoch - epochs[i - 1] > 1:
            xs.append(None)
            ys.append(None)
        xs.append(epoch)
        ys.append(value)
    return xs, ys


def _isolated_points(xs: list, ys: list) -> tuple[list, list]:
    """Points with no drawn neighbour (a hole, or the data's edge, on both sides): a line
    trace draws nothing for them, so they get a marker (the real sample has one epoch of
    positions, which otherwise showed as an empty chart)."""
    keep = [
        i
        for i, y in enumerate(ys)
        if y is not None
        and (i == 0 or ys[i - 1] is None)
        and (i == len(ys) - 1 or ys[i + 1] is None)
    ]
    return [xs[i] for i in keep], [ys[i] for i in keep]


def _lone_marker_trace(xs: list, ys: list, color: str, name: str) -> go.Scatter:
    lone_x, lone_y = _isolated_points(xs, ys)
    return go.Scatter(
        x=lone_x,
        y=lone_y,
        mode="markers",
        marker={"color": color, "size": 7},
        name=name,
        showlegend=False,
    )


def epoch_axis(epochs: Sequence[int]) -> dict[str, object]:
    """An x axis of whole epochs: ticks grouped alike ("2,646", not "2646" beside "2,646.5")
    and, over a short history (a single dump shows one epoch), a tick per epoch instead of
    plotly's half-epoch ticks, which named epochs that do not exist."""
    axis: dict[str, object] = {"title": {"text": "epoch"}, "tickformat": ",d"}
    if epochs and max(epochs) - min(epochs) < 10:
        low, high = min(epochs), max(epochs)
        axis.update(
            tickmode="array", tickvals=list(range(low, high + 1)), range=[low - 1, high + 1]
        )
    return axis


def value_figure(
    history: pl.DataFrame,
    events: pl.DataFrame,
    unit: Unit,
    names: Mapping[int, str],
    colors: Mapping[int, str],
) -> go.Figure:
    """Value per epoch, one line per operator, deposits and withdrawals marked on the line."""
    fig = go.Figure()
    for (op,), part in history.partition_by("operator_id", as_dict=True).items():
        assert isinstance(op, int)
        epochs = part["epoch"].to_list()
        values = [to_unit(v, unit) for v in part["value"].to_list()]
        xs, ys = _with_gaps(epochs, values)
        color = colors.get(op, FALLBACK_COLOR)
        label = f"#{op} {names.get(op, '')}".strip()
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=label, line={"color": color}))
        fig.add_trace(_lone_marker_trace(xs, ys, color, label))
        at = dict(zip(epochs, values, strict=True))
        mine = events.filter(pl.col("operator_id") == op)
        for kind, (symbol, marker_color) in EVENT_MARKERS.items():
            chosen = [r for r in mine.iter_rows(named=True) if r["kind"] == kind]
            points = [(r["epoch"], at[r["epoch"]], r["detail"]) for r in chosen if r["epoch"] in at]
            if not points:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in points],
                    y=[p[1] for p in points],
                    mode="markers",
                    name=f"{label} {kind}",
                    marker={"symbol": symbol, "size": 11, "color": marker_color},
                    text=[p[2] for p in points],
                    hovertemplate="epoch %{x}: %{text}<extra></extra>",
                )
            )
    fig.update_layout(
        height=380,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis=epoch_axis(history["epoch"].to_list()),
        yaxis={
            "title": {"text": f"value ({unit})"},
            # AI3 as the cards write it (160,000.0005, not 160.0005k); Shannons in SI steps.
            "tickformat": ",.4~f" if unit == "AI3" else ".4~s",
        },
        hovermode="closest",
        legend={"orientation": "h"},
    )
    return fig


def counts_figure(counts: pl.DataFrame) -> go.Figure:
    xs, ys = _with_gaps(counts["epoch"].to_list(), counts["nominators"].to_list())
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines", line={"shape": "hv"}, name="nominators"))
    fig.add_trace(_lone_marker_trace(xs, ys, FALLBACK_COLOR, "nominators"))
    fig.update_layout(
        height=260,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis=epoch_axis(counts["epoch"].to_list()),
        yaxis_title="nominators",
    )
    return fig


def holders_table(holders: Holders, unit: Unit) -> pl.DataFrame:
    """The largest holders as display text, with a link to each one's nominator view."""
    rows = []
    for r in holders.rows.iter_rows(named=True):
        share = None
        if r["effective_shares"] is not None and holders.operator_shares:
            share = r["effective_shares"] * PERQ // holders.operator_shares
        rows.append(
            {
                "Rank": str(r["rank"]),
                "Nominator": nominator_link(r["ss58"]),
                f"Value ({unit})": format_amount(r["value"], unit),
                "Effective shares": "–"
                if r["effective_shares"] is None
                else f"{r['effective_shares']:,}",
                "Share of the pool": fraction_text(share),
                f"Principal held ({unit})": format_amount(r["deposit_on_hold"], unit),
            }
        )
    columns = [
        "Rank",
        "Nominator",
        f"Value ({unit})",
        "Effective shares",
        "Share of the pool",
        f"Principal held ({unit})",
    ]
    return pl.DataFrame(rows, schema=dict.fromkeys(columns, pl.String))


def holders_table_html(table: pl.DataFrame) -> str:
    """`holders_table` as an HTML table, each nominator a link to its view. An HTML table costs
    the browser next to nothing; st.dataframe's grid loads and draws a canvas grid, about as
    much as a chart, for at most 50 rows. Every text is escaped; numbers are right-aligned."""
    cells = []
    for row in table.iter_rows(named=True):
        tds = []
        for name, text in row.items():
            if name == "Nominator":
                link = html.escape(text)
                shown = html.escape(text.split("address=", 1)[-1])
                tds.append(f'<td><a href="{link}" target="_self">{shown}</a></td>')
            else:
                align = "left" if name == "Rank" else "right"
                tds.append(f'<td style="text-align:{align}">{html.escape(text)}</td>')
        cells.append("<tr>" + "".join(tds) + "</tr>")
    head = "".join(f"<th>{html.escape(name)}</th>" for name in table.columns)
    return (
        '<table class="sp-holders" style="font-size:0.85rem;border-collapse:collapse">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(cells)}</tbody></table>"
    )


def concentration_text(holders: Holders) -> str:
    share = fraction_text(holders.top_share_perq, 2)
    if holders.count == 1:
        if holders.top_share_perq is None:  # its shares are all withdrawn or not yet converted
            return f"1 nominator at epoch {holders.epoch:,}, with no effective shares"
        return f"1 nominator at epoch {holders.epoch:,}, holding {share} of the effective shares"
    return (
        f"{holders.count:,} nominators at epoch {holders.epoch:,}; the "
        f"{min(holders.count, 10)} largest hold {share} of their effective shares"
    )
