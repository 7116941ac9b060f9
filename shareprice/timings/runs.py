"""A detailed run, measured shape by shape and recorded as it goes in timing_runs / timing_results
/ timing_plans (sql/032), so a run stopped half-way keeps what it measured and the page's
history shows a regression as a step up.

On a connection that may not write (the read-only role, a standby) the run is still measured
and shown, and says why it was not saved instead of failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from shareprice.store import db
from shareprice.timings.measure import (
    TimeLimitReached,
    database_profile,
    make_cold,
    measure_shape_detailed,
)
from shareprice.timings.results import CACHE_STATES, DetailedRun, DetailedShape, PathTiming
from shareprice.timings.shape_catalog import Shape, request_dict


def start_run(
    engine: Engine, options: dict[str, Any], source: str, cold_method: str | None
) -> tuple[int | None, str]:
    """Record a run as started; (None, reason) on a connection that may not write."""
    try:
        with engine.begin() as conn:
            run_id = conn.execute(
                text(
                    "INSERT INTO timing_runs (source, options, scale, cold_method) "
                    "VALUES (:source, CAST(:options AS jsonb), CAST(:scale AS jsonb), :cold) "
                    "RETURNING run_id"
                ),
                {
                    "source": source,
                    "options": orjson.dumps(options).decode(),
                    "scale": orjson.dumps(database_profile(engine)).decode(),
                    "cold": cold_method,
                },
            ).scalar_one()
        return int(run_id), ""
    except DBAPIError as error:
        if db.is_read_only_error(error):
            return None, (
                "not saved: this connection may not write (read-only role), so the run is not "
                "in the history. Run `shareprice timings` with the main database URL to record it."
            )
        raise


def save_shape(engine: Engine, run_id: int, result: DetailedShape) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO timing_results
                    (run_id, shape, description, request, variant, cache, runs_ms, median_ms,
                     min_ms, max_ms, rows, bytes, peak_bytes, equal, error)
                VALUES (:run_id, :shape, :description, CAST(:request AS jsonb), :variant,
                        :cache, :runs_ms, :median_ms, :min_ms, :max_ms, :rows, :bytes,
                        :peak_bytes, :equal, :error)
                """
            ),
            [
                {
                    "run_id": run_id,
                    "description": result.description,
                    "request": orjson.dumps(result.request).decode(),
                    **{k: v for k, v in t.to_dict().items()},
                }
                for t in result.timings
            ],
        )
        if result.plans:
            conn.execute(
                text(
                    "INSERT INTO timing_plans (run_id, shape, variant, plan) "
                    "VALUES (:run_id, :shape, :variant, :plan)"
                ),
                [
                    {"run_id": run_id, "shape": result.name, "variant": v, "plan": p}
                    for v, p in result.plans.items()
                ],
            )


def finish_run(engine: Engine, run_id: int, status: str, error: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE timing_runs SET status = :status, finished_at = now(), error = :error "
                "WHERE run_id = :run_id AND status = 'running'"
            ),
            {"run_id": run_id, "status": status, "error": error},
        )


def load_run(engine: Engine, run_id: int | None = None) -> dict[str, Any] | None:
    """A recorded run (the latest completed-or-not when run_id is None) with results and plans."""
    with engine.connect() as conn:
        run = conn.execute(
            text(
                "SELECT run_id, started_at, finished_at, status, options, scale, cold_method, "
                "error FROM timing_runs WHERE run_id = coalesce(CAST(:id AS bigint), "
                "(SELECT max(run_id) FROM timing_runs))"
            ),
            {"id": run_id},
        ).one_or_none()
        if run is None:
            return None
        results = conn.execute(
            text(
                "SELECT shape, description, request, variant, cache, runs_ms, rows, bytes, "
                "peak_bytes, equal, error FROM timing_results WHERE run_id = :id "
                "ORDER BY shape, variant, cache"
            ),
            {"id": run.run_id},
        ).all()
        plans = conn.execute(
            text("SELECT shape, variant, plan FROM timing_plans WHERE run_id = :id"),
            {"id": run.run_id},
        ).all()
    shapes_out: dict[str, DetailedShape] = {}
    for r in results:
        shape = shapes_out.setdefault(
            r.shape, DetailedShape(r.shape, r.description, r.request, [], None, {})
        )
        shape.timings.append(
            PathTiming(
                r.shape,
                r.variant,
                r.cache,
                list(r.runs_ms),
                r.rows,
                r.bytes,
                r.peak_bytes,
                r.equal,
                r.error,
            )
        )
        if r.variant in ("v1", "v2") and r.equal is not None:
            shape.equal = r.equal
    for p in plans:
        if p.shape in shapes_out:
            shapes_out[p.shape].plans[p.variant] = p.plan
    return {"run": dict(run._mapping), "shapes": list(shapes_out.values())}


