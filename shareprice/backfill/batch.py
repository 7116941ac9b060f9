"""One backfill batch: consecutive epochs fetched, parsed and written in ONE transaction.

The unit of work every worker process and the in-process path run, together with its
epoch_normalizations rows, its errors and the run's counters, so a kill at any moment loses at
most the batches in flight. Also the errors a run can end with and the raw connection a batch
writes through.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import psycopg

from shareprice.backfill.reader import configure, fetch, load_document, parse_batch, prefetch
from shareprice.backfill.writer import (
    FLUSH_ROWS,
    BatchRows,
    Failure,
    begin_batch,
    finish_batch,
    write_batch,
)
from shareprice.errors import ShareError, error_line
from shareprice.store import db, locks

#: Shared by every batch transaction, taken exclusively by a new run before it looks at what
#: is pending: nothing of an earlier run can still be committing after that.
BARRIER_KEY = locks.BACKFILL_BARRIER
TABLES = (
    "operator_share_prices",
    "operator_shares",
    "operator_chain_share_prices",
    "operators_metadata",
    "nominator_positions",
    "nominator_withdrawals",
    "epoch_positions",
    "nominator_accounts",
)


class BackfillError(ShareError, RuntimeError):
    """A run that could not do its job; the message is safe to print (no secrets)."""


class LockBusy(BackfillError):
    """Another backfill holds the lock; the message says which."""


class ConnectionLost(BackfillError):
    """The database went away during the run."""


@dataclass
class BatchResult:
    epochs: list[int]
    normalized: int
    failed: int
    failures: list[tuple[int, str]]
    rows: dict[str, int]
    seconds: float
    #: Of `seconds`, fetching and parsing (the rest: writing and committing).
    read_seconds: float = 0.0

    @property
    def rows_total(self) -> int:
        return sum(self.rows.values())


# --- connections ---------------------------------------------------------------------------------


def connect(url: str, role: str, *, autocommit: bool = False) -> psycopg.Connection:
    try:
        conn = db.connect(
            url, autocommit=autocommit, application_name=f"shareprice backfill {role}"
        )
    except db.DatabaseUnavailable as exc:
        raise ConnectionLost(f"cannot connect to the database: {exc}") from None
    configure(conn)
    return conn


# --- one batch -------------------------------------------------------------------------------------

_FETCH_REVISIONS = """
SELECT e.epoch, e.revision, n.revision FROM epochs AS e
LEFT JOIN epoch_normalizations AS n ON n.epoch = e.epoch
WHERE e.epoch = ANY(%s::int[])
"""


def process_batch(
    conn: psycopg.Connection, epochs: Sequence[int], run_id: int | None
) -> BatchResult:
    """Fetch, parse and write these epochs in one transaction (see the module docstring)."""
    started = time.perf_counter()
    for replace_all in (False, True):
        batch = BatchRows()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (BARRIER_KEY,))
                touched = begin_batch(conn, epochs, replace_all=replace_all)
                # closing(): a statement failing mid-batch (a mid-batch flush's COPY) stops the
                # prefetching thread here, before the rollback and the retry, not whenever the
                # generator is collected (its queries would race the retry's statements).
                with contextlib.closing(prefetch(fetch(conn, epochs))) as rows:
                    for parsed in parse_batch(rows, partial(load_document, conn), batch.add):
                        if parsed.error is not None:
                            batch.fail(parsed.raw, str(parsed.error))
                        elif batch.buffered >= FLUSH_ROWS:
                            batch.flush(conn)  # between the prefetching thread's queries
                read_s = time.perf_counter() - started
                counts = finish_batch(conn, batch, run_id, touched)
        except psycopg.errors.UniqueViolation:
            if replace_all:
                raise
            continue  # rows without an epoch_normalizations mark: replace them this time
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            # A value the parser accepted but a table refuses: find the epoch, record it.
            if len(epochs) > 1:
                return _merge([process_batch(conn, [e], run_id) for e in epochs], started)
            return _record_refused(conn, epochs[0], run_id, exc, started)
        return BatchResult(
            epochs=list(epochs),
            normalized=len(batch.normalized),
            failed=len(batch.failures),
            failures=[(f.epoch, f.reason) for f in batch.failures],
            rows=counts.as_dict(),
            seconds=time.perf_counter() - started,
            read_seconds=read_s,
        )
    raise AssertionError("unreachable")


def _record_refused(
    conn: psycopg.Connection, epoch: int, run_id: int | None, exc: Exception, started: float
) -> BatchResult:
    reason = f"epoch {epoch}: the database refused its rows: {error_line(exc)}"
    with conn.transaction():
        row = conn.execute(_FETCH_REVISIONS, ([epoch],)).fetchone()  # None: epoch deleted
        batch = BatchRows()
        if row is not None:
            batch.failures.append(Failure(row[0], row[1], reason, row[2] is not None))
        counts = write_batch(conn, batch, run_id)
    return BatchResult(
        [epoch],
        0,
        len(batch.failures),
        [(epoch, reason)],
        counts.as_dict(),
        time.perf_counter() - started,
    )


def _merge(results: list[BatchResult], started: float) -> BatchResult:
    rows = dict.fromkeys(TABLES, 0)
    for r in results:
        for k, v in r.rows.items():
            rows[k] = rows.get(k, 0) + v
    return BatchResult(
        epochs=[e for r in results for e in r.epochs],
        normalized=sum(r.normalized for r in results),
        failed=sum(r.failed for r in results),
        failures=[f for r in results for f in r.failures],
        rows=rows,
        seconds=time.perf_counter() - started,
    )
