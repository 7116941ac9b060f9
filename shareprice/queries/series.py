"""The v2 series: one operator's (or many operators') share prices from the normalized tables.

`series_v2` reads `operator_share_prices` joined to `operator_shares` and, when the request sets
`max_points`, reduces each operator's rows in SQL before anything leaves the server: equal runs
of epochs ("buckets"), keeping in each the first and last row, the lowest and highest price and
the largest drop and jump per epoch. Nothing is averaged or interpolated, every row drawn is a
real (operator, epoch) row, and a hole in the data stays a hole.

`downsample_rows` and `change_key` are the same reduction in Python, for the v1 baseline
(`baseline_v1`), which must return the very same frame; `finish_series` adds the float drawing
columns both paths share.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from psycopg import sql
from sqlalchemy.engine import Engine

from shareprice.chain.records import PERQ
from shareprice.queries.connection import connect, copy_frame
from shareprice.queries.frames import float_column, hole_aware_buckets
from shareprice.queries.request import (
    LATEST_NORMALIZED_SQL,
    POINTS_PER_BUCKET,
    Plan,
    SeriesRequest,
    Window,
    filters,
    resolve_window,
)

#: Change per epoch is ordered by trunc((price - prev) * CHANGE_KEY_SCALE / (prev * gap)): an
#: exact integer both in SQL (div() truncates toward zero) and in Python, so v1 and v2 pick the
#: same extremes. 1e18 resolves relative changes of 1e-18.
CHANGE_KEY_SCALE = 10**18

SERIES_EXACT_SCHEMA: dict[str, pl.DataType] = {
    "operator_id": pl.Int64(),
    "epoch": pl.Int64(),
    "share_price_perq": pl.Int128(),
    "stake": pl.Int128(),
    "shares": pl.Int128(),
    "rewards": pl.Int128(),
    # The operator's previous epoch in the data (inside the request's window) and its price:
    # the change per epoch is (price - prev) / prev / (epoch - prev_epoch).
    "prev_epoch": pl.Int64(),
    "prev_share_price_perq": pl.Int128(),
}
SERIES_FLOAT_COLUMNS = ("share_price", "stake_ai3", "rewards_ai3", "change_bps")


# One row per (operator, epoch): the price with the stake state behind it, and the operator's
# previous epoch and price inside the window (for the change per epoch). LEFT JOIN: a price
# without a shares row still shows (stake NULL) rather than vanishing.
_SERIES_ROWS = sql.SQL("""
SELECT p.operator_id, p.epoch, p.share_price_perq,
       s.stake_raw AS stake, s.shares_raw AS shares, s.rewards_raw AS rewards{previous}
FROM operator_share_prices p
LEFT JOIN operator_shares s
       ON s.operator_id = p.operator_id AND s.epoch = p.epoch AND {shares_filter}
WHERE {prices_filter}
""")
# The previous row's epoch and price, for the change per epoch. Downsampling needs them in SQL
# (the change's extremes are kept); a full-resolution read adds them in polars instead
# (`_with_previous_columns`), which saves the server a window pass (~25 % of the query).
_PREVIOUS_IN_SQL = sql.SQL(""",
       lag(p.epoch) OVER by_operator AS prev_epoch,
       lag(p.share_price_perq) OVER by_operator AS prev_share_price_perq""")
_BY_OPERATOR = sql.SQL(" WINDOW by_operator AS (PARTITION BY p.operator_id ORDER BY p.epoch)")

# Downsampling, per operator: number the rows by epoch (r, of n), split them into `buckets`
# equal runs, and keep in each run the first and last row, the rows with the lowest and highest
# price, and the rows with the lowest and highest change per epoch (ties: the earliest epoch).
# An operator with at most max_points rows keeps all of them (each row its own bucket). Nothing
# is averaged or interpolated: every row returned is a real (operator, epoch) row.
# A bucket never bridges a hole: `segment` counts the holes (a previous row more than one epoch
# back) up to each row, and buckets are split by segment, so the last row before a hole and the
# first row after it are both kept and a chart can break its line exactly there. Each hole can
# add a bucket, so an operator with h holes gets max(1, buckets - h) equal runs: still at most
# max_points rows while h < buckets, and 6 per segment beyond that (a hole is never hidden).
_SERIES_DOWNSAMPLED = sql.SQL("""
WITH numbered AS (
    SELECT rows.*,
           row_number() OVER by_epoch - 1 AS r,
           count(*) OVER by_operator AS n,
           sum(CASE WHEN epoch - prev_epoch > 1 THEN 1 ELSE 0 END) OVER by_operator AS holes,
           sum(CASE WHEN epoch - prev_epoch > 1 THEN 1 ELSE 0 END) OVER by_epoch AS segment
    FROM ({rows}) AS rows
    WINDOW by_epoch AS (PARTITION BY operator_id ORDER BY epoch),
           by_operator AS (PARTITION BY operator_id)
), keyed AS (
    SELECT numbered.*,
           CASE WHEN n <= %(max_points)s THEN r
                ELSE r * greatest(1, %(buckets)s - holes) / n END AS bucket,
           CASE WHEN prev_share_price_perq IS NOT NULL THEN
               div((share_price_perq - prev_share_price_perq) * {scale},
                   prev_share_price_perq * (epoch - prev_epoch))
           END AS change_key
    FROM numbered
), marked AS (
    SELECT keyed.*,
           min(r) OVER bucket_rows AS first_r,
           max(r) OVER bucket_rows AS last_r,
           first_value(r) OVER (bucket_rows ORDER BY share_price_perq, epoch) AS low_r,
           first_value(r) OVER (bucket_rows ORDER BY share_price_perq DESC, epoch) AS high_r,
           first_value(r) OVER (bucket_rows ORDER BY change_key NULLS LAST, epoch) AS drop_r,
           first_value(r) OVER (bucket_rows ORDER BY change_key DESC NULLS LAST, epoch) AS jump_r
    FROM keyed
    WINDOW bucket_rows AS (PARTITION BY operator_id, segment, bucket)
)
SELECT operator_id, epoch, share_price_perq, stake, shares, rewards, prev_epoch,
       prev_share_price_perq