def history(engine: Engine, limit: int = 30) -> list[dict[str, Any]]:
    """Warm medians per run, shape and path, newest runs first: what a regression looks like."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT r.run_id, r.started_at, r.status, t.shape, t.variant, t.cache,
                       t.median_ms, t.rows, t.equal
                FROM timing_runs r
                JOIN timing_results t ON t.run_id = r.run_id
                WHERE r.run_id IN (SELECT run_id FROM timing_runs ORDER BY run_id DESC
                                   LIMIT :limit)
                ORDER BY r.run_id DESC, t.shape, t.variant, t.cache
                """
            ),
            {"limit": limit},
        ).all()
    return [dict(r._mapping) for r in rows]


def mark_finished(engine: Engine, run_id: int | None, status: str, error: str | None) -> None:
    """Record the end of a run whose process could not record it (killed, or it failed)."""
    if run_id is None:
        return
    try:
        finish_run(engine, int(run_id), status, error)
    except DBAPIError as error:
        if not db.is_read_only_error(error):
            raise


def run_detailed(
    engine: Engine,
    shape_list: list[Shape],
    *,
    runs: int = 3,
    v1_runs: int = 1,
    cold: bool = True,
    memory: bool = True,
    explain: bool = True,
    time_limit_s: float | None = None,
    save: bool = True,
    source: str = "cli",
    on_event: Callable[[dict[str, Any]], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> DetailedRun:
    """Measure every shape in detail, recording the run shape by shape as it goes (so a run
    stopped half-way keeps what it measured). Time limit: between runs, wall clock.

    A stop (KeyboardInterrupt, or any error while `stop_requested()` says so: an interrupted
    query surfaces as a cancelled statement) ends the run as 'stopped', not 'failed'."""
    emit = on_event or (lambda event: None)
    deadline = time.monotonic() + time_limit_s if time_limit_s else None
    cold_method = make_cold(engine) if cold else None
    options = {
        "shapes": [s.name for s in shape_list],
        "requests": {s.name: request_dict(s.request) for s in shape_list},
        "runs": runs,
        "v1_runs": v1_runs,
        "cold": cold,
        "memory": memory,
        "explain": explain,
        "time_limit_s": time_limit_s,
    }
    run_id, not_saved = (None, "")
    if save:
        run_id, not_saved = start_run(engine, options, source, cold_method)
    per_variant = sum(1 for _ in (CACHE_STATES if cold else ("warm",)))
    emit(
        {
            "event": "start",
            "run_id": run_id,
            "not_saved": not_saved,
            "cold_method": cold_method,
            "total_steps": len(shape_list) * per_variant * (2 * runs + v1_runs),
        }
    )
    results: list[DetailedShape] = []
    status, error = "completed", None
    try:
        for shape in shape_list:
            emit({"event": "shape", "shape": shape.name, "description": shape.description})
            result = measure_shape_detailed(
                engine,
                shape,
                runs=runs,
                v1_runs=v1_runs,
                cold=cold,
                memory=memory,
                explain=explain,
                deadline=deadline,
                on_step=lambda step: emit({"event": "step", **step}),
            )
            results.append(result)
            if run_id is not None:
                save_shape(engine, run_id, result)
            emit({"event": "shape_done", "result": result.to_dict()})
    except TimeLimitReached as exc:
        status, error = "timed_out", str(exc)
    except KeyboardInterrupt:
        status, error = "stopped", "stopped by the user"
    except Exception as exc:  # recorded with the run, then re-raised for the caller
        if stop_requested is None or not stop_requested():
            if run_id is not None:
                finish_run(engine, run_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        # A failure caused by the user's Stop (e.g. a cancelled statement) is a stop.
        status, error = "stopped", "stopped by the user"
    if run_id is not None:
        finish_run(engine, run_id, status, error)
    run = DetailedRun(
        results, status, run_id, not_saved, cold_method, database_profile(engine), error
    )
    emit({"event": "done", "run": run.to_json_dict()})
    return run
