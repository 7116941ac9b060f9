"""Running the checks on one snapshot, and keeping runs for the history.

All checks of a run read one snapshot (REPEATABLE READ, READ ONLY), so a backfill running at the
same time cannot make two checks disagree; a check that errors is reported as failed, not raised,
so one broken check never hides the others' results. Runs are stored in `integrity_runs` /
`integrity_check_results` (sql/030) so a regression shows up against the history; a read-only
role (the dashboard's reader) skips saving with a reason instead of failing the run.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from psycopg import sql as psql
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

import shareprice.checks.definitions  # noqa: F401 - importing it registers the checks
import shareprice.checks.digest_checks  # noqa: F401 - and the change marks' own check
import shareprice.checks.nominator_checks  # noqa: F401 - and the nominator positions' checks
from shareprice.checks import changes
from shareprice.checks.registry import (
    CHECKS,
    MAX_EXAMPLES,
    STATUS_ORDER,
    Check,
    CheckResult,
    EpochMapper,
    Mode,
    Outcome,
    Scope,
    Status,
    T,
    select_checks,
    serial_mapper,
)
from shareprice.errors import ShareError, error_line
from shareprice.store import db

#: SQLSTATEs that mean "this role may not write": insufficient_privilege, read_only_sql_transaction.
READ_ONLY_SQLSTATES = frozenset({"42501", "25006"})


@dataclass(frozen=True)
class Verified:
    """An epoch every raw-reading check found correct, with what it was found correct at."""

    epoch: int
    revision: int
    rows_digest: str


@dataclass(frozen=True)
class CheckRun:
    started_at: datetime
    seconds: float
    scope: Scope
    results: list[CheckResult]
    only: list[str] | None
    #: Epochs to record in epoch_verifications when the run is saved.
    verified: list[Verified] = field(default_factory=list)
    #: Why no epoch counts as verified (e.g. `--only` left raw checks out), else "".
    verification_note: str = ""
    #: Processes the raw-reading checks ran on (1: the run's own connection).
    workers: int = 1
    #: A save records the outcome of every epoch read: verified, or its verification removed.
    records_verifications: bool = False
    #: The run's snapshot and the epochs whose change marks (sql/080) a save forgets; every
    #: mark it saw when settles_everything (see shareprice.checks.changes).
    snapshot: str = ""
    settled_marks: list[int] = field(default_factory=list)
    settles_everything: bool = False

    @property
    def status(self) -> Status:
        return max((r.status for r in self.results), key=STATUS_ORDER.__getitem__, default="pass")

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "seconds": round(self.seconds, 4),
            "scope": self.scope.to_json(),
            "verified_epochs": len(self.verified),
            "verification_note": self.verification_note,
            "workers": self.workers,
            "checks": [r.to_json() for r in self.results],
        }


def sample_epochs(all_epochs: Sequence[int], size: int, seed: int) -> list[int]:
    """A reproducible sample: the same seed and data give the same epochs."""
    if size >= len(all_epochs):
        return sorted(all_epochs)
    return sorted(random.Random(seed).sample(list(all_epochs), size))


#: Fewer epochs than this are read on the run's own connection even when workers are allowed:
#: starting processes (spawn, imports, a connection each) costs about a second.
PARALLEL_FROM_EPOCHS = 200

#: Progress of the raw-reading checks: (epochs done, epochs to do) over all of them.
ProgressCallback = Callable[[int, int], None]


def run_checks(
    engine: Engine,
    *,
    only: Sequence[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    full: bool = False,
    workers: int = 1,
    parallel_from: int = PARALLEL_FROM_EPOCHS,
    statement_timeout_s: float | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    on_start: Callable[[Check], None] | None = None,
    on_progress: ProgressCallback | None = None,
) -> CheckRun:
    """Run the checks on one consistent snapshot; a check that errors is reported as failed.

    Which epochs the raw-reading checks read: `sample` a seeded sample of that many, `full`
    every normalized epoch, else (incremental) those whose raw revision or normalized rows
    changed since their last verification. `workers` > 1 spreads the raw checks' chunks over
    that many processes, all reading the run's snapshot. The checks that do not read raw JSON
    always cover everything.
    """
    selected = select_checks(only)
    if sample is not None and sample <= 0:
        raise ValueError("--sample must be a positive number of epochs")
    if sample is not None and full:
        raise ValueError("--sample and --full exclude each other: a sample is not every epoch")
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    started_at = datetime.now().astimezone()
    started = time.perf_counter()
    results: list[CheckResult] = []
    raw_checks = [c for c in selected if c.reads_raw]
    # Raw-reading and per-epoch checks cover the run's epochs; an epoch counts as verified only
    # when every one of them passed it.
    scoped_checks = [c for c in selected if c.scoped]
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(engine.connect())
        conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _custom_plans(conn)
        if statement_timeout_s:
            conn.execute(
                text("SELECT set_config('statement_timeout', :ms, true)"),
                {"ms": str(int(statement_timeout_s * 1000))},
            )
        raw_epochs = int(conn.execute(text("SELECT count(*) FROM epochs")).scalar_one())
        changed = changes.read(conn)
        normalized_epochs = changed.epochs
        chosen = sample_epochs(normalized_epochs, sample, seed) if sample else None
        mode: Mode
        if chosen is not None:
            mode, epochs = "sample", chosen
        elif full:
            mode, epochs = "full", normalized_epochs
        else:
            mode = "incremental"
        if scoped_checks:
            # The digests this run records (every epoch it reads) or decides with (the
            # candidates of an incremental run): see shareprice.checks.changes.
            changed.compute_digests(
                conn,
                None if mode == "full" else chosen if mode == "sample" else changed.candidates(),
            )
        if mode == "incremental":
            epochs = [e for e in normalized_epochs if not changed.unchanged(e)]
        progress = _Progress(on_progress, len(epochs) * len(raw_checks))
        mapper = serial_mapper(conn)
        used_workers = 1
        # What the chunked checks walk: the raw checks the run's epochs, the nominator walk
        # (scoped) every epoch with positions in full and sample runs.
        walked = len(epochs) if mode == "incremental" else len(normalized_epochs)
        if workers > 1 and walked >= parallel_from and (raw_checks or scoped_checks):
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            pool = stack.enter_context(
                ProcessPoolExecutor(
                    max_workers=workers,
                    mp_context=mp.get_context("spawn"),
                    initializer=_worker_start,
                    initargs=(
                        os.getpid(),
                        db.libpq_url(engine),
                        str(snapshot),
                        int(statement_timeout_s * 1000) if statement_timeout_s else 0,
                    ),
                )
            )
            mapper = _pool_mapper(pool)
            used_workers = workers
        scope = Scope(
            raw_epochs=raw_epochs,
            normalized_epochs=len(normalized_epochs),
            sample=chosen,
            sample_size=sample,
            seed=seed,
            mode=mode,
            epochs=epochs,
            mapper=progress.wrap(mapper),
            cache={"changes": changed},
        )
        for item in selected:
            if on_start:
                on_start(item)
            began = time.perf_counter()
            conn.exec_driver_sql("SAVEPOINT one_check")
            try:
                outcome = item.func(conn, scope)
                conn.exec_driver_sql("RELEASE SAVEPOINT one_check")
            except sa.exc.DBAPIError as exc:
                conn.exec_driver_sql("ROLLBACK TO SAVEPOINT one_check")
                outcome = Outcome("fail", 0, [], f"could not run: {error_line(exc)}")
            except ShareError as exc:  # e.g. a worker lost its connection
                conn.exec_driver_sql("ROLLBACK TO SAVEPOINT one_check")
                outcome = Outcome("fail", 0, [], f"could not run: {exc}")
            result = CheckResult(
                name=item.name,
                proves=item.proves,
                status=outcome.status,
                count=outcome.count,
                examples=outcome.examples[:MAX_EXAMPLES],
                seconds=time.perf_counter() - began,
                note=outcome.note,
            )
            results.append(result)
            if item.reads_raw:
                progress.check_done()
            if item.scoped:
                if outcome.bad_epochs is None:
                    progress.unverifiable(item.name)
                else:
                    progress.bad.update(outcome.bad_epochs)
            if on_result:
                on_result(result)
        conn.exec_driver_sql("COMMIT")
    verified: list[Verified] = []
    note = ""
    missing = [c.name for c in CHECKS if c.scoped and c not in scoped_checks]
    if not scoped_checks:
        pass
    elif missing:
        note = f"no epoch recorded as verified: {', '.join(missing)} did not run"
    elif progress.unverifiable_checks:
        note = (
            "no epoch recorded as verified: "
            f"{', '.join(progress.unverifiable_checks)} could not say which epochs are at fault"
        )
    else:
        verified = [
            Verified(e, changed.states[e].revision, changed.digests[e])
            for e in epochs
            if e not in progress.bad
        ]
    records = bool(scoped_checks) and not note
    settled = changed.settled(set(epochs), records) if scoped_checks else []
    return CheckRun(
        started_at=started_at,
        seconds=time.perf_counter() - started,
        scope=scope,
        results=results,
        only=list(only) if only else None,
        verified=verified,
        verification_note=note,
        workers=used_workers,
        records_verifications=records,
        snapshot=changed.snapshot,
        settled_marks=settled,
        settles_everything=bool(scoped_checks) and len(settled) == len(normalized_epochs),
    )


def _custom_plans(conn: Connection) -> None:
    """Plan every statement of this transaction for its actual values. A worker runs the same
    statements chunk after chunk; after five runs the driver prepares them and PostgreSQL may
    switch to a generic plan, which for the positions walk's jump (bounds unknown) was a scan
    of every change row: 30 s per chunk instead of 0.05 s at seed scale."""
    conn.execute(text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"))


class _Progress:
    """Counts the raw checks' epochs as their chunks come back, for one progress callback."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback = callback
        self.total = total
        self.done = 0
        self.finished_checks = 0
        self.per_check = 0
        self.bad: set[int] = set()
        self.unverifiable_checks: list[str] = []

    def wrap(self, mapper: EpochMapper) -> EpochMapper:
        def run(
            func: Callable[[Connection, list[int]], T], epochs: Sequence[int], chunk: int
        ) -> Iterator[T]:
            self.per_check = len(epochs)
            for start, result in zip(
                range(0, len(epochs), chunk), mapper(func, epochs, chunk), strict=True
            ):
                self.done = min(
                    self.finished_checks * self.per_check + start + chunk,
                    (self.finished_checks + 1) * self.per_check,
                )
                if self.callback:
                    self.callback(self.done, self.total)
                yield result

        return run

    def check_done(self) -> None:
        self.finished_checks += 1

    def unverifiable(self, name: str) -> None:
        self.unverifiable_checks.append(name)


