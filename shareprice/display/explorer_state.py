"""The explorer page's state: defaults, and a URL query string that round-trips it.

Pure functions (no streamlit), so every rule about what a shared link may contain is tested
directly. Anything in a query string is untrusted text: values are parsed into ints and known
names, checked against the data (known operator ids, the epoch range), and replaced by defaults
with a notice when they do not fit. Nothing from the URL ever reaches SQL except as a validated
int inside a `SeriesRequest`, and even those are bound parameters.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import polars as pl

from shareprice.display.charts import (
    BAND_MIN_OPERATORS,
    DEFAULT_SCALES,
    MODES,
    SCALES,
    Mode,
    Scale,
    Unit,
)
from shareprice.queries import DEFAULT_MAX_POINTS, DomainSummary, SeriesRequest, largest_operators

RANGE_PRESETS: dict[str, int | None] = {"50": 50, "100": 100, "200": 200, "1000": 1000, "all": None}
PRESET_LABELS = {"50": "50", "100": "100", "200": "200", "1000": "1000", "all": "All"}
CUSTOM = "custom"
DEFAULT_PRESET = "all"
DEFAULT_OPERATOR_COUNT = 8
#: More lines than this stop being readable; the band covers "all of them".
MAX_SELECTED = 24
#: Session keys of the explorer's widgets that other pages read (the timings page prefills its
#: custom shape with them): the selected operator ids and the (first, last) epoch range.
SESSION_OPERATORS = "ex_ops"
SESSION_RANGE = "ex_range"
_MAX_PARAM_LENGTH = 2000
#: Live mode polls the data version this often (seconds).
LIVE_POLL_SECONDS = 2
_UNITS: dict[str, Unit] = {"ai3": "AI3", "shannons": "Shannons"}
#: Axis words a link may use; "linear" is what links made before Auto/Fit/Log said.
_SCALE_WORDS: dict[str, Scale] = {**{k: k for k in SCALES}, "linear": "auto"}


@dataclass(frozen=True, slots=True)
class ExplorerState:
    operators: tuple[int, ...]
    preset: str = DEFAULT_PRESET  # a RANGE_PRESETS key, or CUSTOM (then epoch_from/epoch_to)
    epoch_from: int | None = None
    epoch_to: int | None = None
    mode: Mode = "absolute"
    scale: Scale = DEFAULT_SCALES["price"]  # the price row's axis
    unit: Unit = "AI3"
    band: bool = True
    stake_scale: Scale = DEFAULT_SCALES["stake"]
    rewards_scale: Scale = DEFAULT_SCALES["rewards"]
    totals: bool = False
    live: bool = True


def default_operators(
    operators: pl.DataFrame, count: int = DEFAULT_OPERATOR_COUNT
) -> tuple[int, ...]:
    """The largest active operators by stake (then any operator with a price), up to `count`."""
    return tuple(sorted(largest_operators(operators, count)))


def _one(params: Mapping[str, object], key: str) -> str | None:
    value = params.get(key)
    if isinstance(value, list | tuple):
        value = value[-1] if value else None
    if value is None:
        return None
    return str(value).strip()


def _parse_int(text: str) -> int | None:
    if not text or len(text) > 12 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def parse_operator_ids(text: str, known: Iterable[int]) -> tuple[tuple[int, ...], list[str]]:
    """Comma-separated ids: keep the known ones (in order, no repeats), report the rest."""
    known_set = set(known)
    chosen: list[int] = []
    bad: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        value = _parse_int(part)
        if value is None or value not in known_set:
            bad.append(part[:20])
        elif value not in chosen:
            chosen.append(value)
    notices = []
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5]) + (" …" if len(bad) > 5 else "")
        notices.append(f"Ignored unknown operator ids in the link: {shown}.")
    if len(chosen) > MAX_SELECTED:
        notices.append(
            f"The link selects {len(chosen)} operators; showing the first {MAX_SELECTED}."
        )
        chosen = chosen[:MAX_SELECTED]
    return tuple(chosen), notices


def state_from_query(
    params: Mapping[str, object],
    *,
    known_operators: Iterable[int],
    default_ops: tuple[int, ...],
    first_epoch: int,
    last_epoch: int,
) -> tuple[ExplorerState, list[str]]:
    """The state a link describes, every value validated; notices say what was replaced."""
    notices: list[str] = []
    too_long = [k for k in params if len(_one(params, k) or "") > _MAX_PARAM_LENGTH]
    if too_long:
        notices.append(f"Ignored over-long link parameters: {', '.join(sorted(too_long))}.")

    def get(key: str) -> str | None:
        return None if key in too_long else _one(params, key)

    state = ExplorerState(operators=default_ops)
    ops_text = get("ops")
    if ops_text is not None:
        chosen, op_notices = parse_operator_ids(ops_text, known_operators)
        notices += op_notices
        if chosen:
            state = replace(state, operators=chosen)
        elif ops_text:
            notices.append("No known operator in the link: showing the default selection.")
        else:
            state = replace(state, operators=())

    range_text, from_text, to_text = get("range"), get("from"), get("to")
    if range_text is not None and range_text.lower() in RANGE_PRESETS:
        state = replace(state, preset=range_text.lower())
    elif from_text is not None or to_text is not None or range_text is not None:
        lo = _parse_int(from_text or "") if from_text is not None else first_epoch
        hi = _parse_int(to_text or "") if to_text is not None else last_epoch
        if (
            range_text not in (None, CUSTOM)
            or lo is None
            or hi is None
            or not first_epoch <= lo <= hi <= last_epoch
        ):
            notices.append(
                f"The link's epoch range is not valid here (epochs {first_epoch}–{last_epoch}): "
                "showing all epochs."
            )
        else:
            state = replace(state, preset=CUSTOM, epoch_from=lo, epoch_to=hi)

    for key, allowed, field in (
        ("mode", MODES, "mode"),
        ("scale", _SCALE_WORDS, "scale"),
        ("stake_scale", _SCALE_WORDS, "stake_scale"),
        ("rewards_scale", _SCALE_WORDS, "rewards_scale"),
    ):
        text = get(key)
        if text is None:
            continue
        if text.lower() in allowed:
            if allowed is _SCALE_WORDS:
                state = _with(state, field, _SCALE_WORDS[text.lower()])
                continue
            state = _with(state, field, text.lower())
        else:
            notices.append(
                f"Unknown {key} {text[:20]!r} in the link: using {getattr(state, field)}."
            )
    unit_text = get("unit")
    if unit_text is not None:
        if unit_text.lower() in _UNITS:
            state = replace(state, unit=_UNITS[unit_text.lower()])
        else:
            notices.append(f"Unknown unit {unit_text[:20]!r} in the link: using AI3.")
    for key, default in (("band", True), ("totals", False), ("live", True)):
        text = get(key)
        if text is None:
            continue
        if text in ("0", "1"):
            state = _with(state, key, text == "1")
        else:
            notices.append(
                f"The link's {key} value must be 0 or 1: using {'1' if default else '0'}."
            )
    if state.mode == "bps" and state.scale == "log":
        notices.append(
            "A log axis cannot show changes per epoch (they can be 0 or negative): using fit."
        )
        state = replace(state, scale="fit")
    return state, notices


def _with(state: ExplorerState, field: str, value: object) -> ExplorerState:
    """`replace` by field name (the names come from the fixed tables above, never the URL)."""
    changes: dict[str, Any] = {field: value}
    return replace(state, **changes)


def to_query(state: ExplorerState) -> dict[str, str]:
    """The query string of a state (only what differs from the defaults, except operators)."""
    query = {"ops": ",".join(str(o) for o in state.operators)}
    if state.preset == CUSTOM and state.epoch_from is not None and state.epoch_to is not None:
        query["from"] = str(state.epoch_from)
        query["to"] = str(state.epoch_to)
    elif state.preset != DEFAULT_PRESET:
        query["range"] = state.preset
    if state.mode != "absolute":
        query["mode"] = state.mode
    if state.scale != DEFAULT_SCALES["price"]:
        query["scale"] = state.scale
    if state.stake_scale != DEFAULT_SCALES["stake"]:
        query["stake_scale"] = state.stake_scale
    if state.rewards_scale != DEFAULT_SCALES["rewards"]:
        query["rewards_scale"] = state.rewards_scale
    if state.unit != "AI3":
        query["unit"] = state.unit.lower()
    if not state.band:
        query["band"] = "0"
    if state.totals:
        query["totals"] = "1"
    if not state.live:
        query["live"] = "0"
    return query


def request_for(state: ExplorerState, max_points: int | None = DEFAULT_MAX_POINTS) -> SeriesRequest:
    if state.preset == CUSTOM:
        return SeriesRequest(
            operators=state.operators,
            epoch_from=state.epoch_from,
            epoch_to=state.epoch_to,
            max_points=max_points,
        )
    return SeriesRequest(
        operators=state.operators, last_epochs=RANGE_PRESETS[state.preset], max_points=max_points
    )


def preset_window(preset: str, first_epoch: int, last_epoch: int) -> tuple[int, int]:
    """The epochs a preset covers in data spanning first_epoch..last_epoch (for the slider)."""
    count = RANGE_PRESETS.get(preset)
    if count is None:
        return first_epoch, last_epoch
    return max(first_epoch, last_epoch - count + 1), last_epoch


def window_for(state: ExplorerState, first_epoch: int, last_epoch: int) -> tuple[int, int]:
    if state.preset == CUSTOM and state.epoch_from is not None and state.epoch_to is not None:
        return state.epoch_from, state.epoch_to
    return preset_window(state.preset, first_epoch, last_epoch)


def band_request(state: ExplorerState) -> SeriesRequest:
    """The band covers every operator over the state's epochs (operators do not matter)."""
    return replace(request_for(state), operators=None)


