"""`shareprice backfill`: raw epochs to the normalized tables, fast, resumable and observable.

How a run goes:

1. Take a session advisory lock (one backfill at a time per database). A second run learns who
   holds it (run id, pid, host from backfill_runs; the backend from pg_locks) and stops, or
   waits with `wait=True`.
2. Wait for any batch transaction a killed predecessor's workers may still be committing (they
   hold a shared barrier lock per transaction), then mark runs left 'running' as interrupted:
   holding the lock proves their process is gone.
3. Pending epochs: no epoch_normalizations row, a raw revision that moved on, or nominator
   positions compared with a base E-1 the tables no longer hold (sql/042); skipping documents
   the parser rejected at their current revision (unless `retry_failed`). After the pass, what
   is pending again is redone (at most FIXUP_PASSES times): so parallel batches, epochs
   imported out of order and changed documents end with the tables a sequential run writes.
4. Split them into batches of consecutive epochs; each batch is fetched, parsed and written in
   ONE transaction together with its epoch_normalizations rows, its errors and the run's
   counters (shareprice/backfill/writer.py). A kill at any moment loses at most the batches in flight,
   which the next run redoes.
5. With `workers > 1`, batches go to that many processes, each with its own connection (on two
   cores, two workers keep both busy: one parses while the other's server process writes).
6. `follow=True`: after catching up, LISTEN epochs_changed (a statement trigger on epochs) with
   a polling fallback, and normalize new or changed epochs as they come, until interrupted.

SIGINT/SIGTERM let the batches in flight commit, then mark the run interrupted (a second signal
stops at once). A lost database connection ends the run with a clear error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from sqlalchemy.engine import Engine

from shareprice.backfill.batch import (
    BARRIER_KEY,
    TABLES,
    BackfillError,
    BatchResult,
    ConnectionLost,
    LockBusy,
    connect,
    process_batch,
)
from shareprice.backfill.pool import Interrupt, Pool, describe_failure
from shareprice.backfill.writer import (
    prepare_connection,
)
from shareprice.errors import error_line
from shareprice.store import db, locks

#: Session advisory lock held by the running backfill (see shareprice.store.locks).
LOCK_KEY = locks.BACKFILL

DEFAULT_BATCH_SIZE = 50
DEFAULT_WORKERS = 2
HEARTBEAT_SECONDS = 5.0


@dataclass(frozen=True)
class Options:
    epoch_from: int | None = None
    epoch_to: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = DEFAULT_WORKERS
    wait: bool = False
    follow: bool = False
    retry_failed: bool = False
    #: Follow mode: how often to look for new epochs when no notification arrives.
    poll_seconds: float = 1.0

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.epoch_from,
            "to": self.epoch_to,
            "batch_size": self.batch_size,
            "workers": self.workers,
            "follow": self.follow,
            "retry_failed": self.retry_failed,
        }


@dataclass
class Summary:
    run_id: int | None
    status: str  # nothing-to-do / succeeded / failed / interrupted
    epochs_total: int = 0
    epochs_done: int = 0
    epochs_failed: int = 0
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    seconds: float = 0.0
    #: The first failures of this run: (epoch, reason).
    failures: list[tuple[int, str]] = field(default_factory=list)
    #: Epochs in range that failed earlier at their current revision and were not retried.
    known_bad: int = 0
    #: Summed over batches (across workers): time in batches, and of it fetching and parsing.
    batch_seconds: float = 0.0
    read_seconds: float = 0.0

    def add(self, result: BatchResult) -> None:
        self.batch_seconds += result.seconds
        self.read_seconds += result.read_seconds
        self.epochs_done += result.normalized
        self.epochs_failed += result.failed
        for table, n in result.rows.items():
            self.rows[table] = self.rows.get(table, 0) + n
        if len(self.failures) < 20:
            self.failures.extend(result.failures[: 20 - len(self.failures)])

    @property
    def ok(self) -> bool:
        return self.status in ("nothing-to-do", "succeeded")


#: progress(summary, result): called after every batch (result None when a run starts or
#: follow mode picked up new epochs: the totals changed).
ProgressCallback = Callable[[Summary, BatchResult | None], None]


# --- the run ---------------------------------------------------------------------------------------

# Why an epoch is pending: no epoch_normalizations row, a raw revision that moved on, or
# positions compared with a base that is no longer what the tables hold for E-1 (sql/042:
# base_revision IS DISTINCT FROM N(E-1), N(E-1) = the normalized revision of E-1 when E-1 still
# exists and has an epoch_positions row, else NULL: E-1 renormalized from a new revision,
# imported after E, failed, or deleted). And, so that one pass does both: E whose E-1 is itself
# pending (not known bad) and whose base is not E-1's current revision, which that pass will
# make N(E-1); sorted together they land in one batch, E compared with E-1 parsed there.
_NEEDS_WORK = """
(n.epoch IS NULL OR n.revision <> e.revision
 OR (p.epoch IS NOT NULL
     AND (p.base_revision IS DISTINCT FROM
              CASE WHEN p1.epoch IS NOT NULL AND e1.epoch IS NOT NULL THEN n1.revision END
          OR (e1.epoch IS NOT NULL
              AND (n1.epoch IS NULL OR n1.revision <> e1.revision)
              AND p.base_revision IS DISTINCT FROM e1.revision
              AND NOT EXISTS (SELECT 1 FROM backfill_errors AS b1
                              WHERE b1.epoch = e1.epoch AND b1.revision = e1.revision)))))
