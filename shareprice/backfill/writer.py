"""Parsed epochs to normalized rows, and one batch of them written in one transaction.

Why the write looks like this (issue 4, "bulk paths only"):

- `operator_share_prices` and `operator_shares` get the batch by COPY straight into the tables.
  An epoch normalized before (its raw revision moved on) has its old rows deleted first in the
  same transaction, so an operator that vanished from a changed document disappears too. An
  epoch never normalized has no rows (each batch is atomic), so the COPY cannot conflict; if it
  does anyway (rows written by something else), the caller retries the batch deleting first for
  every epoch (`replace_all`). COPY into the table is the floor the benchmark compares with, so
  the backfill pays no staging-table detour for 99 % of its rows.
- The small rest goes through TEMP staging tables and one set-based statement each: chain
  prices (dumps repeat history: keep the earliest document's entry), operators_metadata (first
  and last seen, latest status and tax; name and colour only on first insert), the run counters.
  That tail runs under a transaction-level advisory lock so parallel workers never deadlock on
  the same metadata or chain rows; it takes milliseconds.
- Nominator positions (sql/042): the change rows of `nominator_positions` and
  `nominator_withdrawals` and one `epoch_positions` row per epoch whose document carries the
  items are COPYed straight in like prices (begin_batch deletes a re-normalized epoch's rows
  first); `nominator_accounts` (account, SS58) is upserted in the serialized tail.
- `epoch_normalizations` gets (epoch, revision) in the same transaction as the rows: an epoch is
  marked done exactly when its rows are there, whatever kills the process when.
"""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import psycopg

from shareprice.backfill.positions import PositionChanges
from shareprice.backfill.reader import ParsedEpoch, RawEpoch
from shareprice.chain import ss58
from shareprice.store import locks

#: pg_advisory_xact_lock key serializing the short tail of batch transactions (metadata, chain).
TAIL_LOCK_KEY = locks.BACKFILL_TAIL

_BIGINT_MAX = 2**63 - 1
_INT_MAX = 2**31 - 1
_NUMERIC40_MAX = 10**40 - 1
_NULL = "\\N"
_KNOWN_STATUSES = frozenset(
    {"registered", "deregistered", "slashed", "pendingSlash", "invalidBundle", "deactivated"}
)
_GOLDEN_ANGLE = 137.50776405003785


def default_name(operator_id: int) -> str:
    return f"Operator {operator_id}"


@functools.lru_cache(maxsize=4096)
def default_color(operator_id: int) -> str:
    """A stable colour per id, far from its neighbours': hues step by the golden angle (the
    sequence never repeats and consecutive ids land on opposite sides of the wheel) and the
    lightness cycles through three levels, so ids whose hues come close still differ."""
    hue = (operator_id * _GOLDEN_ANGLE) % 360.0 / 360.0
    lightness = (0.45, 0.60, 0.35)[operator_id % 3]
    r, g, b = colorsys.hls_to_rgb(hue, lightness, 0.70)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


@functools.lru_cache(maxsize=65536)
def _ss58(account: str) -> str:
    """An account's SS58 address (64 hex digits in), remembered: every batch upserts the
    accounts of its position rows (~1,100 per seed batch, the same ~4,000 accounts throughout),
    and one encoding (a checksum and base58 by big-integer division) costs ~20 us."""
    return ss58.encode(bytes.fromhex(account))


def _unstorable(oid: int, stake: int, shares: int | None, price: int) -> str:
    if oid > _BIGINT_MAX:
        return f"operator id {oid} exceeds the largest storable id (2^63-1)"
    return (
        f"operator {oid}: share price {price} (stake {stake}, shares {shares}) cannot be "
        "stored: it must be positive and at most 40 digits"
    )