# --- widgets <-> state ----------------------------------------------------------------------------


def widget_values(state: ExplorerState, first_epoch: int, last_epoch: int) -> dict[str, object]:
    """Session-state values of the page's widgets for a state (seeded from a link)."""
    return {
        "ex_ops": list(state.operators),
        "ex_status": [],
        "ex_preset": None if state.preset == CUSTOM else state.preset,
        "ex_range": window_for(state, first_epoch, last_epoch),
        "ex_mode": state.mode,
        "ex_scale": state.scale,
        "ex_stake_scale": state.stake_scale,
        "ex_rewards_scale": state.rewards_scale,
        "ex_unit": state.unit,
        "ex_band": state.band,
        "ex_totals": state.totals,
        "ex_live": state.live,
    }


def _ids(value: object) -> tuple[int, ...]:
    return tuple(int(o) for o in value) if isinstance(value, list | tuple) else ()


#: Widgets the explorer draws only while "Axes, unit, band, totals, live" is open. A widget that
#: is not drawn loses its value at the end of the run, so the page writes these back each run.
MORE_DISPLAY_KEYS = (
    "ex_scale",
    "ex_stake_scale",
    "ex_rewards_scale",
    "ex_unit",
    "ex_band",
    "ex_totals",
    "ex_live",
)