"""
_FROM = """
FROM epochs AS e
LEFT JOIN epoch_normalizations AS n ON n.epoch = e.epoch
LEFT JOIN epoch_positions AS p ON p.epoch = e.epoch
LEFT JOIN epochs AS e1 ON e1.epoch = e.epoch - 1
LEFT JOIN epoch_normalizations AS n1 ON n1.epoch = e.epoch - 1
LEFT JOIN epoch_positions AS p1 ON p1.epoch = e.epoch - 1
"""

_PENDING = f"""
SELECT e.epoch
{_FROM}
WHERE {_NEEDS_WORK}
  AND e.epoch >= %(lo)s AND e.epoch <= %(hi)s
  AND (%(retry)s OR NOT EXISTS (
        SELECT 1 FROM backfill_errors AS b
        WHERE b.epoch = e.epoch AND b.revision = e.revision))
ORDER BY e.epoch
"""  # noqa: S608 (constant fragments, no input)

_KNOWN_BAD = f"""
SELECT count(*)
{_FROM}
WHERE {_NEEDS_WORK}
  AND e.epoch >= %(lo)s AND e.epoch <= %(hi)s
  AND EXISTS (SELECT 1 FROM backfill_errors AS b
              WHERE b.epoch = e.epoch AND b.revision = e.revision)
"""  # noqa: S608

_PENDING_COUNT = f"SELECT count(*) {_FROM} WHERE {_NEEDS_WORK}"  # noqa: S608

#: Passes after the first: epochs a pass left pending because their E-1 was normalized after
#: them (parallel batches, or a revision that moved on meanwhile) are redone against it.
FIXUP_PASSES = 3

_HOLDER = """
SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.classid = %(hi)s::bigint::oid AND l.objid = %(lo)s::bigint::oid AND l.objsubid = 1
LIMIT 1
"""

_RUNNING = """
SELECT run_id, pid, host, started_at, heartbeat_at, epochs_done, epochs_total,
       round(extract(epoch FROM clock_timestamp() - heartbeat_at))::int AS quiet_s
