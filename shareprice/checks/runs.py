"""Running the checks on one snapshot, and keeping runs for the history.

All checks of a run read one snapshot (REPEATABLE READ, READ ONLY), so a backfill running at the
same time cannot make two checks disagree; a check that errors is reported as failed, not raised,
so one broken check never hides the others' results. Runs are stored in `integrity_runs` /
`integrity_check_results` (sql/030) so a regression shows up against the history; a read-only
role (the dashboard's reader) skips saving with a reason instead of failing the run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.engine import Engine

import shareprice.checks.definitions  # noqa: F401 - importing it registers the checks
from shareprice.checks.registry import (
    CHECKS,
    MAX_EXAMPLES,
    STATUS_ORDER,
    Check,
    CheckResult,
    Outcome,
    Scope,
    Status,
    select_checks,
)

#: SQLSTATEs that mean "this role may not write": insufficient_privilege, read_only_sql_transaction.
READ_ONLY_SQLSTATES = frozenset({"42501", "25006"})


@dataclass(frozen=True)
class CheckRun:
    started_at: datetime
    seconds: float
    scope: Scope
    results: list[CheckResult]
    only: list[str] | None

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
            "scope": asdict(self.scope) | {"description": self.scope.describe()},
            "checks": [r.to_json() for r in self.results],
        }


def sample_epochs(all_epochs: Sequence[int], size: int, seed: int) -> list[int]:
    """A reproducible sample: the same seed and data give the same epochs."""
    if size >= len(all_epochs):
        return sorted(all_epochs)
    return sorted(random.Random(seed).sample(list(all_epochs), size))


def run_checks(
    engine: Engine,
    *,
    only: Sequence[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    statement_timeout_s: float | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    on_start: Callable[[Check], None] | None = None,
) -> CheckRun:
    """Run the checks on one consistent snapshot; a check that errors is reported as failed."""
    selected = select_checks(only)
    if sample is not None and sample <= 0:
        raise ValueError("--sample must be a positive number of epochs")
    started_at = datetime.now().astimezone()
    started = time.perf_counter()
    results: list[CheckResult] = []
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if statement_timeout_s:
            conn.execute(
                text("SELECT set_config('statement_timeout', :ms, true)"),
                {"ms": str(int(statement_timeout_s * 1000))},
            )
        raw_epochs = int(conn.execute(text("SELECT count(*) FROM epochs")).scalar_one())
        normalized = conn.execute(text("SELECT epoch FROM epoch_normalizations ORDER BY epoch"))
        normalized_epochs = normalized.scalars().all()
        scope = Scope(
            raw_epochs=raw_epochs,
            normalized_epochs=len(normalized_epochs),
            sample=sample_epochs(normalized_epochs, sample, seed) if sample else None,
            sample_size=sample,
            seed=seed,
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
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                outcome = Outcome("fail", 0, [], f"could not run: {reason}")
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
            if on_result:
                on_result(result)
        conn.exec_driver_sql("COMMIT")
    return CheckRun(
        started_at=started_at,
        seconds=time.perf_counter() - started,
        scope=scope,
        results=results,
        only=list(only) if only else None,
    )


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
        return SaveResult(int(run_id))
    except sa.exc.DBAPIError as exc:
        if is_read_only_error(exc):
            return SaveResult(
                None,
                "not saved: this connection may not write (read-only role), so the run is not "
                "in the history. Run `shareprice check` with the main database URL to record it.",
            )
        raise


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


def history(engine: Engine, limit: int = 50) -> list[HistoryRun]:
    """The latest runs, newest first, with each check's status, count and time."""
    with engine.connect() as conn:
        runs = conn.execute(
            text(
                "SELECT run_id, started_at, seconds, status, sample_size, source "
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
                "SELECT run_id, started_at, seconds, status, sample_size, source "
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
    )
    return summary, results
