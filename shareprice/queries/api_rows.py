"""The old HTTP API's epoch rows, from the normalized tables, for `/api/epochs` and friends.

The system this replaces served its frontend one JSON object per epoch: block range, timestamp,
totals and three maps keyed by operator id (stake, rewards, stake-per-share price). The old
frontend still expects that shape, so `epoch_rows` builds exactly it, in PostgreSQL:
`json_build_object` over `NUMERIC::text` turns every amount into the decimal string of the exact
integer without a round trip through Python ints (240 k map entries for 64 operators over 3,734
epochs would cost more in conversion than the query). The caller gets one JSON text per epoch
and only joins them.

What the data lacks stays missing, never invented (the old API filled in 1e18 or a network-wide
ratio): `startBlock` is known only as the previous epoch's end block + 1 when that epoch is in the
table (the real flat export agrees on every consecutive pair), `timestamp` only where the
document had one (Format A), `storageFees` only where operator states carry storage fees (not
flat exports), a map has no entry for an operator without that value.

`epoch_rows_v1` is the same answer the old way, parsing `epochs.data` in Python per request: the
measured baseline of `shareprice bench api`, and a cross-check of the SQL in the tests.

`raw_epochs`, `latest_epoch_summary` and `epochs_health` serve `/api/raw-epochs`, `/api/summary`
and `?health=1`. Every statement is named, commented, bound and runs under a statement timeout.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql
from sqlalchemy.engine import Engine

from shareprice.errors import ShareError
from shareprice.queries.connection import DEFAULT_TIMEOUT_MS, connect, record, scalar_row

#: Without `operators=`, at most this many operators per row (the largest by latest stake).
EPOCH_ROWS_OPERATOR_CAP = 64
#: `limit`, `sample` bounds of the old API, and the most operators one request may name.
EPOCH_ROWS_MAX_LIMIT = 5000
EPOCH_ROWS_MAX_SAMPLE = 20000
EPOCH_ROWS_MAX_OPERATORS = 256
#: Epochs x operators one response may hold (bounded response size: ~40 MB of JSON at most).
EPOCH_ROWS_MAX_CELLS = 1_000_000
#: Newest epochs `?health=1` looks at for rewards.
HEALTH_SAMPLE = 100


class EpochRowsError(ShareError, ValueError):
    """A request the epoch rows cannot answer as asked; the message names the parameter."""


@dataclass(frozen=True, slots=True)
class EpochRows:
    #: One JSON object (text) per epoch, ascending by epoch.
    rows: list[str]
    #: The operators the maps were narrowed to; None = every operator of each epoch.
    operators: tuple[int, ...] | None
    #: How many operators the data knows (operators_metadata).
    operators_known: int
    #: Whether the default cap chose the operators (no `operators=` given, more than the cap).
    capped: bool


# The normalized epochs, ascending: what `limit` and `sample` choose from. A small table (one
# row per epoch), read whole: 3,734 integers at seed scale.
_NORMALIZED_EPOCHS_SQL = "SELECT epoch FROM epoch_normalizations ORDER BY epoch"

# How many operators are known, and which of the given ids exist.
_OPERATORS_KNOWN_SQL = "SELECT count(*) FROM operators_metadata"
_UNKNOWN_OPERATORS_SQL = """
SELECT id FROM unnest(%(ids)s::bigint[]) AS id
WHERE NOT EXISTS (SELECT 1 FROM operators_metadata m WHERE m.operator_id = id)
ORDER BY id
"""

# The `cap` largest operators by their latest stake (active first, then stake, then id): one
# backward primary-key probe into operator_shares per operator, not a scan of 3.5 M rows.
_LARGEST_OPERATORS_SQL = """
SELECT m.operator_id
FROM operators_metadata m
CROSS JOIN LATERAL (
    SELECT s.stake_raw FROM operator_shares s
    WHERE s.operator_id = m.operator_id ORDER BY s.epoch DESC LIMIT 1
) AS latest
ORDER BY m.is_active DESC, latest.stake_raw DESC, m.operator_id
LIMIT %(cap)s
"""

# One old-API row per chosen epoch, built as JSON text. Totals cover every operator of the epoch
# (the old rows' totals did; stored by sql/040, recomputed live where missing or stale), the maps only the chosen
# operators ({map_rows}: every operator, or one key range per chosen operator).
# BETWEEN lo AND hi lets the BRIN indexes on epoch prune the scan to the chosen range; a hash
# join with the unnested epochs picks the sampled ones inside it (= ANY of a 3,734-element array
# per row would compare 3.5 M rows with every element: minutes). An epoch whose operators had no value gives {} (there is
# nothing to map), totals over no operator state are 0 for stake and NULL for storage fees
# (unknown whether a flat export would have carried them).
_EPOCH_ROWS_SQL = sql.SQL("""
WITH wanted AS (
    SELECT unnest(%(epochs)s::integer[]) AS epoch
), chosen AS (
    SELECT n.epoch, n.operator_count FROM epoch_normalizations n JOIN wanted USING (epoch)
), totals AS (
    -- sql/040: totals kept per epoch, trusted only where they cover the epoch's operator count
    -- (`_MISSING_TOTALS_SQL` finds the others first; they are computed live below).
    SELECT t.epoch, t.total_stake, t.total_storage_fee AS storage_fees
    FROM epoch_totals t JOIN chosen c ON c.epoch = t.epoch AND t.operators = c.operator_count
    {live_totals}
), maps AS (
    SELECT x.epoch,
           json_object_agg(x.operator_id::text, x.stake_raw::text ORDER BY x.operator_id)
               FILTER (WHERE x.stake_raw IS NOT NULL) AS stakes,
           json_object_agg(x.operator_id::text, x.rewards_raw::text ORDER BY x.operator_id)
               FILTER (WHERE x.rewards_raw IS NOT NULL) AS rewards,
           json_object_agg(x.operator_id::text, x.share_price_perq::text ORDER BY x.operator_id)
               AS prices
    FROM {map_rows} AS x
    JOIN wanted w ON w.epoch = x.epoch
    GROUP BY x.epoch
)
SELECT json_build_object(
           'domainId', 0,
           'epoch', c.epoch,
           'startBlock', prev.end_block + 1,
           'endBlock', e.end_block,
           'timestamp', round(extract(epoch FROM e.indexed_at) * 1000)::bigint,
           'totalStake', coalesce(t.total_stake,
                                  CASE WHEN c.operator_count = 0 THEN 0 END)::text,
           'storageFees', t.storage_fees::text,
           'operators', c.operator_count,
           'operatorStakes', coalesce(m.stakes, '{{}}'::json),
           'rewards', coalesce(m.rewards, '{{}}'::json),
           'operatorSharePrices', coalesce(m.prices, '{{}}'::json)
       )::text