FROM backfill_runs WHERE status = 'running' ORDER BY run_id DESC LIMIT 1
"""


def lock_holder(conn: psycopg.Connection) -> str:
    """Who holds the backfill lock, in words."""
    backend = conn.execute(_HOLDER, {"hi": LOCK_KEY >> 32, "lo": LOCK_KEY & 0xFFFFFFFF}).fetchone()
    run = conn.execute(_RUNNING).fetchone()  # None: the holder has no running row
    parts = []
    if run is not None:
        run_id, pid, host, started, _, done, total, quiet = run
        parts.append(
            f"run {run_id} (pid {pid} on {host}, started {started:%Y-%m-%d %H:%M:%S %Z}, "
            f"{done}/{total} epochs, last heartbeat {quiet}s ago)"
        )
    if backend is not None:
        pid, app, addr, _ = backend
        parts.append(
            f"server backend pid {pid} ({app or 'no application name'}"
            f"{', from ' + addr if addr else ''})"
        )
    return "; ".join(parts) or "an unknown session"


class Backfill:
    """One run. Use `run_backfill()`; the class keeps the connections and counters together."""

    def __init__(self, engine: Engine, options: Options, progress: ProgressCallback | None) -> None:
        if options.batch_size < 1 or options.workers < 1:
            raise ValueError("batch size and workers must be at least 1")
        self.url = db.libpq_url(engine)
        self.options = options
        self.progress = progress
        self.summary = Summary(run_id=None, status="nothing-to-do")
        self.lock_conn: psycopg.Connection | None = None
        self.writer: psycopg.Connection | None = None
        self.pool: Pool | None = None
        self.started = time.perf_counter()
        self.last_heartbeat = 0.0
        self.notices: list[str] = []
        self.on_notice: Callable[[str], None] | None = None

    # -- lock and run row --

    def _acquire(self) -> None:
        conn = self.lock_conn = connect(self.url, "coordinator", autocommit=True)
        got = db.one(conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)))[0]
        if not got:
            holder = lock_holder(conn)
            if not self.options.wait:
                raise LockBusy(
                    f"another backfill is running: {holder}. "
                    "Wait for it with --wait, or stop it first."
                )
            self._notice(f"waiting for the running backfill to finish: {holder}")
            conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        # Anything a killed run's workers were committing is committed or gone after this.
        conn.execute("SELECT pg_advisory_lock(%s)", (BARRIER_KEY,))
        conn.execute("SELECT pg_advisory_unlock(%s)", (BARRIER_KEY,))

    def _notice(self, text: str) -> None:
        self.notices.append(text)
        if self.on_notice is not None:
            self.on_notice(text)

    def _start_run(self, total: int) -> int:
        conn = self.lock_conn
        assert conn is not None
        conn.execute(
            "UPDATE backfill_runs SET status = 'interrupted', "
            "finished_at = coalesce(finished_at, heartbeat_at), "
            "error = coalesce(error, 'the process ended without finishing its run') "
            "WHERE status = 'running'"
        )
        lo, hi = self._range()
        run_id = db.one(
            conn.execute(
                "INSERT INTO backfill_runs (status, epoch_from, epoch_to, epochs_total, pid, host, "
                "options, rows_written) VALUES ('running', %s, %s, %s, %s, %s, %s, %s) "
                "RETURNING run_id",
                (
                    self.options.epoch_from,
                    self.options.epoch_to,
                    total,
                    os.getpid(),
                    socket.gethostname(),
                    orjson.dumps(self.options.as_json()).decode(),
                    orjson.dumps(dict.fromkeys(TABLES, 0)).decode(),
                ),
            )
        )[0]
        conn.execute(
            "SELECT set_config('application_name', %s, false)",
            (f"shareprice backfill run {run_id}",),
        )
        self.summary.run_id = run_id
        self.summary.status = "running"
        self.summary.epochs_total = total
        self.last_heartbeat = time.monotonic()
        return run_id

    def _finish_run(self, status: str, error: str | None) -> None:
        self.summary.status = status
        if self.summary.run_id is None or self.lock_conn is None:
            return
        self.lock_conn.execute(
            "UPDATE backfill_runs SET status = %s, error = %s, finished_at = clock_timestamp(), "
            "heartbeat_at = clock_timestamp() WHERE run_id = %s",
            (status, error, self.summary.run_id),
        )

    def _heartbeat(self, *, force: bool = False) -> None:
        if self.summary.run_id is None or self.lock_conn is None:
            return
        if not force and time.monotonic() - self.last_heartbeat < HEARTBEAT_SECONDS:
            return
        self.lock_conn.execute(
            "UPDATE backfill_runs SET heartbeat_at = clock_timestamp(), epochs_total = %s "
            "WHERE run_id = %s",
            (self.summary.epochs_total, self.summary.run_id),
        )
        self.last_heartbeat = time.monotonic()

    # -- pending work --

    def _range(self) -> tuple[int, int]:
        lo = self.options.epoch_from if self.options.epoch_from is not None else 0
        hi = self.options.epoch_to if self.options.epoch_to is not None else 2**31 - 1
        return lo, hi

    def _pending(self) -> list[int]:
        assert self.lock_conn is not None
        lo, hi = self._range()
        rows = self.lock_conn.execute(
            _PENDING, {"lo": lo, "hi": hi, "retry": self.options.retry_failed}
        ).fetchall()
        return [r[0] for r in rows]

    def _known_bad(self) -> int:
        assert self.lock_conn is not None
        lo, hi = self._range()
        return int(db.one(self.lock_conn.execute(_KNOWN_BAD, {"lo": lo, "hi": hi}))[0])

    def _batches(self, epochs: list[int]) -> Iterator[list[int]]:
        size = self.options.batch_size
        for i in range(0, len(epochs), size):
            yield epochs[i : i + size]

    # -- processing --

    def _on_result(self, result: BatchResult) -> None:
        self.summary.add(result)
        self.last_heartbeat = time.monotonic()  # the batch updated heartbeat_at
        if self.progress is not None:
            self.progress(self.summary, result)

    def _process(self, epochs: list[int], interrupt: Interrupt, *, in_process: bool) -> None:
        run_id = self.summary.run_id
        assert run_id is not None
        batches = self._batches(epochs)
        if not in_process and self.options.workers > 1:
            if self.pool is None:
                self.pool = Pool(self.url, run_id, self.options.workers)
            self.pool.run(batches, self._on_result, interrupt)
            return
        if self.writer is None:
            self.writer = connect(self.url, f"run {run_id} writer")
            prepare_connection(self.writer)
        for batch in batches:
            if interrupt.requested:
                return
            self._on_result(process_batch(self.writer, batch, run_id))

    def _fix_up(self, interrupt: Interrupt) -> None:
        """Redo what the pass left pending (see FIXUP_PASSES), so that one run ends with the
        tables a sequential run writes; bounded, known-bad epochs excluded as always."""
        for _ in range(FIXUP_PASSES):
            if interrupt.requested:
                return
            again = self._pending()
            if not again:
                return
            self.summary.epochs_total += len(again)
            self._heartbeat(force=True)
            if self.progress is not None:
                self.progress(self.summary, None)
            self._process(again, interrupt, in_process=len(again) <= self.options.batch_size)

    def _follow(self, interrupt: Interrupt) -> None:
        conn = self.lock_conn
        assert conn is not None
        conn.execute("LISTEN epochs_changed")
        previous: list[int] = []
        while not interrupt.requested:
            pending = self._pending()
            # The same epochs again right after processing them (e.g. E whose E-1 outside the
            # run's range is stale): wait for a change instead of spinning on them.
            if pending and pending != previous:
                previous = pending
                self.summary.epochs_total += len(pending)
                self._heartbeat(force=True)
                if self.progress is not None:
                    self.progress(self.summary, None)
                # Few epochs at a time: no process start-up on the path to "within 2 s".
                self._process(
                    pending, interrupt, in_process=len(pending) <= self.options.batch_size
                )
                continue
            # Sleep until a notification or the polling interval, whichever comes first.
            for _ in conn.notifies(timeout=self.options.poll_seconds, stop_after=1):
                previous = []  # something changed: whatever is pending is worth a look
            self._heartbeat()

    def run(self) -> Summary:
        interrupt = Interrupt()
        error: BaseException | None = None
        with interrupt:
            try:
                self._acquire()
                pending = self._pending()
                self.summary.known_bad = 0 if self.options.retry_failed else self._known_bad()
                if not pending and not self.options.follow:
                    self.summary.seconds = time.perf_counter() - self.started
                    self._release()
                    return self.summary
                self._start_run(len(pending))
                if self.progress is not None:
                    self.progress(self.summary, None)
                if pending:
                    # One batch's worth: starting worker processes would cost more than it saves.
                    small = len(pending) <= self.options.batch_size
                    self._process(pending, interrupt, in_process=small)
                    self._fix_up(interrupt)
                if self.options.follow and not interrupt.requested:
                    self._follow(interrupt)
            except KeyboardInterrupt:
                interrupt.signal = interrupt.signal or signal.SIGINT
            except psycopg.OperationalError as exc:
                error = ConnectionLost(
                    f"database connection lost during run {self.summary.run_id}: {error_line(exc)}"
                )
            except BaseException as exc:
                error = exc
            finally:
                self._close_workers(hard=error is not None or interrupt.signal is not None)
        self.summary.seconds = time.perf_counter() - self.started
        return self._conclude(interrupt, error)

    def _close_workers(self, *, hard: bool) -> None:
        if self.pool is not None:
            with contextlib.suppress(Exception):
                self.pool.close(hard=hard)
            self.pool = None
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None

    def _conclude(self, interrupt: Interrupt, error: BaseException | None) -> Summary:
        try:
            if error is not None:
                message = (
                    str(error) if isinstance(error, BackfillError) else describe_failure(error)
                )
                if isinstance(error, LockBusy):
                    raise error
                self._mark_after_error(
                    "interrupted" if isinstance(error, ConnectionLost) else "failed", message
                )
                if isinstance(error, BackfillError):
                    raise error
                raise BackfillError(message) from error
            if interrupt.signal is not None:
                name = signal.Signals(interrupt.signal).name
                self._finish_run("interrupted", f"stopped by {name}")
            elif self.summary.run_id is not None:
                failed = self.summary.epochs_failed
                self._finish_run(
                    "failed" if failed else "succeeded",
                    f"{failed} epochs could not be normalized (see backfill_errors)"
                    if failed
                    else None,
                )
            return self.summary
        finally:
            self._release()

    def _release(self) -> None:
        """Close the lock's connection: that releases the lock."""
        if self.lock_conn is not None:
            with contextlib.suppress(Exception):
                self.lock_conn.close()
            self.lock_conn = None

    def _mark_after_error(self, status: str, message: str) -> None:
        """Record how the run ended, on a fresh connection if the lock's one is gone."""
        self.summary.status = status
        if self.summary.run_id is None:
            return
        for attempt in ("lock", "fresh"):
            try:
                if attempt == "lock":
                    assert self.lock_conn is not None and not self.lock_conn.closed
                    self._finish_run(status, message)
                else:
                    with connect(self.url, "coordinator", autocommit=True) as conn:
                        conn.execute(
                            "UPDATE backfill_runs SET status = %s, error = %s, "
                            "finished_at = clock_timestamp() "
                            "WHERE run_id = %s AND status = 'running'",
                            (status, message, self.summary.run_id),
                        )
                return
            except Exception:
                continue


def run_backfill(
    engine: Engine,
    options: Options | None = None,
    progress: ProgressCallback | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Summary:
    """Normalize pending epochs (see the module docstring). Raises LockBusy, ConnectionLost or
    BackfillError when the run could not do its job; bad documents do not raise: they are in
    the summary (and backfill_errors)."""
    job = Backfill(engine, options or Options(), progress)
    job.on_notice = on_notice
    return job.run()


def pending_count(engine: Engine) -> int:
    """Epochs not normalized at their current revision, or whose positions were compared with
    a base the tables no longer hold (documents known bad included)."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(_PENDING_COUNT).scalar_one())
