"""Domain-wide numbers: totals per epoch, the latest epoch's summary, and where the data has holes.

The explorer's summary row and its Totals lines are sums over every operator of an epoch, so they
are computed here in SQL over `operator_shares` (exact NUMERIC sums, never floats), and only for
the epochs asked for: the summary reads one epoch (a BRIN-pruned scan of ~1,000 rows at seed
scale), the Totals lines the shown window.

Holes: real histories are partial (the shared samples hold epochs 0-218, 2619 and 2647), so the
charts must know where epochs are missing. `epoch_holes` lists each run of missing normalized
epochs as (last epoch before, first epoch after); it reads `epoch_normalizations`, one small row
per epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import polars as pl
from psycopg import sql
from sqlalchemy.engine import Engine

from shareprice.queries.connection import connect, copy_frame, record
from shareprice.queries.request import Plan

TOTALS_SCHEMA: dict[str, pl.DataType] = {
    "epoch": pl.Int64(),
    "operators": pl.Int64(),
    "total_stake": pl.Int128(),
    "total_storage_fees": pl.Int128(),
    "total_rewards": pl.Int128(),
}

# Per epoch of the window: how many operators, and the exact sums of their stake, storage fee
# deposits and rewards (NULL when no operator of the epoch carries the value, e.g. Format B has
# no storage fees). The BRIN index on epoch prunes the scan to the window's blocks.
_TOTALS_SQL = sql.SQL("""
SELECT epoch, count(*) AS operators, sum(stake_raw) AS total_stake,
       sum(storage_fee_raw) AS total_storage_fees, sum(rewards_raw) AS total_rewards
FROM operator_shares
WHERE epoch BETWEEN %(lo)s AND %(hi)s
GROUP BY epoch
ORDER BY epoch
""")


# The same numbers from the table sql/040 keeps per epoch (3,734 small rows instead of summing
# ~3.5 M operator states: ~1 s at seed scale), trusted only where its operator count equals the
# epoch mark's (as the band and the API rows do); any other marked epoch is summed live here.
_STORED_TOTALS_SQL = sql.SQL("""
WITH marks AS (
    SELECT n.epoch, n.operator_count FROM epoch_normalizations n
    WHERE n.epoch BETWEEN %(lo)s AND %(hi)s AND n.operator_count > 0
), stored AS (
    SELECT t.epoch, t.operators::bigint AS operators, t.total_stake,
           t.total_storage_fee AS total_storage_fees, t.total_rewards
    FROM epoch_totals t JOIN marks m ON m.epoch = t.epoch AND m.operator_count = t.operators
), stale AS (
    SELECT m.epoch FROM marks m WHERE NOT EXISTS (SELECT 1 FROM stored s WHERE s.epoch = m.epoch)
), live AS (
    SELECT epoch, count(*) AS operators, sum(stake_raw) AS total_stake,
           sum(storage_fee_raw) AS total_storage_fees, sum(rewards_raw) AS total_rewards
    FROM operator_shares
    WHERE epoch BETWEEN (SELECT min(epoch) FROM stale) AND (SELECT max(epoch) FROM stale)
      AND epoch IN (SELECT epoch FROM stale)
    GROUP BY epoch
)
SELECT * FROM (SELECT * FROM stored UNION ALL SELECT * FROM live) AS totals ORDER BY epoch
""")


def totals_plan(lo: int, hi: int, *, stored: bool = False) -> Plan:
    query = _STORED_TOTALS_SQL if stored else _TOTALS_SQL
    return Plan("epoch_totals", query, {"lo": lo, "hi": hi})


def epoch_totals(engine: Engine, lo: int, hi: int) -> pl.DataFrame:
    """Per epoch in lo..hi: operators, total stake, storage fees and rewards (exact Shannons).
    Epochs without data have no row: a hole stays a hole. Reads the stored per-epoch totals
    (sql/040) where they are current, and sums operator_shares for the rest."""
    with connect(engine) as conn:
        row = conn.execute("SELECT to_regclass('epoch_totals') IS NOT NULL").fetchone()
        stored = bool(row and row[0])
        return copy_frame(conn, totals_plan(lo, hi, stored=stored), TOTALS_SCHEMA)


@dataclass(frozen=True, slots=True)
class DomainSummary:
    """The latest normalized epoch of the domain, and what every operator adds up to there."""

    latest_epoch: int
    #: When that epoch was indexed (Format A timestamp), else when it was normalized here.
    updated_at: datetime | None
    updated_source: str  # "indexed" or "normalized"
    operators: int
    total_stake: int
    total_storage_fees: int | None
    total_rewards: int | None

    @property
    def stake_with_fees(self) -> int:
        return self.total_stake + (self.total_storage_fees or 0)

    @property
    def fees_share(self) -> float | None:
        """Storage fees as a share of stake including them (None when unknown or no stake)."""
        if self.total_storage_fees is None or self.stake_with_fees == 0:
            return None
        return self.total_storage_fees / self.stake_with_fees


# The latest normalized epoch with its timestamps and sums: one index probe on each table's key
# plus a BRIN-pruned aggregate over that epoch's rows.
_DOMAIN_SUMMARY_SQL = """
WITH latest AS (
    SELECT n.epoch, n.normalized_at FROM epoch_normalizations n
    WHERE n.operator_count > 0 ORDER BY n.epoch DESC LIMIT 1
)
SELECT latest.epoch, e.indexed_at, latest.normalized_at,
       (SELECT count(*) FROM operator_shares s WHERE s.epoch = latest.epoch),
       (SELECT sum(stake_raw) FROM operator_shares s WHERE s.epoch = latest.epoch),
       (SELECT sum(storage_fee_raw) FROM operator_shares s WHERE s.epoch = latest.epoch),
       (SELECT sum(rewards_raw) FROM operator_shares s WHERE s.epoch = latest.epoch)