# --- worker processes for --full: each holds one connection inside the run's snapshot ---------

_worker_conn: Connection | None = None


#: prctl(2) option: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Make the kernel SIGKILL this worker when the coordinator dies, however it dies (Ctrl-C,
    SIGTERM, SIGKILL): ProcessPoolExecutor only reaps its workers on an orderly exit, and an
    orphaned worker would hold its connection idle in transaction on the exported snapshot.
    Linux only (prctl); elsewhere workers still exit when the pool's pipe closes on their next
    read. If the parent already died before the prctl took effect, exit now."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _worker_start(parent_pid: int, conninfo: str, snapshot: str, timeout_ms: int) -> None:
    """Open this worker's connection and enter the coordinator's exported snapshot, so every
    chunk reads exactly what the coordinator's checks read."""
    global _worker_conn
    _die_with_parent(parent_pid)
    engine = sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: db.connect(conninfo, application_name="shareprice check worker"),
        poolclass=NullPool,
    )
    conn = engine.connect()
    conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute(psql.SQL("SET TRANSACTION SNAPSHOT {}").format(psql.Literal(snapshot)))
    _custom_plans(conn)
    if timeout_ms:
        conn.execute(
            text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(timeout_ms)}
        )
    _worker_conn = conn


def _worker_call(func: Callable[[Connection, list[int]], T], chunk: list[int]) -> T:
    if _worker_conn is None:
        raise ShareError("check worker has no connection")
    # A failed statement must not abort the worker's snapshot transaction for the next chunk;
    # driver errors do not pickle reliably, so the coordinator gets their masked first line.
    _worker_conn.exec_driver_sql("SAVEPOINT chunk")
    try:
        result = func(_worker_conn, chunk)
    except sa.exc.DBAPIError as exc:
        _worker_conn.exec_driver_sql("ROLLBACK TO SAVEPOINT chunk")
        raise ShareError(error_line(exc)) from None
    _worker_conn.exec_driver_sql("RELEASE SAVEPOINT chunk")
    return result