def state_from_widgets(values: Mapping[str, Any]) -> ExplorerState:
    preset = values.get("ex_preset")
    window = values.get("ex_range")
    lo, hi = window if isinstance(window, tuple | list) and len(window) == 2 else (None, None)
    mode = values.get("ex_mode") or "absolute"
    scale = values.get("ex_scale") or DEFAULT_SCALES["price"]
    return ExplorerState(
        operators=_ids(values.get("ex_ops")),
        preset=str(preset) if preset is not None else CUSTOM,
        epoch_from=None if preset is not None else lo,
        epoch_to=None if preset is not None else hi,
        mode=mode,  # type: ignore[arg-type]
        scale="fit" if mode == "bps" and scale == "log" else scale,
        unit=values.get("ex_unit") or "AI3",
        band=bool(values.get("ex_band", True)),
        stake_scale=values.get("ex_stake_scale") or DEFAULT_SCALES["stake"],
        rewards_scale=values.get("ex_rewards_scale") or DEFAULT_SCALES["rewards"],
        totals=bool(values.get("ex_totals", False)),
        live=bool(values.get("ex_live", True)),
    )


# --- operator picker --------------------------------------------------------------------------


def operator_labels(operators: pl.DataFrame) -> dict[int, str]:
    """id -> "#12 · name · status": what the picker shows and searches (by id or name)."""
    return {
        row["operator_id"]: f"#{row['operator_id']} · {row['name']} · {row['status'] or 'unknown'}"
        for row in operators.select("operator_id", "name", "status").iter_rows(named=True)
    }


def statuses(operators: pl.DataFrame) -> list[str]:
    return sorted({s or "unknown" for s in operators["status"].to_list()})