def _copy_text(value: str) -> str:
    """Escape a string for COPY's text format (statuses are plain words; anything else is not)."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


@dataclass
class WriteCounts:
    prices: int = 0
    shares: int = 0
    chain: int = 0
    metadata: int = 0
    positions: int = 0
    withdrawals: int = 0
    epoch_positions: int = 0
    accounts: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "operator_share_prices": self.prices,
            "operator_shares": self.shares,
            "operator_chain_share_prices": self.chain,
            "operators_metadata": self.metadata,
            "nominator_positions": self.positions,
            "nominator_withdrawals": self.withdrawals,
            "epoch_positions": self.epoch_positions,
            "nominator_accounts": self.accounts,
        }


@dataclass
class Failure:
    epoch: int
    revision: int
    reason: str
    #: The normalized tables hold rows of an older revision of this epoch (to be removed).
    had_rows: bool


@dataclass
class BatchRows:
    """Everything one batch writes, as COPY text and small dicts (bounded by the batch size)."""

    prices: list[str] = field(default_factory=list)
    shares: list[str] = field(default_factory=list)
    positions: list[str] = field(default_factory=list)
    withdrawals: list[str] = field(default_factory=list)
    epoch_positions: list[str] = field(default_factory=list)
    #: Accounts (64 hex digits) of the position rows written, for nominator_accounts.
    accounts: set[str] = field(default_factory=set)
    chain: dict[tuple[int, int, int], tuple[int, int]] = field(default_factory=dict)
    meta_first: dict[int, int] = field(default_factory=dict)
    meta_last: dict[int, tuple[int, str | None, int | None]] = field(default_factory=dict)
    #: (epoch, revision, operator_count) of every epoch normalized by this batch.
    normalized: list[tuple[int, int, int]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    #: Rows already sent by flush() (the lists above hold only what is not sent yet).
    counts: WriteCounts = field(default_factory=lambda: WriteCounts())
    #: Where each run of SORT_CHUNK_EPOCHS epochs starts in `prices` and `shares` (the same
    #: index in both: one line each per operator), while epochs arrive in ascending order.
    _run_starts: list[int] = field(default_factory=list)
    _last_run: int = -1
    _ascending: bool = True

    def flush(self, conn: psycopg.Connection) -> None:
        """COPY the buffered rows now (inside the batch's transaction), so a batch's memory is
        bounded by FLUSH_ROWS whatever the batch size or the operators per epoch.

        Each table's lines go in sorted (a line starts with its key: operator, then account or
        epoch), so the rows of one key over the buffered epochs reach the primary key and
        account indexes one after another, on the same leaf pages. In epoch order every row of
        an epoch lands on another leaf: at seed scale those indexes are ~1.5 GB against 128 MB
        of shared buffers (which the raw documents' TOAST reads keep flushing), and the COPY
        waited on page reads (measured on a full clone, 100 epochs: flush 70 ms of wall time per
        epoch in epoch order, 29 ms sorted over a batch). Prices and shares are sorted within
        runs of SORT_CHUNK_EPOCHS epochs only, for their BRIN indexes on epoch."""
        with conn.cursor() as cur:
            for lines, statement in (
                (self.prices, _COPY_PRICES),
                (self.shares, _COPY_SHARES),
                (self.positions, _COPY_POSITIONS),
                (self.withdrawals, _COPY_WITHDRAWALS),
                (self.epoch_positions, _COPY_EPOCH_POSITIONS),
            ):
                if lines:
                    if lines is self.prices or lines is self.shares:
                        self._sort_by_run(lines)
                    else:
                        lines.sort()
                    with cur.copy(statement) as copy:
                        copy.write("".join(lines).encode())
        self.counts.prices += len(self.prices)
        self.counts.shares += len(self.shares)
        self.counts.positions += len(self.positions)
        self.counts.withdrawals += len(self.withdrawals)
        self.counts.epoch_positions += len(self.epoch_positions)
        for lines in (
            self.prices,
            self.shares,
            self.positions,
            self.withdrawals,
            self.epoch_positions,
        ):
            lines.clear()
        self._run_starts.clear()
        self._last_run = -1
        self._ascending = True

    def _sort_by_run(self, lines: list[str]) -> None:
        """Sort by (run of epochs, line). Epochs arrive in ascending order, so each run's lines
        are one slice: sorting the slices as plain strings gives that order without a key
        function per line (~0.5-1 ms per epoch and table at seed scale)."""
        if not self._ascending:
            lines.sort(key=_epoch_chunk_key)
            return
        ends = [*self._run_starts[1:], len(lines)]
        for start, end in zip(self._run_starts, ends, strict=True):
            lines[start:end] = sorted(lines[start:end])

    @property
    def buffered(self) -> int:
        """Rows waiting for flush() (what FLUSH_ROWS bounds)."""
        return len(self.prices) + len(self.positions) + len(self.withdrawals)

    @property
    def epochs(self) -> list[int]:
        return [e for e, _, _ in self.normalized] + [f.epoch for f in self.failures]

    def add(self, parsed: ParsedEpoch) -> str | None:
        """Add one parsed epoch; return why it cannot be stored (nothing added) or None.

        This loop runs ~3.5 million times in a seed-scale backfill: one f-string per row, and
        the None checks only where a format can have None (flat exports).
        """
        epoch = parsed.epoch
        source = parsed.format
        prices: list[str] = []
        shares: list[str] = []
        add_price = prices.append
        add_share = shares.append
        known = _KNOWN_STATUSES
        dump = source == "storage_dump"
        # The parts every line of this epoch shares, built once (~1,000 operators an epoch).
        at = f"\t{epoch}\t"
        price_tail = f"\t{source}\n"
        for oid, stake, n_shares, fee, tax, status, price, rewards in parsed.operators:
            if oid > _BIGINT_MAX or not 0 < price <= _NUMERIC40_MAX:
                return _unstorable(oid, stake, n_shares, price)
            lead = f"{oid}{at}"
            add_price(f"{lead}{price}{price_tail}")
            if dump and status in known:  # shares, fee, tax and status are never None here
                add_share(
                    f"{lead}{stake}\t{n_shares}\t{fee}\t"
                    f"{_NULL if rewards is None else rewards}\t{status}\t{tax}\n"
                )
            else:
                add_share(
                    f"{lead}{stake}\t{_NULL if n_shares is None else n_shares}\t"
                    f"{_NULL if fee is None else fee}\t{_NULL if rewards is None else rewards}\t"
                    f"{_NULL if status is None else _copy_text(status)}\t"
                    f"{_NULL if tax is None else tax}\n"
                )
        # Metadata follows the last row of each operator (ids are unique within an epoch).
        latest = {row[0]: (epoch, row[5], row[4]) for row in parsed.operators}
        for oid, domain, domain_epoch, value in parsed.chain:
            if oid > _BIGINT_MAX or domain > _INT_MAX or domain_epoch > _INT_MAX:
                return (
                    f"chain price of operator {oid}, domain {domain}, epoch {domain_epoch}: "
                    "a number exceeds its column"
                )
            if value > _NUMERIC40_MAX:
                return f"chain price {value} exceeds 40 digits"
        if parsed.positions is not None:
            position_lines = _position_lines(parsed.positions)
            if isinstance(position_lines, str):
                return position_lines
            self.positions.extend(position_lines[0])
            self.withdrawals.extend(position_lines[1])
            self.epoch_positions.append(position_lines[2])
            self.accounts.update(position_lines[3])
        run = epoch // SORT_CHUNK_EPOCHS
        if run != self._last_run:
            if run < self._last_run:
                self._ascending = False
            self._last_run = run
            self._run_starts.append(len(self.prices))
        self.prices.extend(prices)
        self.shares.extend(shares)
        table = self.chain
        for oid, domain, domain_epoch, value in parsed.chain:
            key = (oid, domain, domain_epoch)
            if key not in table:  # epochs arrive in order: the first is the earliest document
                table[key] = (value, epoch)
        first = self.meta_first
        for oid in latest.keys() - first.keys():
            first[oid] = epoch
        self.meta_last.update(latest)
        raw = parsed.raw
        self.normalized.append((epoch, raw.revision, len(parsed.operators)))
        return None

    def fail(self, raw: RawEpoch, reason: str) -> None:
        self.failures.append(
            Failure(raw.epoch, raw.revision, reason, raw.normalized_revision is not None)
        )


#: Prices and shares are sorted by key within runs of this many epochs only: their heap stays
#: correlated with epoch for the BRIN indexes the dashboard's per-epoch reads use (a 128-page
#: BRIN range holds ~6 epochs of operator_shares at seed scale).
SORT_CHUNK_EPOCHS = 8


def _epoch_chunk_key(line: str) -> tuple[int, str]:
    """A price or share line ('<operator>\t<epoch>\t...'): its run of epochs, then the line."""
    start = line.index("\t") + 1
    return int(line[start : line.index("\t", start)]) // SORT_CHUNK_EPOCHS, line


def _n(value: int | None) -> str:
    return _NULL if value is None else str(value)


def _position_lines(
    changes: PositionChanges,
) -> tuple[list[str], list[str], str, list[str]] | str:
    """COPY lines of one epoch's position rows, or why they cannot be stored."""
    epoch = changes.epoch
    at = f"\t{epoch}\t"
    positions: list[str] = []
    withdrawals: list[str] = []
    accounts: list[str] = []
    for operator_id, account, state in changes.rows:
        if operator_id > _BIGINT_MAX:
            return f"nominator position of operator {operator_id}: the id exceeds 2^63-1"
        if state is None:
            positions.append(f"{operator_id}\t\\\\x{account}\t{epoch}{_CLOSED_POSITION}")
            continue
        _, _, known, fee, domain, pending_epoch, amount, pending_fee, effective, hold = state
        if (domain is not None and domain > _INT_MAX) or (
            pending_epoch is not None and pending_epoch > _INT_MAX
        ):
            return (
                f"deposit of account 0x{account} with operator {operator_id}: pending epoch "
                f"[{domain}, {pending_epoch}] exceeds its column"
            )
        if effective is not None and effective > _NUMERIC40_MAX:
            return (
                f"deposit of account 0x{account} with operator {operator_id}: effective "
                f"shares {effective} exceed 40 digits"
            )
        accounts.append(account)
        if (
            pending_epoch is None
            and domain is None
            and amount is None
            and pending_fee is None
            and known is not None
            and fee is not None
            and effective is not None
            and hold is not None
        ):  # no pending deposit (most rows): the Nones spelled out once
            positions.append(
                f"{operator_id}\t\\\\x{account}{at}{known}\t{fee}{_NO_PENDING}{effective}\t{hold}\n"
            )
            continue
        positions.append(
            f"{operator_id}\t\\\\x{account}{at}{_n(known)}\t{_n(fee)}\t{_n(domain)}\t"
            f"{_n(pending_epoch)}\t{_n(amount)}\t{_n(pending_fee)}\t{_n(effective)}\t{_n(hold)}\n"
        )
    for operator_id, account, w in changes.withdrawal_rows:
        if operator_id > _BIGINT_MAX:
            return f"withdrawal of operator {operator_id}: the id exceeds 2^63-1"
        if w is None:
            withdrawals.append(f"{operator_id}\t\\\\x{account}\t{epoch}{_CLOSED_WITHDRAWAL}")
            continue
        _, _, total, total_fee, domain, w_epoch, unlock, shares, refund, unlocking = w
        blocks = [b for b, _, _ in unlocking]
        if unlock is not None:
            blocks.append(unlock)
        if (
            any(b > _BIGINT_MAX for b in blocks)
            or (domain is not None and domain > _INT_MAX)
            or (w_epoch is not None and w_epoch > _INT_MAX)
        ):
            return (
                f"withdrawal of account 0x{account} with operator {operator_id}: a block or "
                "epoch number exceeds its column"
            )
        accounts.append(account)
        listed = orjson.dumps(
            [
                {"unlock_block": b, "amount": str(a), "storage_fee_refund": str(f)}
                for b, a, f in unlocking
            ]
        ).decode()
        withdrawals.append(
            f"{operator_id}\t\\\\x{account}\t{epoch}\t{total}\t{total_fee}\t{_n(domain)}\t"
            f"{_n(w_epoch)}\t{_n(unlock)}\t{_n(shares)}\t{_n(refund)}\t{_copy_text(listed)}\n"
        )
    head = changes.head_domain_number
    if head is not None and head > _BIGINT_MAX:
        return f"headDomainNumber {head} exceeds 2^63-1"
    line = (
        f"{epoch}\t{_n(changes.base_revision)}\t{_n(head)}\t{changes.positions}\t"
        f"{changes.withdrawals}\n"
    )
    return positions, withdrawals, line, accounts


_CLOSED_POSITION = "\t\\N" * 8 + "\n"
#: The four pending columns of a deposit without a pending part.
_NO_PENDING = "\t\\N" * 4 + "\t"
_CLOSED_WITHDRAWAL = "\t\\N" * 8 + "\n"


# --- SQL -------------------------------------------------------------------------------------------

STAGING_SQL = """
CREATE TEMP TABLE IF NOT EXISTS backfill_chain_stage (
    operator_id bigint, domain_id integer, domain_epoch integer,
    shares_per_stake_perq numeric, seen_in_epoch integer
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS backfill_accounts_stage (
    account bytea, ss58 text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS backfill_meta_stage (
    operator_id bigint, name text, color text, status text, nomination_tax smallint,
    first_seen_epoch integer, last_seen_epoch integer
) ON COMMIT DELETE ROWS;
"""

_DELETE_PRICES = "DELETE FROM operator_share_prices WHERE epoch = ANY(%s::int[])"
_DELETE_SHARES = "DELETE FROM operator_shares WHERE epoch = ANY(%s::int[]) RETURNING operator_id"
_COPY_PRICES = (
    "COPY operator_share_prices (operator_id, epoch, share_price_perq, source) FROM STDIN"
)
_COPY_SHARES = (
    "COPY operator_shares (operator_id, epoch, stake_raw, shares_raw, storage_fee_raw, "
    "rewards_raw, status, nomination_tax) FROM STDIN"
)
_COPY_POSITIONS = (
    "COPY nominator_positions (operator_id, account, from_epoch, known_shares, "
    "known_storage_fee, pending_domain_id, pending_epoch, pending_amount, pending_storage_fee, "
    "effective_shares, deposit_on_hold) FROM STDIN"
)
_COPY_WITHDRAWALS = (
    "COPY nominator_withdrawals (operator_id, account, from_epoch, total_amount, "
    "total_storage_fee, in_shares_domain_id, in_shares_epoch, in_shares_unlock_block, in_shares, "
    "in_shares_storage_fee_refund, unlocking) FROM STDIN"
)
_COPY_EPOCH_POSITIONS = (
    "COPY epoch_positions (epoch, base_revision, head_domain_number, positions, withdrawals) "
    "FROM STDIN"
)
_DELETE_POSITIONS = "DELETE FROM nominator_positions WHERE from_epoch = ANY(%s::int[])"
_DELETE_WITHDRAWALS = "DELETE FROM nominator_withdrawals WHERE from_epoch = ANY(%s::int[])"
_DELETE_EPOCH_POSITIONS = "DELETE FROM epoch_positions WHERE epoch = ANY(%s::int[])"
_COPY_ACCOUNTS_STAGE = "COPY backfill_accounts_stage FROM STDIN"
# Accounts never change their SS58 form: the first writer's row stays.
_INSERT_ACCOUNTS = """
INSERT INTO nominator_accounts (account, ss58)
SELECT account, ss58 FROM backfill_accounts_stage ORDER BY account
ON CONFLICT DO NOTHING
"""
_COPY_CHAIN_STAGE = "COPY backfill_chain_stage FROM STDIN"
_COPY_META_STAGE = "COPY backfill_meta_stage FROM STDIN"

# Dumps repeat history: an entry already stored is kept, unless this batch read it from an
# earlier document (parallel workers finish out of order), so seen_in_epoch is the first one.
_UPSERT_CHAIN = """
INSERT INTO operator_chain_share_prices AS t
    (operator_id, domain_id, domain_epoch, shares_per_stake_perq, seen_in_epoch)
SELECT operator_id, domain_id, domain_epoch, shares_per_stake_perq, seen_in_epoch
FROM backfill_chain_stage
ORDER BY operator_id, domain_id, domain_epoch
ON CONFLICT (operator_id, domain_id, domain_epoch) DO UPDATE
SET shares_per_stake_perq = EXCLUDED.shares_per_stake_perq,
    seen_in_epoch = EXCLUDED.seen_in_epoch
WHERE EXCLUDED.seen_in_epoch < t.seen_in_epoch
"""

# name and color only on first insert: a name or colour a person set is never overwritten.
# Status and tax follow the latest epoch seen, whatever order batches commit in.
_UPSERT_META = """
INSERT INTO operators_metadata AS m
    (operator_id, name, color, status, nomination_tax, first_seen_epoch, last_seen_epoch,
     is_active, updated_at)
SELECT operator_id, name, color, status, nomination_tax, first_seen_epoch, last_seen_epoch,
       false, now()
FROM backfill_meta_stage
ORDER BY operator_id
ON CONFLICT (operator_id) DO UPDATE
SET first_seen_epoch = LEAST(m.first_seen_epoch, EXCLUDED.first_seen_epoch),
    last_seen_epoch = GREATEST(m.last_seen_epoch, EXCLUDED.last_seen_epoch),
    status = CASE WHEN m.last_seen_epoch IS NULL OR EXCLUDED.last_seen_epoch >= m.last_seen_epoch
                  THEN EXCLUDED.status ELSE m.status END,
    nomination_tax = CASE WHEN m.last_seen_epoch IS NULL
                               OR EXCLUDED.last_seen_epoch >= m.last_seen_epoch
                          THEN EXCLUDED.nomination_tax ELSE m.nomination_tax END,
    updated_at = now()
"""

# After old rows of changed epochs were replaced, an operator may have vanished from them.
_RESEEN_META = """
UPDATE operators_metadata AS m
SET first_seen_epoch = (SELECT min(p.epoch) FROM operator_share_prices AS p
                        WHERE p.operator_id = m.operator_id),
    last_seen_epoch = (SELECT max(p.epoch) FROM operator_share_prices AS p
                       WHERE p.operator_id = m.operator_id),
    updated_at = now()
WHERE m.operator_id = ANY(%s::bigint[])
"""

# Active: seen in the latest raw epoch with status registered (or no status: flat exports).
_ACTIVE = """
UPDATE operators_metadata
SET is_active = NOT is_active, updated_at = now()
WHERE is_active <> (coalesce(last_seen_epoch = (SELECT max(epoch) FROM epochs), false)
                    AND (status IS NULL OR status = 'registered'))
"""

_MARK_NORMALIZED = """
INSERT INTO epoch_normalizations (epoch, revision, operator_count, run_id)
SELECT n.epoch, n.revision, n.operator_count, %(run_id)s
FROM unnest(%(epochs)s::int[], %(revisions)s::bigint[], %(counts)s::int[])
     AS n(epoch, revision, operator_count)
ON CONFLICT (epoch) DO UPDATE
SET revision = EXCLUDED.revision, operator_count = EXCLUDED.operator_count,
    run_id = EXCLUDED.run_id, normalized_at = now()
"""

_UNMARK = "DELETE FROM epoch_normalizations WHERE epoch = ANY(%s::int[])"

_RECORD_ERRORS = """
INSERT INTO backfill_errors (run_id, epoch, reason, revision)
SELECT %(run_id)s, f.epoch, f.reason, f.revision
FROM unnest(%(epochs)s::int[], %(reasons)s::text[], %(revisions)s::bigint[])
     AS f(epoch, reason, revision)
ON CONFLICT (run_id, epoch) DO UPDATE
SET reason = EXCLUDED.reason, revision = EXCLUDED.revision, recorded_at = now()
"""

# clock_timestamp(): now() is the transaction's start, before this batch was fetched and parsed.
_RUN_PROGRESS = """
UPDATE backfill_runs
SET epochs_done = epochs_done + %(done)s,
    epochs_failed = epochs_failed + %(failed)s,
    rows_written = rows_written || (
        SELECT coalesce(jsonb_object_agg(
                   x.key, coalesce((backfill_runs.rows_written ->> x.key)::bigint, 0)
                          + x.value::bigint), '{}'::jsonb)
        FROM jsonb_each_text(%(rows)s::jsonb) AS x),
    last_epoch = GREATEST(last_epoch, %(last_epoch)s),
    heartbeat_at = clock_timestamp()
WHERE run_id = %(run_id)s
"""


def prepare_connection(conn: psycopg.Connection) -> None:
    """Per-connection set-up of a batch writer (outside any batch transaction)."""
    with conn.transaction():
        conn.execute(STAGING_SQL)
        # A commit need not wait for its WAL flush: a server crash can lose the last batches,
        # never half of one, and the next run redoes whatever epoch_normalizations lacks.
        conn.execute("SET synchronous_commit = off")
        # This session only. The bands' percentile sort of a batch's prices (sql/020) and the
        # write triggers' transition tables stay in memory. (It was set for the raw reader's
        # server-side cursor, whose FETCHes materialized ~20 MB each in a tuplestore that went
        # to a temporary file with the default 4 MB; the reader now sends plain queries.)
        conn.execute("SET work_mem = '64MB'")


#: Rows buffered before a batch COPYs them (~30 MB of text): the batch's memory bound. Large
#: enough for a whole default batch at seed scale (50 epochs x ~2,900 rows), so that the sorted
#: COPY (BatchRows.flush) groups each key's rows over the whole batch.
FLUSH_ROWS = 200_000

_NORMALIZED_AMONG = "SELECT epoch FROM epoch_normalizations WHERE epoch = ANY(%s::int[])"


def begin_batch(
    conn: psycopg.Connection, epochs: Sequence[int], *, replace_all: bool = False
) -> set[int]:
    """First statement of a batch's transaction: delete the rows of the batch's epochs that
    were normalized before (all of them with replace_all), so the batch's rows can be COPYed
    straight in. Returns the operators whose rows were deleted."""
    cur = conn.cursor()
    if replace_all:
        stale = sorted(epochs)
    else:
        stale = sorted(r[0] for r in cur.execute(_NORMALIZED_AMONG, (list(epochs),)).fetchall())
    if not stale:
        return set()
    cur.execute(_DELETE_POSITIONS, (stale,))
    cur.execute(_DELETE_WITHDRAWALS, (stale,))
    cur.execute(_DELETE_EPOCH_POSITIONS, (stale,))
    cur.execute(_DELETE_PRICES, (stale,))
    cur.execute(_DELETE_SHARES, (stale,))
    return {row[0] for row in cur.fetchall()}


def finish_batch(
    conn: psycopg.Connection, batch: BatchRows, run_id: int | None, touched: set[int]
) -> WriteCounts:
    """The rest of a batch, inside the caller's open transaction, after begin_batch."""
    batch.flush(conn)
    counts = batch.counts
    cur = conn.cursor()
    if batch.normalized:
        epochs, revisions, op_counts = zip(*batch.normalized, strict=True)
        cur.execute(
            _MARK_NORMALIZED,
            {
                "run_id": run_id,
                "epochs": list(epochs),
                "revisions": list(revisions),
                "counts": list(op_counts),
            },
        )
    if batch.failures:
        unmark = [f.epoch for f in batch.failures if f.had_rows]
        if unmark:  # their old rows went in begin_batch; the tables hold nothing of them now
            cur.execute(_UNMARK, (unmark,))
        if run_id is not None:
            cur.execute(
                _RECORD_ERRORS,
                {
                    "run_id": run_id,
                    "epochs": [f.epoch for f in batch.failures],
                    "reasons": [f.reason for f in batch.failures],
                    "revisions": [f.revision for f in batch.failures],
                },
            )

    # The tail: small, serialized between parallel workers.
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (TAIL_LOCK_KEY,))
    if batch.chain:
        with cur.copy(_COPY_CHAIN_STAGE) as copy:
            copy.write(
                "".join(
                    f"{o}\t{d}\t{de}\t{value}\t{seen}\n"
                    for (o, d, de), (value, seen) in batch.chain.items()
                ).encode()
            )
        cur.execute(_UPSERT_CHAIN)
        counts.chain = max(cur.rowcount, 0)
    if batch.meta_last:
        first = batch.meta_first
        lines = []
        for oid, (last, status, tax) in batch.meta_last.items():
            status_text = _NULL if status is None else _copy_text(status)
            tax_text = _NULL if tax is None else tax
            lines.append(
                f"{oid}\t{_copy_text(default_name(oid))}\t{default_color(oid)}\t{status_text}\t"
                f"{tax_text}\t{first[oid]}\t{last}\n"
            )
        with cur.copy(_COPY_META_STAGE) as copy:
            copy.write("".join(lines).encode())
        cur.execute(_UPSERT_META)
        counts.metadata = max(cur.rowcount, 0)
    if batch.accounts:
        with cur.copy(_COPY_ACCOUNTS_STAGE) as copy:
            copy.write(
                "".join(
                    f"\\\\x{account}\t{_ss58(account)}\n" for account in sorted(batch.accounts)
                ).encode()
            )
        cur.execute(_INSERT_ACCOUNTS)
        counts.accounts = max(cur.rowcount, 0)
    if touched:
        cur.execute(_RESEEN_META, (sorted(touched),))
    if batch.normalized or touched:
        cur.execute(_ACTIVE)
        # A new data version for dashboards' caches.
        cur.execute("SELECT nextval('data_version_seq')")
    if run_id is not None:
        done = batch.epochs
        cur.execute(
            _RUN_PROGRESS,
            {
                "run_id": run_id,
                "done": len(batch.normalized),
                "failed": len(batch.failures),
                "rows": orjson.dumps(counts.as_dict()).decode(),
                "last_epoch": max(done) if done else None,
            },
        )
    return counts


def write_batch(
    conn: psycopg.Connection, batch: BatchRows, run_id: int | None, *, replace_all: bool = False
) -> WriteCounts:
    """begin_batch + finish_batch for a batch parsed before its transaction's first write."""
    return finish_batch(
        conn, batch, run_id, begin_batch(conn, batch.epochs, replace_all=replace_all)
    )
