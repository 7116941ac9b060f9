"""The all-operators band: percentiles of every operator's price per epoch, for the overview.

Drawing 900 operators' traces is unreadable and slow; the 5/25/50/75/95th percentiles per epoch
say the same at a glance. `percentile_disc` picks real prices (exact NUMERIC), never an
interpolated value. v2 reads the band stored per epoch by sql/020 (kept by triggers on the
backfill's epoch marks) and recomputes live only the epochs whose stored band is missing or
stale, so the answer is never stale; `live=True` recomputes all of it (the benchmark's
comparison). With `max_points` the band's epochs are reduced like a series, keeping the outer
envelope exact.

`percentile_disc` and `downsample_band_rows` are the same in Python, for the v1 baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl
import psycopg
from psycopg import sql
from sqlalchemy.engine import Engine

from shareprice.chain.records import PERQ
from shareprice.queries.connection import connect, copy_frame
from shareprice.queries.frames import float_column, hole_aware_buckets
from shareprice.queries.request import (
    LATEST_NORMALIZED_SQL,
    Plan,
    SeriesRequest,
    Window,
    filters,
    resolve_window,
)

#: The overview band: percentiles of all operators' prices per epoch (percentile_disc: always a
#: real price of some operator, never an interpolated value).
BAND_FRACTIONS = (0.05, 0.25, 0.5, 0.75, 0.95)
BAND_COLUMNS = ("p05", "p25", "p50", "p75", "p95")

BAND_EXACT_SCHEMA: dict[str, pl.DataType] = {
    "epoch": pl.Int64(),
    "operators": pl.Int64(),
    **{name: pl.Int128() for name in BAND_COLUMNS},
}


# Per epoch, the 5/25/50/75/95th percentile of every operator's price: what the overview draws
# instead of 900 traces. percentile_disc picks real prices (exact NUMERIC). This is the live
# computation: it sorts every price of the window (0.7-1.1 s for all ~3.5 M at seed scale).
_BAND_LIVE_SQL = sql.SQL("""
SELECT epoch, n AS operators, q[1] AS p05, q[2] AS p25, q[3] AS p50, q[4] AS p75, q[5] AS p95
FROM (
    SELECT epoch, count(*) AS n,
           percentile_disc(ARRAY[{fractions}]::float8[]) WITHIN GROUP (ORDER BY share_price_perq)
               AS q
    FROM operator_share_prices p
    WHERE {filter}
    GROUP BY epoch
) AS per_epoch
""")
# What v2 reads: the band stored per epoch by sql/020 (kept by triggers on the backfill's epoch
# marks), trusted only where its operator count equals the mark's; any other normalized epoch of
# the window (none, normally) is computed live right here, so the answer is never stale.
_BAND_SQL = sql.SQL("""
WITH marks AS (
    SELECT n.epoch, n.operator_count FROM epoch_normalizations n WHERE {marks_filter}
), stored AS (
    SELECT b.epoch, b.operators, b.p05, b.p25, b.p50, b.p75, b.p95
    FROM epoch_price_bands b
    JOIN marks m ON m.epoch = b.epoch AND m.operator_count = b.operators
), stale AS (
    SELECT m.epoch FROM marks m
    WHERE m.operator_count > 0 AND NOT EXISTS (SELECT 1 FROM stored s WHERE s.epoch = m.epoch)
), live AS (
    SELECT epoch, n AS operators, q[1] AS p05, q[2] AS p25, q[3] AS p50, q[4] AS p75, q[5] AS p95
    FROM (
        SELECT p.epoch, count(*) AS n,
               percentile_disc(ARRAY[{fractions}]::float8[])
                   WITHIN GROUP (ORDER BY p.share_price_perq) AS q
        FROM operator_share_prices p
        WHERE p.epoch BETWEEN (SELECT min(epoch) FROM stale) AND (SELECT max(epoch) FROM stale)
          AND p.epoch IN (SELECT epoch FROM stale)
        GROUP BY p.epoch
    ) AS per_epoch
)
SELECT * FROM stored
UNION ALL
SELECT * FROM live
""")
# With max_points, the band's epochs are reduced like an operator's series: equal runs of epochs,
# keeping each run's first and last epoch and the epochs of its lowest p5 and highest p95, so
# the band's outer envelope is exact and every value drawn is a real percentile of a real epoch.
# Runs never bridge a hole (an epoch more than one after the previous band epoch starts a new
# segment), so the epochs on both sides of every hole are kept and a chart can break there;
# h holes leave max(1, buckets - h) runs, so max_points still holds while h < buckets.
_BAND_DOWNSAMPLED = sql.SQL("""
WITH band AS ({band}), flagged AS (
    SELECT band.*,
           CASE WHEN epoch - lag(epoch) OVER (ORDER BY epoch) > 1 THEN 1 ELSE 0 END AS hole
    FROM band
), numbered AS (
    SELECT flagged.*, row_number() OVER (ORDER BY epoch) - 1 AS r, count(*) OVER () AS n,
           sum(hole) OVER (ORDER BY epoch) AS segment, sum(hole) OVER () AS holes
    FROM flagged
), keyed AS (
    SELECT numbered.*,
           CASE WHEN n <= %(max_points)s THEN r
                ELSE r * greatest(1, %(buckets)s - holes) / n END AS bucket
    FROM numbered
), marked AS (
    SELECT keyed.*,
           min(r) OVER bucket_rows AS first_r,
           max(r) OVER bucket_rows AS last_r,
           first_value(r) OVER (bucket_rows ORDER BY p05, epoch) AS low_r,
           first_value(r) OVER (bucket_rows ORDER BY p95 DESC, epoch) AS high_r
    FROM keyed
    WINDOW bucket_rows AS (PARTITION BY segment, bucket)
)
SELECT epoch, operators, p05, p25, p50, p75, p95 FROM marked
WHERE r IN (first_r, last_r, low_r, high_r)
""")
BAND_POINTS_PER_BUCKET = 4
_BAND_WORK_MEM = "256MB"


def band_plan(window: Window, max_points: int | None = None, *, live: bool = False) -> Plan:
    """The band's SQL: stored (what v2 reads) or `live` (recomputed from every price)."""
    fractions = sql.SQL(", ").join(sql.Literal(f) for f in BAND_FRACTIONS)
    if live:
        condition, params = filters(None, window, "p")
        band = _BAND_LIVE_SQL.format(fractions=fractions, filter=condition)
    else:
        condition, params = filters(None, window, "n")
        band = _BAND_SQL.format(fractions=fractions, marks_filter=condition)
    name = "band_live" if live else "band_v2"
    if max_points is None:
        return Plan(name, sql.SQL("{} ORDER BY epoch").format(band), params)
    query = sql.SQL("{} ORDER BY epoch").format(_BAND_DOWNSAMPLED.format(band=band))
    params = {
        **params,
        "max_points": max_points,
        "buckets": max_points // BAND_POINTS_PER_BUCKET,
    }
    return Plan(name, query, params)