def _pool_mapper(pool: ProcessPoolExecutor) -> EpochMapper:
    def run(
        func: Callable[[Connection, list[int]], T], epochs: Sequence[int], chunk: int
    ) -> Iterator[T]:
        chunks = [list(epochs[i : i + chunk]) for i in range(0, len(epochs), chunk)]
        futures = [pool.submit(_worker_call, func, c) for c in chunks]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()

    return run


# ----------------------------------------------------------------------------- persistence


@dataclass(frozen=True)
class SaveResult:
    run_id: int | None
    #: Why nothing was saved (read-only role), else "".
    message: str = ""

    @property
    def saved(self) -> bool:
        return self.run_id is not None


def is_read_only_error(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in READ_ONLY_SQLSTATES


def save_run(engine: Engine, run: CheckRun, source: str = "cli") -> SaveResult:
    """Keep the run in integrity_runs; on a read-only role, skip with a reason instead of failing."""
    import orjson

    try:
        with engine.begin() as conn:
            run_id = conn.execute(
                text(
                    """
                    INSERT INTO integrity_runs
                        (started_at, seconds, status, sample_size, sample_seed, only_checks,
                         source, scale)
                    VALUES (:started_at, :seconds, :status, :sample_size, :seed, :only,
                            :source, CAST(:scale AS jsonb))
                    RETURNING run_id
                    """
                ),
                {
                    "started_at": run.started_at,
                    "seconds": run.seconds,
                    "status": run.status,
                    "sample_size": run.scope.sample_size,
                    "seed": run.scope.seed if run.scope.sample_size else None,
                    "only": run.only,
                    "source": source,
                    "scale": orjson.dumps(
                        {
                            "raw_epochs": run.scope.raw_epochs,
                            "normalized_epochs": run.scope.normalized_epochs,
                            "mode": run.scope.mode,
                            "raw_checked_epochs": run.scope.to_json()["raw_checked_epochs"],
                            "verified_epochs": len(run.verified),
                        }
                    ).decode(),
                },
            ).scalar_one()
            conn.execute(
                text(
                    """
                    INSERT INTO integrity_check_results
                        (run_id, position, name, status, count, examples, seconds, note)
                    VALUES (:run_id, :position, :name, :status, :count,
                            CAST(:examples AS jsonb), :seconds, :note)
                    """
                ),
                [
                    {
                        "run_id": run_id,
                        "position": i,
                        "name": r.name,
                        "status": r.status,
                        "count": r.count,
                        "examples": orjson.dumps(r.examples).decode(),
                        "seconds": r.seconds,
                        "note": r.note,
                    }
                    for i, r in enumerate(run.results)
                ],
            )
            if run.records_verifications:
                _record_verifications(conn, run, int(run_id))
            if run.snapshot:
                changes.forget_settled_marks(
                    conn, run.snapshot, run.settled_marks, run.settles_everything
                )
        return SaveResult(int(run_id))
    except sa.exc.DBAPIError as exc:
        if is_read_only_error(exc):
            return SaveResult(
                None,
                "not saved: this connection may not write (read-only role), so the run is not "
                "in the history. Run `shareprice check` with the main database URL to record it.",
            )
        raise


def _record_verifications(conn: Connection, run: CheckRun, run_id: int) -> None:
    """Upsert the run's verified epochs; epochs of its scope found at fault lose theirs."""
    if run.verified:
        conn.execute(
            text(
                """
            INSERT INTO epoch_verifications (epoch, revision, rows_digest, verified_at, run_id)
            SELECT v.epoch, v.revision, v.rows_digest, :at, :run_id
            FROM unnest(CAST(:epochs AS integer[]), CAST(:revisions AS bigint[]),
                        CAST(:digests AS text[])) AS v(epoch, revision, rows_digest)
            ON CONFLICT (epoch) DO UPDATE
               SET revision = EXCLUDED.revision, rows_digest = EXCLUDED.rows_digest,
                   verified_at = EXCLUDED.verified_at, run_id = EXCLUDED.run_id
            """
            ),
            {
                "epochs": [v.epoch for v in run.verified],
                "revisions": [v.revision for v in run.verified],
                "digests": [v.rows_digest for v in run.verified],
                "at": run.started_at,
                "run_id": run_id,
            },
        )
    verified = {v.epoch for v in run.verified}
    at_fault = [e for e in (run.scope.epochs or []) if e not in verified]
    if at_fault:
        conn.execute(
            text("DELETE FROM epoch_verifications WHERE epoch = ANY(CAST(:epochs AS integer[]))"),
            {"epochs": at_fault},
        )


@dataclass(frozen=True)
class VerificationSummary:
    """What epoch_verifications holds: how many epochs have a recorded verification, and when
    the latest was made (a cheap read for the integrity page: no digests computed)."""

    epochs: int
    latest: datetime | None


def verification_summary(engine: Engine) -> VerificationSummary:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT count(*) AS epochs, max(verified_at) AS latest FROM epoch_verifications")
        ).one()
    return VerificationSummary(int(row.epochs), row.latest)