FROM latest LEFT JOIN epochs e ON e.epoch = latest.epoch
"""


def domain_summary(engine: Engine) -> DomainSummary | None:
    """The summary row's numbers, or None when nothing is normalized yet."""
    with connect(engine) as conn:
        row = conn.execute(_DOMAIN_SUMMARY_SQL).fetchone()
    if row is None:
        return None
    epoch, indexed_at, normalized_at, operators, stake, fees, rewards = row
    return DomainSummary(
        latest_epoch=int(epoch),
        updated_at=indexed_at or normalized_at,
        updated_source="indexed" if indexed_at is not None else "normalized",
        operators=int(operators),
        total_stake=int(stake or 0),
        total_storage_fees=None if fees is None else int(fees),
        total_rewards=None if rewards is None else int(rewards),
    )


# Runs of missing epochs between lo and hi: each normalized epoch (with operators) whose
# predecessor in the table is more than one epoch back.
_HOLES_SQL = """
SELECT prev, epoch FROM (
    SELECT epoch, lag(epoch) OVER (ORDER BY epoch) AS prev
    FROM epoch_normalizations
    WHERE operator_count > 0 AND epoch BETWEEN %(lo)s AND %(hi)s
) AS ordered
WHERE epoch - prev > 1
ORDER BY epoch
"""


def epoch_holes(engine: Engine, lo: int, hi: int) -> tuple[tuple[int, int], ...]:
    """(last epoch before, first epoch after) of every run of missing epochs inside lo..hi."""
    with connect(engine) as conn:
        started = time.perf_counter()
        rows = conn.execute(_HOLES_SQL, {"lo": lo, "hi": hi}).fetchall()
        record("epoch_holes", started, len(rows))
    return tuple((int(a), int(b)) for a, b in rows)


BLOCKS_SCHEMA: dict[str, pl.DataType] = {
    "epoch": pl.Int64(),
    "start_block": pl.Int64(),
    "end_block": pl.Int64(),
}

# Start and end block of each epoch in lo..hi. The start block is the previous epoch's end block
# plus one when the previous epoch is stored (the chain's epochs are contiguous: the samples'
# startBlock is always the last endBlock + 1); only an epoch after a hole, or the first one,
# reads `startBlock` from its document (which detoasts it: a few rows, never the window).
_BLOCKS_SQL = sql.SQL("""
SELECT e.epoch,
       CASE WHEN prev.end_block IS NOT NULL THEN prev.end_block + 1
            WHEN jsonb_typeof(e.data->'startBlock') = 'number'
                THEN (e.data->>'startBlock')::bigint
       END AS start_block,
       e.end_block
FROM epochs e
LEFT JOIN epochs prev ON prev.epoch = e.epoch - 1
WHERE e.epoch BETWEEN %(lo)s AND %(hi)s
ORDER BY e.epoch
""")


def epoch_blocks(engine: Engine, lo: int, hi: int) -> pl.DataFrame:
    """epoch, start_block, end_block (None where the data does not say) of epochs lo..hi."""
    with connect(engine) as conn:
        return copy_frame(
            conn, Plan("epoch_blocks", _BLOCKS_SQL, {"lo": lo, "hi": hi}), BLOCKS_SCHEMA
        )