def band_v2(engine: Engine, request: SeriesRequest, *, live: bool = False) -> pl.DataFrame:
    """Percentile band of all operators' prices per epoch over the request's epochs, at most
    max_points epochs (see _BAND_DOWNSAMPLED). The request's operators do not apply: the band
    is always every operator. `live` recomputes it from every price instead of reading the
    stored band (the benchmark's comparison; same result)."""
    with connect(engine) as conn:
        window = resolve_window(conn, request, LATEST_NORMALIZED_SQL)
        if window.empty:
            return finish_band(pl.DataFrame(schema=BAND_EXACT_SCHEMA))
        conn.execute("SELECT set_config('work_mem', %s, true)", (_BAND_WORK_MEM,))
        if not live and not _has_stored_bands(conn):
            live = True  # a database not yet migrated to sql/020: still right, only slower
        plan = band_plan(window, request.max_points, live=live)
        frame = copy_frame(conn, plan, BAND_EXACT_SCHEMA)
    return finish_band(frame)


def _has_stored_bands(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('epoch_price_bands') IS NOT NULL").fetchone()
    return bool(row and row[0])


def band_live(engine: Engine, request: SeriesRequest) -> pl.DataFrame:
    return band_v2(engine, request, live=True)


def downsample_band_rows(rows: Sequence[tuple], max_points: int) -> list[tuple]:
    """_BAND_DOWNSAMPLED in Python (v1). Rows: (epoch, operators, p05, p25, p50, p75, p95)."""
    n = len(rows)
    if n <= max_points:
        return list(rows)
    keep: set[int] = set()
    after_hole = [i > 0 and rows[i][0] - rows[i - 1][0] > 1 for i in range(n)]
    for start, end in hole_aware_buckets(n, max_points // BAND_POINTS_PER_BUCKET, after_hole):
        members = range(start, end)
        keep.update((start, end - 1))
        keep.add(min(members, key=lambda r: (rows[r][2], rows[r][0])))
        keep.add(min(members, key=lambda r: (-rows[r][6], rows[r][0])))
    return [rows[r] for r in sorted(keep)]


def percentile_disc(sorted_values: Sequence[int], fraction: float) -> int:
    """PostgreSQL's percentile_disc: the first value whose position reaches the fraction."""
    row = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[row - 1]


def finish_band(frame: pl.DataFrame) -> pl.DataFrame:
    perq = float(PERQ)
    return frame.with_columns(
        *((float_column(name) / perq).alias(f"{name}_price") for name in BAND_COLUMNS)
    )