def operator_options(
    operators: pl.DataFrame, wanted_statuses: Iterable[str], selected: Iterable[int]
) -> list[int]:
    """Operators with one of the statuses (all when none given), largest stake first, plus
    whatever is selected (a selection never disappears because of the filter)."""
    wanted = set(wanted_statuses)
    frame = operators
    if wanted:
        frame = frame.filter(pl.col("status").fill_null("unknown").is_in(list(wanted)))
    ordered = frame.sort(["stake", "operator_id"], descending=[True, False], nulls_last=True)[
        "operator_id"
    ].to_list()
    chosen = [o for o in selected if o not in set(ordered)]
    return chosen + ordered


# --- texts and tables -------------------------------------------------------------------------


def describe(
    state: ExplorerState,
    series: pl.DataFrame,
    lo: int,
    hi: int,
    *,
    dates_known: bool,
    holes: Iterable[tuple[int, int]] = (),
) -> str:
    shown_ops = series["operator_id"].n_unique() if series.height else 0
    missing = len(state.operators) - shown_ops
    parts = [
        f"{len(state.operators)} operator{'s' if len(state.operators) != 1 else ''}",
        f"epochs {lo:,}–{hi:,}",
        f"{series.height:,} points drawn (reduced on the server to at most "
        f"{DEFAULT_MAX_POINTS:,} per operator, keeping every bucket's first, last, lowest and "
        "highest price and its largest changes; nothing interpolated)",
    ]
    if missing > 0:
        parts.append(f"{missing} selected operator(s) have no data in this range")
    holes = list(holes)
    if holes:
        missing_epochs = sum(after - before - 1 for before, after in holes)
        parts.append(f"{missing_epochs:,} epochs missing in {len(holes)} hole(s), drawn as gaps")
    parts.append(
        "hover dates from indexer timestamps" if dates_known else "dates unknown for these epochs"
    )
    return " · ".join(parts)


def operator_table(operators: pl.DataFrame, unit: Unit) -> pl.DataFrame:
    """The operators table: exact price as text next to the float, yields and APYs in percent."""
    from shareprice.queries import perq_to_decimal

    stake = (
        (pl.col("stake").cast(pl.Float64) / 1e18).alias("Stake (AI3)")
        if unit == "AI3"
        else pl.col("stake").cast(pl.String).alias("Stake (Shannons)")
    )
    percent = [
        (pl.col(f"{kind}_{days}d") * 100).alias(f"{days}d {label} %")
        for days in (1, 7, 30)
        for kind, label in (("yield", "yield"), ("apy", "APY"))
    ]
    return operators.sort(
        ["stake", "operator_id"], descending=[True, False], nulls_last=True
    ).select(
        pl.col("operator_id").alias("Id"),
        pl.col("name").alias("Name"),
        pl.col("status").alias("Status"),
        pl.col("nomination_tax").alias("Tax %"),
        pl.col("latest_epoch").alias("Latest epoch"),
        pl.col("share_price").alias("Share price"),
        pl.col("share_price_perq")
        .map_elements(perq_to_decimal, return_dtype=pl.String)
        .alias("Share price (exact)"),
        stake,
        *percent,
        pl.col("first_seen_epoch").alias("First seen"),
        pl.col("last_seen_epoch").alias("Last seen"),
        # the operator's nominators (pages/nominators.py), shown as a link by the page
        pl.format("nominators?operator={}", pl.col("operator_id")).alias("Nominators"),
    )


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.4g}%"


def operator_cards(operators: pl.DataFrame, unit: Unit) -> pl.DataFrame:
    """The selected operators as display text: full-precision price and exact Shannons as they
    are, floats only where a rounded number is what a reader wants (AI3 stake, percentages)."""
    from shareprice.queries import perq_to_decimal

    rows = []
    ordered = operators.sort(["stake", "operator_id"], descending=[True, False], nulls_last=True)
    for op in ordered.iter_rows(named=True):
        stake = op["stake"]
        if stake is None:
            stake_text = "–"
        elif unit == "AI3":
            stake_text = f"{stake / 10**18:,.4f}"
        else:
            stake_text = f"{stake:,}"
        row = {
            "Operator": f"#{op['operator_id']} {op['name']}",
            "Status": op["status"] or "unknown",
            "Tax": "–" if op["nomination_tax"] is None else f"{op['nomination_tax']}%",
            "Share price (exact)": perq_to_decimal(op["share_price_perq"]) or "–",
            f"Stake ({unit})": stake_text,
            f"Latest rewards ({unit})": format_amount(op["rewards"], unit),
        }
        for days in (1, 7, 30):
            row[f"{days}d yield"] = _yield_text(op, days)
            row[f"{days}d APY"] = _percent(op[f"apy_{days}d"])
        row["Latest epoch"] = "–" if op["latest_epoch"] is None else f"{op['latest_epoch']:,}"
        rows.append(row)
    return pl.DataFrame(rows, schema={k: pl.String for k in rows[0]} if rows else None)


