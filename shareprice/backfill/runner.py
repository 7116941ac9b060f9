"""`shareprice backfill`: raw epochs to the normalized tables, fast, resumable and observable.

How a run goes:

1. Take a session advisory lock (one backfill at a time per database). A second run learns who
   holds it (run id, pid, host from backfill_runs; the backend from pg_locks) and stops, or
   waits with `wait=True`.
2. Wait for any batch transaction a killed predecessor's workers may still be committing (they
   hold a shared barrier lock per transaction), then mark runs left 'running' as interrupted:
   holding the lock proves their process is gone.
3. Pending epochs: no epoch_normalizations row, or a raw revision that moved on; skipping
   documents the parser rejected at their current revision (unless `retry_failed`).
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
import ctypes
import multiprocessing as mp
import os
import queue
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
import psycopg
from sqlalchemy.engine import Engine

from shareprice.backfill.reader import configure, fetch, load_document, parse_batch, prefetch
from shareprice.backfill.writer import (
    FLUSH_ROWS,
    BatchRows,
    Failure,
    begin_batch,
    finish_batch,
    prepare_connection,
    write_batch,
)
from shareprice.store import config, db

#: Session advisory lock held by the running backfill (pg_advisory_lock(bigint) keys).
LOCK_KEY = 0x5E4E_0401
#: Shared by every batch transaction, taken exclusively by a new run before it looks at what
#: is pending: nothing of an earlier run can still be committing after that.
BARRIER_KEY = 0x5E4E_0402

DEFAULT_BATCH_SIZE = 50
DEFAULT_WORKERS = 2
HEARTBEAT_SECONDS = 5.0

TABLES = (
    "operator_share_prices",
    "operator_shares",
    "operator_chain_share_prices",
    "operators_metadata",
)


class BackfillError(RuntimeError):
    """A run that could not do its job; the message is safe to print (no secrets)."""


class LockBusy(BackfillError):
    """Another backfill holds the lock; the message says which."""


class ConnectionLost(BackfillError):
    """The database went away during the run."""


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


# --- connections ---------------------------------------------------------------------------------


def _connect(url: str, role: str, *, autocommit: bool = False) -> psycopg.Connection:
    try:
        conn = psycopg.connect(
            url,
            autocommit=autocommit,
            connect_timeout=5,
            application_name=f"shareprice backfill {role}"[:63],
            client_encoding="utf8",
        )
    except psycopg.OperationalError as exc:
        raise ConnectionLost(f"cannot connect to the database: {_pg_message(exc)}") from None
    configure(conn)
    return conn


def _pg_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return config.mask_secrets(text[0] if text else type(exc).__name__)


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
                rows = prefetch(fetch(conn, epochs))
                for parsed in parse_batch(rows, partial(load_document, conn), batch.add):
                    if parsed.error is not None:
                        batch.fail(parsed.raw, str(parsed.error))
                    elif len(batch.prices) >= FLUSH_ROWS:
                        batch.flush(conn)  # between the prefetching thread's FETCHes
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
    reason = f"epoch {epoch}: the database refused its rows: {_pg_message(exc)}"
    with conn.transaction():
        row = conn.execute(_FETCH_REVISIONS, ([epoch],)).fetchone()
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


# --- worker processes ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the coordinator dies (kill -9 included), so no orphan
    keeps writing after the next run took over. Elsewhere the barrier lock still protects."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(url: str, run_id: int, worker: int, tasks: Any, results: Any, parent: int) -> None:
    _die_with_parent()
    # Ctrl-C reaches the whole process group: the coordinator decides, the batch in flight ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if os.getppid() != parent:
        return
    try:
        conn = _connect(url, f"run {run_id} worker {worker}")
        prepare_connection(conn)
    except Exception as exc:
        results.put(("error", _describe(exc)))
        return
    with conn:
        while True:
            epochs = tasks.get()
            if epochs is None or os.getppid() != parent:
                return
            try:
                results.put(("ok", process_batch(conn, epochs, run_id)))
            except Exception as exc:
                results.put(("error", _describe(exc)))
                return


def _describe(exc: BaseException) -> str:
    if isinstance(exc, psycopg.OperationalError | ConnectionLost):
        return f"database connection lost: {_pg_message(exc)}"
    if isinstance(exc, BackfillError):
        return str(exc)
    return config.mask_secrets(f"{type(exc).__name__}: {exc}")


class _Interrupt:
    """SIGINT/SIGTERM: the first asks to stop after the batches in flight, the second stops."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None