FROM chosen c
JOIN epochs e ON e.epoch = c.epoch
LEFT JOIN epochs prev ON prev.epoch = c.epoch - 1
LEFT JOIN totals t ON t.epoch = c.epoch
LEFT JOIN maps m ON m.epoch = c.epoch
ORDER BY c.epoch
""")
# The chosen epochs without a stored total that matches their operator count (normally none).
_MISSING_TOTALS_SQL = """
SELECT n.epoch FROM epoch_normalizations n
JOIN unnest(%(epochs)s::integer[]) AS w(epoch) ON w.epoch = n.epoch
LEFT JOIN epoch_totals t ON t.epoch = n.epoch
WHERE t.epoch IS NULL OR t.operators <> n.operator_count
"""
# Their totals, live: only their blocks (BETWEEN lets the BRIN index prune to their range).
_LIVE_TOTALS = sql.SQL("""
    UNION ALL
    SELECT s.epoch, sum(s.stake_raw), sum(s.storage_fee_raw)
    FROM operator_shares s JOIN unnest(%(missing)s::integer[]) AS m(epoch) ON m.epoch = s.epoch
    WHERE s.epoch BETWEEN %(missing_lo)s AND %(missing_hi)s
    GROUP BY s.epoch
""")
# Maps over every operator of each epoch (BETWEEN lets the BRIN indexes prune to the range).
_ALL_MAP_ROWS = sql.SQL("""(
        SELECT p.operator_id, p.epoch, p.share_price_perq, s.stake_raw, s.rewards_raw
        FROM operator_share_prices p
        LEFT JOIN operator_shares s ON s.operator_id = p.operator_id AND s.epoch = p.epoch
        WHERE p.epoch BETWEEN %(lo)s AND %(hi)s
    )""")
# Narrowed maps: per operator, one range scan of each primary key, merged on epoch. The keys
# carry the values (sql/050), so these are index-only scans over one operator's adjacent leaf
# pages: ~18 ms for 4 operators x 3,734 epochs, and ~0.5 s with nothing cached, where
# `operator_id = ANY(...)` planned a bitmap heap scan plus one probe per row (~64,000 buffers,
# 57 s cold at seed scale).
_NARROWED_MAP_ROWS = sql.SQL("""(
        SELECT p.operator_id, p.epoch, p.share_price_perq, p.stake_raw, p.rewards_raw
        FROM unnest(%(operators)s::bigint[]) AS o(id)
        CROSS JOIN LATERAL (
            SELECT p.operator_id, p.epoch, p.share_price_perq, s.stake_raw, s.rewards_raw
            FROM operator_share_prices p
            LEFT JOIN operator_shares s
                   ON s.operator_id = o.id AND s.epoch = p.epoch
                  AND s.epoch BETWEEN %(lo)s AND %(hi)s
            WHERE p.operator_id = o.id AND p.epoch BETWEEN %(lo)s AND %(hi)s
        ) AS p
    )""")


def sample_evenly(items: Sequence[int], sample: int) -> list[int]:
    """`sample` items spread evenly over `items`, always the first and the last (the newest)."""
    n = len(items)
    if sample >= n:
        return list(items)
    if sample == 1:
        return [items[-1]]
    return [items[(i * (n - 1)) // (sample - 1)] for i in range(sample)]


def _choose_epochs(conn: psycopg.Connection, limit: int | None, sample: int | None) -> list[int]:
    started = time.perf_counter()
    epochs = [row[0] for row in conn.execute(_NORMALIZED_EPOCHS_SQL).fetchall()]
    record("epoch_rows_epochs", started, len(epochs))
    if limit is not None:
        epochs = epochs[-limit:]
    if sample is not None:
        epochs = sample_evenly(epochs, sample)
    return epochs


def _choose_operators(
    conn: psycopg.Connection, operators: tuple[int, ...] | None, cap: int
) -> tuple[tuple[int, ...] | None, int, bool]:
    (known,) = scalar_row(conn, "operators_known", _OPERATORS_KNOWN_SQL)
    if operators is not None:
        started = time.perf_counter()
        unknown = [r[0] for r in conn.execute(_UNKNOWN_OPERATORS_SQL, {"ids": list(operators)})]
        record("unknown_operators", started, len(unknown))
        if unknown:
            shown = ", ".join(str(u) for u in unknown[:5])
            raise EpochRowsError(f"operators: unknown operator id(s) {shown}")
        return operators, int(known), False
    if known <= cap:
        return None, int(known), False
    started = time.perf_counter()
    largest = tuple(r[0] for r in conn.execute(_LARGEST_OPERATORS_SQL, {"cap": cap}))
    record("largest_operators", started, len(largest))
    return tuple(sorted(largest)), int(known), True


def validate_operators(operators: Sequence[int] | None) -> tuple[int, ...] | None:
    if operators is None:
        return None
    ids = tuple(sorted(set(operators)))
    if not ids:
        raise EpochRowsError("operators: give at least one operator id")
    if len(ids) > EPOCH_ROWS_MAX_OPERATORS:
        raise EpochRowsError(f"operators: at most {EPOCH_ROWS_MAX_OPERATORS} ids, got {len(ids)}")
    if any(i < 0 or i >= 2**63 for i in ids):
        raise EpochRowsError("operators: ids are integers 0 .. 2^63-1")
    return ids


def epoch_rows_statement(
    conn: psycopg.Connection, epochs: list[int], operators: tuple[int, ...] | None
) -> tuple[sql.Composed, dict[str, Any]]:
    """The statement and parameters `epoch_rows` runs (also for a bare-cursor comparison)."""
    started = time.perf_counter()
    missing = [r[0] for r in conn.execute(_MISSING_TOTALS_SQL, {"epochs": epochs})]
    record("missing_totals", started, len(missing))
    map_rows = _ALL_MAP_ROWS if operators is None else _NARROWED_MAP_ROWS
    params: dict[str, Any] = {"epochs": epochs, "lo": epochs[0], "hi": epochs[-1]}
    if operators is not None:
        params["operators"] = list(operators)
    live = sql.SQL("")
    if missing:
        live = _LIVE_TOTALS
        params.update(missing=missing, missing_lo=min(missing), missing_hi=max(missing))
    query = _EPOCH_ROWS_SQL.format(map_rows=map_rows, live_totals=live)
    return query, params


def epoch_rows(
    engine: Engine,
    *,
    limit: int | None = None,
    sample: int | None = None,
    operators: Sequence[int] | None = None,
    cap: int = EPOCH_ROWS_OPERATOR_CAP,
    timeout_ms: int | None = DEFAULT_TIMEOUT_MS,
) -> EpochRows:
    """The old API's rows of the last `limit` normalized epochs (None = all), `sample` of them
    spread evenly (always the newest), maps narrowed to `operators` (None: every operator when
    at most `cap` are known, else the `cap` largest by latest stake)."""
    if limit is not None and not 1 <= limit <= EPOCH_ROWS_MAX_LIMIT:
        raise EpochRowsError(f"limit: a positive integer up to {EPOCH_ROWS_MAX_LIMIT}, or all")
    if sample is not None and not 1 <= sample <= EPOCH_ROWS_MAX_SAMPLE:
        raise EpochRowsError(f"sample: a positive integer up to {EPOCH_ROWS_MAX_SAMPLE}")
    wanted = validate_operators(operators)
    with connect(engine, timeout_ms) as conn:
        chosen_ops, known, capped = _choose_operators(conn, wanted, cap)
        epochs = _choose_epochs(conn, limit, sample)
        width = len(chosen_ops) if chosen_ops is not None else known
        if len(epochs) * max(width, 1) > EPOCH_ROWS_MAX_CELLS:
            raise EpochRowsError(
                f"limit: {len(epochs):,} epochs x {width:,} operators is over the "
                f"{EPOCH_ROWS_MAX_CELLS:,} values one response may hold; use sample= or operators="
            )
        if not epochs:
            return EpochRows([], chosen_ops, known, capped)
        started = time.perf_counter()
        rows = [r[0] for r in conn.execute(*epoch_rows_statement(conn, epochs, chosen_ops))]
        record("epoch_rows", started, len(rows))
    return EpochRows(rows, chosen_ops, known, capped)


# --- the old way ----------------------------------------------------------------------------------

# The raw documents (and the columns read from them at import) of the chosen epochs.
_V1_DOCUMENTS_SQL = """
SELECT e.epoch, e.end_block, round(extract(epoch FROM e.indexed_at) * 1000)::bigint,
       prev.end_block + 1, e.data::text