def download_name(state: ExplorerState, lo: int, hi: int) -> str:
    return f"shareprice_epochs_{lo}-{hi}_{state.mode}_{state.unit.lower()}"


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    import io

    from shareprice.display.charts import to_parquet_safe

    buffer = io.BytesIO()
    to_parquet_safe(frame).write_parquet(buffer)
    return buffer.getvalue()


# --- the domain summary -----------------------------------------------------------------------


def format_amount(shannons: int | None, unit: Unit) -> str:
    """An exact amount as text: AI3 with 4 decimals (truncated, grouped), or whole Shannons."""
    if shannons is None:
        return "–"
    if unit == "Shannons":
        return f"{shannons:,}"
    whole, fraction = divmod(shannons, 10**18)
    return f"{whole:,}.{fraction // 10**14:04d}"


def format_amount_short(shannons: int | None, unit: Unit) -> str:
    """A metric-sized amount: whole AI3 from 1,000 on (4 decimals below), Shannons as x.xxxxeNN.
    The exact value goes in the metric's caption."""
    if shannons is None:
        return "–"
    if unit == "Shannons":
        return f"{shannons:.4e}" if shannons >= 10**9 else f"{shannons:,}"
    if shannons >= 1000 * 10**18:
        return f"{shannons // 10**18:,}"
    return format_amount(shannons, unit)


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} d"


def summary_metrics(
    summary: DomainSummary, unit: Unit, now: datetime
) -> list[tuple[str, str, str]]:
    """(label, value, help) of the summary row: latest epoch and its age, total stake with
    storage fees and their share, the latest epoch's total rewards, operators active."""
    if summary.updated_at is None:
        age = "age unknown"
    else:
        age = (
            f"{summary.updated_source} {format_age((now - summary.updated_at).total_seconds())} ago"
        )
    share = summary.fees_share
    fees_text = (
        "storage fees unknown (Format B data carries none)"
        if share is None
        else f"storage fees {format_amount(summary.total_storage_fees, unit)} {unit} "
        f"({share * 100:.2f}% of the total)"
    )
    fees_text = f"{format_amount(summary.stake_with_fees, unit)} {unit} · {fees_text}"
    rewards_text = (
        f"{format_amount(summary.total_rewards, unit)} {unit}: all operators' rewards of epoch "
        f"{summary.latest_epoch:,}"
    )
    return [
        ("Latest epoch", f"{summary.latest_epoch:,}", age),
        (f"Total stake ({unit})", format_amount_short(summary.stake_with_fees, unit), fees_text),
        (
            f"Rewards, latest epoch ({unit})",
            format_amount_short(summary.total_rewards, unit),
            rewards_text,
        ),
        (
            "Operators active",
            f"{summary.operators:,}",
            f"with a row in epoch {summary.latest_epoch:,}",
        ),
    ]


def summary_metrics_html(metrics: Iterable[tuple[str, str, str]]) -> str:
    """The summary row as one HTML block: per metric its label, its value in large type and its
    explanation (exact amounts, age) below, as st.metric plus a caption showed them. Four
    st.metric in four columns with four captions are twelve elements for the browser to lay
    out and style, which cost about as much as drawing the chart (measured in headless
    Chromium); one block costs next to nothing. Every text is escaped."""
    boxes = "".join(
        f'<div class="sp-metric" data-label="{html.escape(label)}" title="{html.escape(text)}"'
        ' style="flex:1 1 0;min-width:12rem">'
        f'<div class="sp-metric-label" style="font-size:0.875rem">{html.escape(label)}</div>'
        f'<div class="sp-metric-value" style="font-size:2.25rem;line-height:1.3">'
        f"{html.escape(value)}</div>"
        f'<div class="sp-metric-help" style="font-size:0.8rem;color:#6b7280">'
        f"{html.escape(text)}</div></div>"
        for label, value, text in metrics
    )
    return f'<div class="sp-summary" style="display:flex;gap:1rem;flex-wrap:wrap">{boxes}</div>'


def band_available(operator_count: int) -> bool:
    """The all-operators band means something from BAND_MIN_OPERATORS operators."""
    return operator_count >= BAND_MIN_OPERATORS


