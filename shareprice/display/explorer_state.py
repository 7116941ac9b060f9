"""The explorer page's state: defaults, and a URL query string that round-trips it.

Pure functions (no streamlit), so every rule about what a shared link may contain is tested
directly. Anything in a query string is untrusted text: values are parsed into ints and known
names, checked against the data (known operator ids, the epoch range), and replaced by defaults
with a notice when they do not fit. Nothing from the URL ever reaches SQL except as a validated
int inside a `SeriesRequest`, and even those are bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import polars as pl

from shareprice.display.charts import MODES, SCALES, Mode, Scale, Unit
from shareprice.queries import DEFAULT_MAX_POINTS, SeriesRequest, largest_operators

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
_UNITS: dict[str, Unit] = {"ai3": "AI3", "shannons": "Shannons"}


@dataclass(frozen=True, slots=True)
class ExplorerState:
    operators: tuple[int, ...]
    preset: str = DEFAULT_PRESET  # a RANGE_PRESETS key, or CUSTOM (then epoch_from/epoch_to)
    epoch_from: int | None = None
    epoch_to: int | None = None
    mode: Mode = "absolute"
    scale: Scale = "linear"
    unit: Unit = "AI3"
    band: bool = True


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

    for key, allowed, field in (("mode", MODES, "mode"), ("scale", SCALES, "scale")):
        text = get(key)
        if text is None:
            continue
        if text.lower() in allowed:
            state = replace(state, **{field: text.lower()})
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
    band_text = get("band")
    if band_text is not None:
        if band_text in ("0", "1"):
            state = replace(state, band=band_text == "1")
        else:
            notices.append("The link's band value must be 0 or 1: showing the band.")
    if state.mode == "bps" and state.scale == "log":
        notices.append(
            "A log axis cannot show changes per epoch (they can be 0 or negative): using linear."
        )
        state = replace(state, scale="linear")
    return state, notices


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
    if state.scale != "linear":
        query["scale"] = state.scale
    if state.unit != "AI3":
        query["unit"] = state.unit.lower()
    if not state.band:
        query["band"] = "0"
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
        "ex_unit": state.unit,
        "ex_band": state.band,
    }


def state_from_widgets(values: Mapping[str, object]) -> ExplorerState:
    preset = values.get("ex_preset")
    lo, hi = values.get("ex_range") or (None, None)  # type: ignore[misc]
    mode = values.get("ex_mode") or "absolute"
    scale = values.get("ex_scale") or "linear"
    return ExplorerState(
        operators=tuple(int(o) for o in values.get("ex_ops") or ()),  # type: ignore[union-attr]
        preset=str(preset) if preset is not None else CUSTOM,
        epoch_from=None if preset is not None else lo,
        epoch_to=None if preset is not None else hi,
        mode=mode,  # type: ignore[arg-type]
        scale="linear" if mode == "bps" else scale,  # type: ignore[arg-type]
        unit=values.get("ex_unit") or "AI3",  # type: ignore[arg-type]
        band=bool(values.get("ex_band", True)),
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
    state: ExplorerState, series: pl.DataFrame, lo: int, hi: int, *, dates_known: bool
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
        }
        for days in (1, 7, 30):
            row[f"{days}d yield"] = _percent(op[f"yield_{days}d"])
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