@dataclass(frozen=True)
class HistoryRun:
    run_id: int
    started_at: datetime
    seconds: float
    status: str
    sample_size: int | None
    source: str
    #: name -> (status, count, seconds)
    checks: dict[str, tuple[str, int, float]]
    #: full / incremental / sample ("" for runs recorded before incremental checks).
    mode: str = ""
    #: Epochs the raw-reading checks read (None: not recorded).
    raw_checked_epochs: int | None = None

    @property
    def scope_label(self) -> str:
        if self.sample_size:
            return f"sample {self.sample_size}"
        if self.mode == "incremental":
            return f"incremental ({self.raw_checked_epochs or 0:,} re-read)"
        return "all"


def history(engine: Engine, limit: int = 50) -> list[HistoryRun]:
    """The latest runs, newest first, with each check's status, count and time."""
    with engine.connect() as conn:
        runs = conn.execute(
            text(
                "SELECT run_id, started_at, seconds, status, sample_size, source, "
                "scale ->> 'mode' AS mode, "
                "CAST(scale ->> 'raw_checked_epochs' AS integer) AS raw_checked "
                "FROM integrity_runs ORDER BY run_id DESC LIMIT :limit"
            ),
            {"limit": limit},
        ).all()
        if not runs:
            return []
        per_run: dict[int, dict[str, tuple[str, int, float]]] = {r.run_id: {} for r in runs}
        for r in conn.execute(
            text(
                "SELECT run_id, name, status, count AS offending, seconds FROM integrity_check_results "
                "WHERE run_id = ANY(CAST(:ids AS bigint[])) ORDER BY run_id, position"
            ),
            {"ids": list(per_run)},
        ):
            per_run[r.run_id][r.name] = (r.status, int(r.offending), float(r.seconds))
    return [
        HistoryRun(
            r.run_id,
            r.started_at,
            float(r.seconds),
            r.status,
            r.sample_size,
            r.source,
            per_run[r.run_id],
            r.mode or "",
            r.raw_checked,
        )
        for r in runs
    ]


