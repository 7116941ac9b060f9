"""The operator table: every operator with its metadata, latest state, and 1/7/30-day yields.

One statement answers it: per operator, the latest price and the latest price at or before 1, 7
and 30 days earlier, each a backward index probe on the primary key (~4,000 probes for ~1,000
operators, not a scan of 3.5 M rows). Yield and APY are then formed from the exact prices by
`yields` (DOMAIN.md's definitions) and become floats only at the end. `largest_operators` is
the explorer's (and the timings') default choice of operators to show.
"""

from __future__ import annotations

import polars as pl
from psycopg import sql
from sqlalchemy.engine import Engine

from shareprice.chain.records import PERQ
from shareprice.queries import yields
from shareprice.queries.connection import connect, copy_frame
from shareprice.queries.epochs import epoch_rate
from shareprice.queries.frames import float_column
from shareprice.queries.request import Plan

OPERATOR_SCHEMA: dict[str, pl.DataType] = {
    "operator_id": pl.Int64(),
    "name": pl.String(),
    "color": pl.String(),
    "status": pl.String(),
    "nomination_tax": pl.Int64(),
    "first_seen_epoch": pl.Int64(),
    "last_seen_epoch": pl.Int64(),
    "is_active": pl.Boolean(),
    "latest_epoch": pl.Int64(),
    "share_price_perq": pl.Int128(),
    "stake": pl.Int128(),
    "shares": pl.Int128(),
    "rewards": pl.Int128(),
    **{
        name: dtype
        for days in yields.WINDOWS_DAYS
        for name, dtype in ((f"epoch_{days}d", pl.Int64()), (f"price_{days}d_perq", pl.Int128()))
    },
}


# Every known operator with its latest state and the price 1, 7 and 30 days before it (the latest
# price at or before that epoch). Each lateral is one backward index probe on the primary key, so
# ~1,000 operators cost ~4,000 probes, not a scan of 3.5 M rows.
_OPERATORS_SQL = sql.SQL("""
SELECT m.operator_id, m.name, m.color, m.status, m.nomination_tax, m.first_seen_epoch,
       m.last_seen_epoch, m.is_active::text AS is_active,
       latest.epoch AS latest_epoch, latest.share_price_perq,
       s.stake_raw AS stake, s.shares_raw AS shares, s.rewards_raw AS rewards,
       {window_columns}
FROM operators_metadata m
LEFT JOIN LATERAL (
    SELECT p.epoch, p.share_price_perq FROM operator_share_prices p
    WHERE p.operator_id = m.operator_id ORDER BY p.epoch DESC LIMIT 1
) AS latest ON true
LEFT JOIN operator_shares s ON s.operator_id = m.operator_id AND s.epoch = latest.epoch
{window_joins}
ORDER BY m.operator_id
""")
_WINDOW_JOIN = sql.SQL("""
LEFT JOIN LATERAL (
    SELECT p.epoch, p.share_price_perq FROM operator_share_prices p
    WHERE p.operator_id = m.operator_id AND p.epoch <= latest.epoch - {span}
    ORDER BY p.epoch DESC LIMIT 1
) AS {alias} ON true
""")


def operators_plan(rate: yields.EpochRate) -> Plan:
    columns, joins, params = [], [], {}
    for days in yields.WINDOWS_DAYS:
        alias = sql.Identifier(f"back_{days}d")
        span = f"span_{days}d"
        params[span] = rate.epochs_for_days(days)
        columns.append(
            sql.SQL("{alias}.epoch AS {epoch}, {alias}.share_price_perq AS {price}").format(
                alias=alias,
                epoch=sql.Identifier(f"epoch_{days}d"),
                price=sql.Identifier(f"price_{days}d_perq"),
            )
        )
        joins.append(_WINDOW_JOIN.format(span=sql.Placeholder(span), alias=alias))
    query = _OPERATORS_SQL.format(
        window_columns=sql.SQL(", ").join(columns), window_joins=sql.SQL("").join(joins)
    )
    return Plan("operators", query, params)


def operators(engine: Engine, rate: yields.EpochRate | None = None) -> pl.DataFrame:
    """Every operator with metadata, latest price/stake, and 1/7/30-day yield and APY."""
    rate = rate or epoch_rate(engine)
    with connect(engine) as conn:
        frame = copy_frame(conn, operators_plan(rate), OPERATOR_SCHEMA)
    return add_yields(frame, rate)


def largest_operators(operators_frame: pl.DataFrame, count: int) -> tuple[int, ...]:
    """The `count` largest operators by latest stake, active ones first (the default view)."""
    if operators_frame.height == 0:
        return ()
    ranked = operators_frame.filter(pl.col("stake").is_not_null()).sort(
        ["is_active", "stake", "operator_id"], descending=[True, True, False]
    )
    return tuple(ranked.head(count)["operator_id"].to_list())


def add_yields(frame: pl.DataFrame, rate: yields.EpochRate) -> pl.DataFrame:
    """yield_Nd / apy_Nd / span_Nd columns from the exact prices.

    span_Nd is the real span in days between the two prices: across a hole in the data the price
    "at or before N days ago" can be much older. When the span is off the window by more than
    yields.SPAN_TOLERANCE (20 %), yield and APY are None (n/a) instead of a mislabelled number;
    within it they are shown with their real span. None also where history is too short.
    """
    now = frame["share_price_perq"].to_list()
    latest = frame["latest_epoch"].to_list()
    columns = []
    for days in yields.WINDOWS_DAYS:
        then = frame[f"price_{days}d_perq"].to_list()
        then_epoch = frame[f"epoch_{days}d"].to_list()
        y_values: list[float | None] = []
        apy_values: list[float | None] = []
        spans: list[float | None] = []
        for p_now, p_then, e_now, e_then in zip(now, then, latest, then_epoch, strict=True):
            if p_now is None or p_then is None:
                y_values.append(None)
                apy_values.append(None)
                spans.append(None)
                continue
            span_days = (e_now - e_then) / rate.epochs_per_day
            spans.append(span_days)
            if not yields.span_fits(span_days, days):
                y_values.append(None)
                apy_values.append(None)
                continue
            y_values.append(yields.yield_float(p_now, p_then))
            apy_values.append(yields.apy(p_now, p_then, span_days))
        columns.append(pl.Series(f"yield_{days}d", y_values, dtype=pl.Float64))
        columns.append(pl.Series(f"apy_{days}d", apy_values, dtype=pl.Float64))
        columns.append(pl.Series(f"span_{days}d", spans, dtype=pl.Float64))
    perq = float(PERQ)
    return frame.with_columns(
        (float_column("share_price_perq") / perq).alias("share_price"),
        (float_column("stake") / perq).alias("stake_ai3"),
        *columns,
    )