FROM marked
WHERE r IN (first_r, last_r, low_r, high_r, drop_r, jump_r)
""")


def buckets_for(max_points: int) -> int:
    return max_points // POINTS_PER_BUCKET


def series_plan(request: SeriesRequest, window: Window) -> Plan:
    prices_filter, params = filters(request.operators, window, "p")
    shares_filter, _ = filters(request.operators, window, "s")
    if request.max_points is None:
        rows = _SERIES_ROWS.format(
            previous=sql.SQL(""), prices_filter=prices_filter, shares_filter=shares_filter
        )
        query = sql.SQL("{} ORDER BY p.operator_id, p.epoch").format(rows)
        return Plan("series_v2", query, params)
    rows = sql.SQL("{}{}").format(
        _SERIES_ROWS.format(
            previous=_PREVIOUS_IN_SQL, prices_filter=prices_filter, shares_filter=shares_filter
        ),
        _BY_OPERATOR,
    )
    query = sql.SQL("{} ORDER BY operator_id, epoch").format(
        _SERIES_DOWNSAMPLED.format(rows=rows, scale=sql.Literal(CHANGE_KEY_SCALE))
    )
    params = {
        **params,
        "max_points": request.max_points,
        "buckets": buckets_for(request.max_points),
    }
    return Plan("series_v2", query, params)


_FULL_RESOLUTION_SCHEMA = {
    name: dtype for name, dtype in SERIES_EXACT_SCHEMA.items() if not name.startswith("prev_")
}


def _with_previous_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """prev_epoch / prev_share_price_perq of rows sorted by (operator, epoch), as SQL's lag()."""
    return frame.with_columns(
        pl.col("epoch").shift(1).over("operator_id").alias("prev_epoch"),
        pl.col("share_price_perq").shift(1).over("operator_id").alias("prev_share_price_perq"),
    )


def resolve_window_v2(engine: Engine, request: SeriesRequest) -> Window:
    with connect(engine) as conn:
        return resolve_window(conn, request, LATEST_NORMALIZED_SQL)


def series_v2(engine: Engine, request: SeriesRequest) -> pl.DataFrame:
    """The request's series from the normalized tables, reduced in SQL when max_points is set."""
    with connect(engine) as conn:
        window = resolve_window(conn, request, LATEST_NORMALIZED_SQL)
        if window.empty:
            return finish_series(empty_series())
        plan = series_plan(request, window)
        if request.max_points is not None:
            frame = copy_frame(conn, plan, SERIES_EXACT_SCHEMA)
        else:
            frame = _with_previous_columns(copy_frame(conn, plan, _FULL_RESOLUTION_SCHEMA))
    return finish_series(frame)


def change_key(
    price: int, prev_price: int | None, epoch: int, prev_epoch: int | None
) -> int | None:
    """trunc((price - prev) * CHANGE_KEY_SCALE / (prev * gap)), as SQL's div() computes it."""
    if prev_price is None or prev_epoch is None:
        return None
    numerator = (price - prev_price) * CHANGE_KEY_SCALE
    denominator = prev_price * (epoch - prev_epoch)
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


def _after_hole(row: tuple) -> bool:
    return row[6] is not None and row[1] - row[6] > 1


def downsample_rows(rows: Sequence[tuple], max_points: int) -> list[tuple]:
    """The SQL downsampling, in Python, for one operator's rows (sorted by epoch).

    Row layout: (operator_id, epoch, price, stake, shares, rewards, prev_epoch, prev_price).
    A bucket ends early where a hole starts (a row whose previous row is more than one epoch
    back), as the SQL splits buckets by segment.
    """
    n = len(rows)
    if n <= max_points:
        return list(rows)
    keep: set[int] = set()
    after_hole = [_after_hole(row) for row in rows]
    for start, end in hole_aware_buckets(n, buckets_for(max_points), after_hole):
        members = range(start, end)
        keys = {r: change_key(rows[r][2], rows[r][7], rows[r][1], rows[r][6]) for r in members}
        keep.add(start)
        keep.add(end - 1)
        keep.add(min(members, key=lambda r: (rows[r][2], rows[r][1])))
        keep.add(min(members, key=lambda r: (-rows[r][2], rows[r][1])))
        keep.add(min(members, key=lambda r: (keys[r] is None, keys[r] or 0, rows[r][1])))
        keep.add(min(members, key=lambda r: (keys[r] is None, -(keys[r] or 0), rows[r][1])))
    return [rows[r] for r in sorted(keep)]


def empty_series() -> pl.DataFrame:
    return pl.DataFrame(schema=SERIES_EXACT_SCHEMA)


def finish_series(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the drawing columns (floats) computed from the exact ones; v1 and v2 share this."""
    perq = float(PERQ)
    return frame.with_columns(
        (float_column("share_price_perq") / perq).alias("share_price"),
        (float_column("stake") / perq).alias("stake_ai3"),
        (float_column("rewards") / perq).alias("rewards_ai3"),
        (
            (pl.col("share_price_perq") - pl.col("prev_share_price_perq")).cast(pl.Float64)
            / float_column("prev_share_price_perq")
            / (pl.col("epoch") - pl.col("prev_epoch")).cast(pl.Float64)
            * 10_000.0
        ).alias("change_bps"),
    )