FROM epochs e
LEFT JOIN epochs prev ON prev.epoch = e.epoch - 1
WHERE e.epoch = ANY(%(epochs)s::integer[])
ORDER BY e.epoch
"""


def epoch_rows_v1(
    engine: Engine,
    *,
    limit: int | None = None,
    sample: int | None = None,
    operators: Sequence[int] | None = None,
    cap: int = EPOCH_ROWS_OPERATOR_CAP,
) -> EpochRows:
    """`epoch_rows`, answered the old way: every chosen epoch's raw JSON parsed in Python."""
    from shareprice.chain.parser import parse_document

    wanted = validate_operators(operators)
    out: list[str] = []
    with connect(engine, timeout_ms=None) as conn:
        chosen_ops, known, capped = _choose_operators(conn, wanted, cap)
        epochs = _choose_epochs(conn, limit, sample)
        keep = None if chosen_ops is None else set(chosen_ops)
        started = time.perf_counter()
        with conn.cursor(name="v1_epoch_rows") as cur:
            cur.itersize = 50
            cur.execute(_V1_DOCUMENTS_SQL, {"epochs": epochs})
            for epoch, end_block, timestamp, start_block, text in cur:
                states = parse_document(text).operators
                shown = sorted(
                    (s for s in states if keep is None or s.operator_id in keep),
                    key=lambda s: s.operator_id,
                )
                fees = [s.storage_fee for s in states if s.storage_fee is not None]
                row: dict[str, Any] = {
                    "domainId": 0,
                    "epoch": epoch,
                    "startBlock": start_block,
                    "endBlock": end_block,
                    "timestamp": timestamp,
                    "totalStake": str(sum(s.stake for s in states)),
                    "storageFees": str(sum(fees)) if fees else None,
                    "operators": len(states),
                    "operatorStakes": {str(s.operator_id): str(s.stake) for s in shown},
                    "rewards": {
                        str(s.operator_id): str(s.rewards) for s in shown if s.rewards is not None
                    },
                    "operatorSharePrices": {
                        str(s.operator_id): str(s.share_price_perq) for s in shown
                    },
                }
                out.append(orjson.dumps(row).decode())
        record("v1_epoch_rows", started, len(out))
    return EpochRows(out, chosen_ops, known, capped)