def load_results(
    engine: Engine, run_id: int | None = None
) -> tuple[HistoryRun, list[CheckResult]] | None:
    """A saved run's full results (the latest when run_id is None), or None when there is none."""
    proves = {c.name: c.proves for c in CHECKS}
    with engine.connect() as conn:
        run = conn.execute(
            text(
                "SELECT run_id, started_at, seconds, status, sample_size, source, "
                "scale ->> 'mode' AS mode, "
                "CAST(scale ->> 'raw_checked_epochs' AS integer) AS raw_checked "
                "FROM integrity_runs WHERE run_id = coalesce(CAST(:id AS bigint), "
                "(SELECT max(run_id) FROM integrity_runs))"
            ),
            {"id": run_id},
        ).one_or_none()
        if run is None:
            return None
        rows = conn.execute(
            text(
                "SELECT name, status, count AS offending, examples, seconds, note "
                "FROM integrity_check_results "
                "WHERE run_id = :id ORDER BY position"
            ),
            {"id": run.run_id},
        ).all()
    results = [
        CheckResult(
            r.name,
            proves.get(r.name, ""),
            r.status,
            int(r.offending),
            list(r.examples),
            float(r.seconds),
            r.note,
        )
        for r in rows
    ]
    summary = HistoryRun(
        run.run_id,
        run.started_at,
        float(run.seconds),
        run.status,
        run.sample_size,
        run.source,
        {r.name: (r.status, r.count, r.seconds) for r in results},
        run.mode or "",
        run.raw_checked,
    )
    return summary, results