# --- operator cards ---------------------------------------------------------------------------


def shared_prefix(texts: Iterable[str]) -> str:
    """The leading characters every text shares (the digits of the price that do not differ)."""
    items = [t for t in texts if t]
    if not items:
        return ""
    first, last = min(items), max(items)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def operator_cards_html(operators: pl.DataFrame, unit: Unit) -> str:
    """The selected operators as cards: colour, exact price with the leading digits they all
    share greyed (what differs stands out), stake, latest rewards, yields with their real span.
    Every text from the database is HTML-escaped (names are free text)."""
    from shareprice.queries import perq_to_decimal

    ordered = operators.sort(["stake", "operator_id"], descending=[True, False], nulls_last=True)
    prices = {
        op["operator_id"]: perq_to_decimal(op["share_price_perq"]) or ""
        for op in ordered.iter_rows(named=True)
    }
    prefix = shared_prefix(prices.values()) if len(prices) > 1 else ""
    cards = []
    for op in ordered.iter_rows(named=True):
        price = prices[op["operator_id"]]
        price_html = (
            f'<span style="color:#9ca3af">{html.escape(price[: len(prefix)])}</span>'
            f"<b>{html.escape(price[len(prefix) :])}</b>"
            if price
            else "–"
        )
        yields_html = " · ".join(f"{days}d {_yield_text(op, days)}" for days in (1, 7, 30))
        color = op["color"] if _is_hex_color(op["color"]) else "#64748b"
        cards.append(
            f'<div class="sp-card" style="border-left:6px solid {color};padding:4px 10px;'
            'margin:0 0 6px 0;font-size:0.9rem">'
            f"<b>#{op['operator_id']} {html.escape(str(op['name']))}</b> "
            f'<span style="color:#6b7280">{html.escape(op["status"] or "unknown")}</span> '
            f'<a href="nominators?operator={int(op["operator_id"])}" target="_self">'
            "nominators</a><br>"
            f"price <code>{price_html}</code> · stake {format_amount(op['stake'], unit)} {unit}"
            f" · latest rewards {format_amount(op['rewards'], unit)} {unit}<br>"
            f'<span style="color:#374151">{yields_html}</span></div>'
        )
    return "".join(cards)


def _is_hex_color(text: object) -> bool:
    return (
        isinstance(text, str)
        and len(text) == 7
        and text[0] == "#"
        and all(c in "0123456789abcdefABCDEF" for c in text[1:])
    )


def _yield_text(op: Mapping[str, object], days: int) -> str:
    """The yield with its real span ("0.0012% over 1.02 d"), or n/a and why."""
    value = op.get(f"yield_{days}d")
    span = op.get(f"span_{days}d")
    if value is None:
        if isinstance(span, float):
            return f"n/a (nearest price is {span:.2f} d back)"
        return "n/a"
    assert isinstance(value, float)
    span_text = f" over {span:.2f} d" if isinstance(span, float) else ""
    return f"{value * 100:.4g}%{span_text}"


# --- the wide CSV -----------------------------------------------------------------------------


def wide_frame(series: pl.DataFrame, totals: pl.DataFrame, blocks: pl.DataFrame) -> pl.DataFrame:
    """One row per epoch the chart shows: epoch,startBlock,endBlock,totalStake,stake<k>...,
    rewards<k>..., raw Shannons as exact integers (the old dashboard's epochs_raw CSV). Only
    epochs that have data appear (no invented rows); an operator without a row there is empty."""
    epochs = series.select("epoch").unique().sort("epoch")
    ops = sorted(series["operator_id"].unique().to_list()) if series.height else []
    wide = epochs.join(
        blocks.select(
            "epoch",
            pl.col("start_block").alias("startBlock"),
            pl.col("end_block").alias("endBlock"),
        ),
        on="epoch",
        how="left",
    ).join(
        totals.select("epoch", pl.col("total_stake").alias("totalStake")), on="epoch", how="left"
    )
    for kind in ("stake", "rewards"):
        for op in ops:
            part = series.filter(pl.col("operator_id") == op).select(
                "epoch", pl.col(kind).alias(f"{kind}{op}")
            )
            wide = wide.join(part, on="epoch", how="left")
    return wide.sort("epoch")


def wide_csv_name(latest_epoch: int) -> str:
    return f"epochs_raw_e{latest_epoch}.csv"