# --- summary, raw documents, health ---------------------------------------------------------------

# The latest normalized epoch's figures, exact: totals over its operator states, every operator's
# price (one epoch: at most ~1,000 entries).
_LATEST_SUMMARY_SQL = """
WITH latest AS (SELECT max(epoch) AS epoch FROM epoch_normalizations)
SELECT json_build_object(
           'epoch', l.epoch,
           'endBlock', e.end_block,
           'timestamp', round(extract(epoch FROM e.indexed_at) * 1000)::bigint,
           'totalStake', (SELECT sum(s.stake_raw) FROM operator_shares s
                          WHERE s.epoch = l.epoch)::text,
           'storageFees', (SELECT sum(s.storage_fee_raw) FROM operator_shares s
                           WHERE s.epoch = l.epoch)::text,
           'rewardsTotal', (SELECT sum(s.rewards_raw) FROM operator_shares s
                            WHERE s.epoch = l.epoch)::text,
           'operatorSharePrices', coalesce(
               (SELECT json_object_agg(p.operator_id::text, p.share_price_perq::text
                                       ORDER BY p.operator_id)
                FROM operator_share_prices p WHERE p.epoch = l.epoch), '{}'::json)
       )::text
FROM latest l
JOIN epochs e ON e.epoch = l.epoch
"""