class _Pool:
    """N spawned worker processes fed batches through a queue; results come back per batch."""

    def __init__(self, url: str, run_id: int, workers: int) -> None:
        ctx = mp.get_context("spawn")
        self.tasks = ctx.Queue()
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(
                target=_worker_main,
                args=(url, run_id, i, self.tasks, self.results, os.getpid()),
                daemon=True,
                name=f"backfill-worker-{i}",
            )
            for i in range(workers)
        ]
        for proc in self.procs:
            proc.start()

    def run(
        self,
        batches: Iterator[list[int]],
        on_result: Callable[[BatchResult], None],
        interrupt: _Interrupt,
    ) -> None:
        in_flight = 0
        limit = 2 * len(self.procs)
        exhausted = False
        while True:
            while not exhausted and in_flight < limit and not interrupt.requested:
                task = next(batches, None)
                if task is None:
                    exhausted = True
                    break
                self.tasks.put(task)
                in_flight += 1
            if in_flight == 0:
                return
            try:
                kind, payload = self.results.get(timeout=0.5)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise BackfillError(
                        f"worker {dead[0].name} ended unexpectedly (exit code {dead[0].exitcode})"
                    ) from None
                continue
            in_flight -= 1
            if kind == "error":
                if payload.startswith("database connection lost"):
                    raise ConnectionLost(payload)
                raise BackfillError(f"a worker failed: {payload}")
            on_result(payload)

    def close(self, *, hard: bool = False) -> None:
        if not hard:
            for _ in self.procs:
                self.tasks.put(None)
            deadline = time.monotonic() + 10
            for proc in self.procs:
                proc.join(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self.tasks.close()
        self.results.close()


# --- the run ---------------------------------------------------------------------------------------

_PENDING = """
SELECT e.epoch
FROM epochs AS e
LEFT JOIN epoch_normalizations AS n ON n.epoch = e.epoch
WHERE (n.epoch IS NULL OR n.revision <> e.revision)
  AND e.epoch >= %(lo)s AND e.epoch <= %(hi)s
  AND (%(retry)s OR NOT EXISTS (
        SELECT 1 FROM backfill_errors AS b
        WHERE b.epoch = e.epoch AND b.revision = e.revision))
ORDER BY e.epoch
"""

_KNOWN_BAD = """
SELECT count(*) FROM epochs AS e
LEFT JOIN epoch_normalizations AS n ON n.epoch = e.epoch
WHERE (n.epoch IS NULL OR n.revision <> e.revision)
  AND e.epoch >= %(lo)s AND e.epoch <= %(hi)s
  AND EXISTS (SELECT 1 FROM backfill_errors AS b
              WHERE b.epoch = e.epoch AND b.revision = e.revision)
"""

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
    run = conn.execute(_RUNNING).fetchone()
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
        self.pool: _Pool | None = None
        self.started = time.perf_counter()
        self.last_heartbeat = 0.0
        self.notices: list[str] = []
        self.on_notice: Callable[[str], None] | None = None

    # -- lock and run row --

    def _acquire(self) -> None:
        conn = self.lock_conn = _connect(self.url, "coordinator", autocommit=True)
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
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
        run_id = conn.execute(
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
        ).fetchone()[0]
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
        return int(self.lock_conn.execute(_KNOWN_BAD, {"lo": lo, "hi": hi}).fetchone()[0])

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

    def _process(self, epochs: list[int], interrupt: _Interrupt, *, in_process: bool) -> None:
        run_id = self.summary.run_id
        assert run_id is not None
        batches = self._batches(epochs)
        if not in_process and self.options.workers > 1:
            if self.pool is None:
                self.pool = _Pool(self.url, run_id, self.options.workers)
            self.pool.run(batches, self._on_result, interrupt)
            return
        if self.writer is None:
            self.writer = _connect(self.url, f"run {run_id} writer")
            prepare_connection(self.writer)
        for batch in batches:
            if interrupt.requested:
                return
            self._on_result(process_batch(self.writer, batch, run_id))

    def _follow(self, interrupt: _Interrupt) -> None:
        conn = self.lock_conn
        assert conn is not None
        conn.execute("LISTEN epochs_changed")
        while not interrupt.requested:
            pending = self._pending()
            if pending:
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
                pass
            self._heartbeat()

    def run(self) -> Summary:
        interrupt = _Interrupt()
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
                if self.options.follow and not interrupt.requested:
                    self._follow(interrupt)
            except KeyboardInterrupt:
                interrupt.signal = interrupt.signal or signal.SIGINT
            except psycopg.OperationalError as exc:
                error = ConnectionLost(
                    f"database connection lost during run {self.summary.run_id}: {_pg_message(exc)}"
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

    def _conclude(self, interrupt: _Interrupt, error: BaseException | None) -> Summary:
        try:
            if error is not None:
                message = str(error) if isinstance(error, BackfillError) else _describe(error)
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
                    with _connect(self.url, "coordinator", autocommit=True) as conn:
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
    """Epochs not normalized at their current revision (documents known bad included)."""
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM epochs AS e LEFT JOIN epoch_normalizations AS n "
                "ON n.epoch = e.epoch WHERE n.epoch IS NULL OR n.revision <> e.revision"
            ).scalar_one()
        )