def latest_epoch_summary(engine: Engine, timeout_ms: int | None = DEFAULT_TIMEOUT_MS) -> str | None:
    """`/api/summary` of the latest normalized epoch as JSON text; None when nothing is
    normalized yet."""
    with connect(engine, timeout_ms) as conn:
        started = time.perf_counter()
        row = conn.execute(_LATEST_SUMMARY_SQL).fetchone()
        record("latest_epoch_summary", started, 0 if row is None else 1)
    return None if row is None else row[0]


# The newest raw documents, newest first, as stored (jsonb rendered as text: the same values).
_RAW_EPOCHS_SQL = "SELECT epoch, data::text FROM epochs ORDER BY epoch DESC LIMIT %(limit)s"


def raw_epochs(
    engine: Engine, limit: int, max_bytes: int, timeout_ms: int | None = DEFAULT_TIMEOUT_MS
) -> list[tuple[int, str]]:
    """The `limit` newest raw documents as (epoch, JSON text); EpochRowsError when together
    they exceed `max_bytes` (a response must stay bounded)."""
    out: list[tuple[int, str]] = []
    size = 0
    with connect(engine, timeout_ms) as conn:
        started = time.perf_counter()
        with conn.cursor(name="raw_epochs") as cur:
            cur.itersize = 5
            cur.execute(_RAW_EPOCHS_SQL, {"limit": limit})
            for epoch, text in cur:
                size += len(text)
                if size > max_bytes:
                    raise EpochRowsError(
                        f"limit: the {limit} newest documents exceed the "
                        f"{max_bytes // 2**20} MiB one response may hold; ask for fewer"
                    )
                out.append((epoch, text))
        record("raw_epochs", started, len(out))
    return out


# `?health=1` of the old API: how many of the newest normalized epochs were looked at, how many
# of them carry rewards, and whether the normalized tables hold anything.
_EPOCHS_HEALTH_SQL = """
WITH newest AS (
    SELECT epoch FROM epoch_normalizations ORDER BY epoch DESC LIMIT %(n)s
)
SELECT (SELECT count(*) FROM newest),
       (SELECT count(*) FROM newest w
         WHERE EXISTS (SELECT 1 FROM operator_shares s
                       WHERE s.epoch = w.epoch AND s.rewards_raw IS NOT NULL)),
       EXISTS (SELECT 1 FROM epoch_normalizations)
"""


def epochs_health(engine: Engine, timeout_ms: int | None = DEFAULT_TIMEOUT_MS) -> dict[str, Any]:
    with connect(engine, timeout_ms) as conn:
        n, rewards, normalized = scalar_row(
            conn, "epochs_health", _EPOCHS_HEALTH_SQL, {"n": HEALTH_SAMPLE}
        )
    return {
        "sample": int(n),
        "rewardsAvailable": int(rewards),
        "normalizedDataAvailable": bool(normalized),
    }
