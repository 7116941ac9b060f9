"""Benchmark core: v1 (raw JSON parsed in Python) vs v2 (normalized tables) vs the floor.

Each named request shape runs through three paths on the same database:

- `v2`: `queries.series_v2` / `queries.band_v2`, into a polars DataFrame, as the pages use it.
- `v1`: `queries.series_v1` / `queries.band_v1`, the old API's way (parse `epochs.data`).
- `floor`: the very SQL v2 runs (same text, same parameters), fetched by a bare psycopg cursor
  (`execute` + `fetchall`, psycopg's default type conversion, no DataFrame). It is what the
  query layer costs at the least; v2 / floor says what the module adds on top.

Every path runs `runs` times (v1 `v1_runs` times: it is the slow one) after one untimed warm-up;
results are medians. The frames of v1 and v2 are compared exactly (`equal`).

This module is a library (no printing, no streamlit): `shareprice bench queries` prints it, the
timings page shows it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import polars as pl
import psycopg
from sqlalchemy.engine import Engine

from shareprice import queries
from shareprice.store import db

SHAPE_NAMES = (
    "all_epochs_4_operators",
    "all_epochs_all_operators",
    "last_100_epochs",
    "one_operator",
)

Kind = Literal["series", "band"]


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    kind: Kind
    request: queries.SeriesRequest
    description: str


@dataclass(slots=True)
class ShapeResult:
    name: str
    rows: int
    v1_ms: float | None
    v2_ms: float
    floor_ms: float
    v1_over_v2: float | None
    v2_over_floor: float
    equal: bool | None
    runs: int
    v1_runs: int
    description: str = ""
    v2_runs_ms: list[float] = field(default_factory=list)
    floor_runs_ms: list[float] = field(default_factory=list)
    v1_runs_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The fields `shareprice bench queries --json` prints for a shape."""
        out = asdict(self)
        for key in ("v2_runs_ms", "floor_runs_ms", "v1_runs_ms"):
            out.pop(key)
        return out


def longest_operators(engine: Engine, count: int) -> tuple[int, ...]:
    """The `count` operators with the longest history (then the largest stake): "all epochs x
    N operators" should mean every epoch, as the old dashboard's hard-coded operators 0-3 did,
    not the few hundred epochs of a large late registrant."""
    ops = queries.operators(engine).filter(pl.col("latest_epoch").is_not_null())
    ranked = ops.with_columns(
        (pl.col("last_seen_epoch") - pl.col("first_seen_epoch")).alias("span")
    ).sort(["span", "stake", "operator_id"], descending=[True, True, False], nulls_last=True)
    return tuple(sorted(ranked.head(count)["operator_id"].to_list()))


def shapes(engine: Engine, names: Iterable[str] = SHAPE_NAMES) -> list[Shape]:
    """The named request shapes, resolved against the data (which operators span the most
    epochs)."""
    top = longest_operators(engine, 4)
    catalogue = {
        "all_epochs_4_operators": Shape(
            "all_epochs_4_operators",
            "series",
            queries.SeriesRequest(operators=top),
            "every epoch of the 4 operators with the longest history, full resolution",
        ),
        "all_epochs_all_operators": Shape(
            "all_epochs_all_operators",
            "band",
            queries.SeriesRequest(max_points=queries.DEFAULT_MAX_POINTS),
            "every epoch of every operator, reduced to the overview's percentile band "
            f"(at most {queries.DEFAULT_MAX_POINTS} epochs drawn)",
        ),
        "last_100_epochs": Shape(
            "last_100_epochs",
            "series",
            queries.SeriesRequest(last_epochs=100),
            "the last 100 epochs of every operator, full resolution",
        ),
        "one_operator": Shape(
            "one_operator",
            "series",
            queries.SeriesRequest(operators=longest_operators(engine, 1)),
            "every epoch of the operator with the longest history",
        ),
    }
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown}; known: {', '.join(SHAPE_NAMES)}")
    return [catalogue[n] for n in names]


def _v1(shape: Shape) -> Callable[[Engine, queries.SeriesRequest], pl.DataFrame]:
    return queries.band_v1 if shape.kind == "band" else queries.series_v1


def _v2(shape: Shape) -> Callable[[Engine, queries.SeriesRequest], pl.DataFrame]:
    return queries.band_v2 if shape.kind == "band" else queries.series_v2


def floor_plan(engine: Engine, shape: Shape) -> queries.Plan | None:
    """The SQL v2 runs for the shape (None when the window is empty)."""
    window = queries.resolve_window_v2(engine, shape.request)
    if window.empty:
        return None
    if shape.kind == "band":
        return queries.band_plan(window, shape.request.max_points)
    return queries.series_plan(shape.request, window)


def _timed(func: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = func()
    return (time.perf_counter() - started) * 1000, result


def measure_floor(conn: psycopg.Connection, plan: queries.Plan | None) -> tuple[float, int]:
    """One bare-cursor fetch of v2's SQL: (milliseconds, rows)."""
    if plan is None:
        return 0.0, 0

    def fetch() -> int:
        with conn.cursor() as cur:
            cur.execute(plan.query, plan.params)
            return len(cur.fetchall())

    return _timed(fetch)


def measure_shape(
    engine: Engine,
    shape: Shape,
    *,
    runs: int = 5,
    v1_runs: int = 3,
    floor_conn: psycopg.Connection | None = None,
) -> ShapeResult:
    if runs < 1:
        raise ValueError("runs must be at least 1")
    v2 = _v2(shape)
    v2(engine, shape.request)  # warm-up: caches, pool, plan; not counted
    plan = floor_plan(engine, shape)
    own_conn = floor_conn is None
    conn = floor_conn or psycopg.connect(db.libpq_url(engine), autocommit=True)
    try:
        if plan and shape.kind == "band":
            conn.execute("SET work_mem = '256MB'")  # what band_v2 sets for itself
        measure_floor(conn, plan)  # warm-up
        v2_times, floor_times = [], []
        frame2 = None
        for _ in range(runs):  # interleaved, so machine noise hits both alike
            ms, frame2 = _timed(lambda: v2(engine, shape.request))
            v2_times.append(ms)
            floor_times.append(measure_floor(conn, plan)[0])
    finally:
        if own_conn:
            conn.close()
    assert frame2 is not None
    v1_times: list[float] = []
    frame1 = None
    for _ in range(v1_runs):
        ms, frame1 = _timed(lambda: _v1(shape)(engine, shape.request))
        v1_times.append(ms)
    v2_ms = statistics.median(v2_times)
    floor_ms = statistics.median(floor_times)
    v1_ms = statistics.median(v1_times) if v1_times else None
    return ShapeResult(
        name=shape.name,
        rows=frame2.height,
        v1_ms=_round(v1_ms),
        v2_ms=_round(v2_ms),
        floor_ms=_round(floor_ms),
        v1_over_v2=_round(v1_ms / v2_ms) if v1_ms is not None and v2_ms > 0 else None,
        v2_over_floor=_round(v2_ms / floor_ms) if floor_ms > 0 else 0.0,
        equal=queries.frames_equal(frame1, frame2) if frame1 is not None else None,
        runs=runs,
        v1_runs=v1_runs,
        description=shape.description,
        v2_runs_ms=[_round(t) for t in v2_times],
        floor_runs_ms=[_round(t) for t in floor_times],
        v1_runs_ms=[_round(t) for t in v1_times],
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(slots=True)
class BenchmarkResult:
    shapes: list[ShapeResult]
    database: dict[str, Any]

    def to_json_dict(self) -> dict[str, Any]:
        return {"shapes": [s.summary() for s in self.shapes], "database": self.database}


def database_profile(engine: Engine) -> dict[str, Any]:
    """What the numbers were measured on (counts only, never the URL)."""
    info = queries.summary(engine)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = 'operator_share_prices'::regclass"
        ).scalar_one()
    return {
        "raw_epochs": info.raw_epochs,
        "normalized_epochs": info.normalized_epochs,
        "operators": info.operators,
        "price_rows_estimate": int(rows),
        "data_version": info.data_version,
    }


def run_benchmark(
    engine: Engine,
    *,
    names: Iterable[str] = SHAPE_NAMES,
    runs: int = 5,
    v1_runs: int = 3,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    results = []
    for shape in shapes(engine, names):
        if progress:
            progress(f"{shape.name}: {shape.description}")
        results.append(measure_shape(engine, shape, runs=runs, v1_runs=v1_runs))
    return BenchmarkResult(results, database_profile(engine))


# --- detailed runs for the timings page: cold/warm, memory, bytes, plans, history ----------------
#
# The page (and `shareprice timings`) runs these in a separate process: a v1 run can take tens of
# seconds at seed scale, and a process can be stopped at once and cannot slow the dashboard.

VARIANTS = ("v1", "v2", "floor")
CACHE_STATES = ("cold", "warm")
CUSTOM_SHAPE = "custom"


class TimeLimitReached(RuntimeError):
    """The wall-clock limit of a detailed run passed; the results so far are kept."""


@dataclass(slots=True)
class PathTiming:
    """One path (v1, v2 or floor) of one shape in one cache state."""

    shape: str
    variant: str
    cache: str
    runs_ms: list[float] = field(default_factory=list)
    rows: int | None = None
    bytes: int | None = None
    peak_bytes: int | None = None
    equal: bool | None = None
    error: str | None = None

    @property
    def median_ms(self) -> float | None:
        return _round(statistics.median(self.runs_ms)) if self.runs_ms else None

    @property
    def min_ms(self) -> float | None:
        return _round(min(self.runs_ms)) if self.runs_ms else None

    @property
    def max_ms(self) -> float | None:
        return _round(max(self.runs_ms)) if self.runs_ms else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "variant": self.variant,
            "cache": self.cache,
            "median_ms": self.median_ms,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "runs_ms": [_round(t) for t in self.runs_ms],
            "rows": self.rows,
            "bytes": self.bytes,
            "peak_bytes": self.peak_bytes,
            "equal": self.equal,
            "error": self.error,
        }


@dataclass(slots=True)
class DetailedShape:
    name: str
    description: str
    request: dict[str, Any]
    timings: list[PathTiming]
    #: v1 and v2 returned equal frames (None: v1 did not run).
    equal: bool | None
    #: EXPLAIN (ANALYZE, BUFFERS) text per path ('v1', 'v2').
    plans: dict[str, str]

    def timing(self, variant: str, cache: str) -> PathTiming | None:
        return next((t for t in self.timings if t.variant == variant and t.cache == cache), None)

    def ratio(self, cache: str = "warm") -> float | None:
        """v1 median / v2 median in one cache state."""
        v1, v2 = self.timing("v1", cache), self.timing("v2", cache)
        if v1 and v2 and v1.median_ms and v2.median_ms:
            return _round(v1.median_ms / v2.median_ms)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.name,
            "description": self.description,
            "request": self.request,
            "equal": self.equal,
            "v1_over_v2_warm": self.ratio("warm"),
            "v1_over_v2_cold": self.ratio("cold"),
            "timings": [t.to_dict() for t in self.timings],
            "plans": self.plans,
        }


def custom_shape(request: queries.SeriesRequest, kind: Kind = "series") -> Shape:
    """A request from the explorer's controls (operators, epoch range, last N) as a shape."""
    parts = []
    if request.operators is not None:
        parts.append(f"operators {', '.join(map(str, request.operators))}")
    if request.last_epochs is not None:
        parts.append(f"last {request.last_epochs} epochs")
    elif request.epoch_from is not None or request.epoch_to is not None:
        parts.append(f"epochs {request.epoch_from or 0}-{request.epoch_to or 'latest'}")
    return Shape(CUSTOM_SHAPE, kind, request, "custom: " + ("; ".join(parts) or "everything"))


def request_dict(request: queries.SeriesRequest) -> dict[str, Any]:
    return {
        "operators": list(request.operators) if request.operators is not None else None,
        "epoch_from": request.epoch_from,
        "epoch_to": request.epoch_to,
        "last_epochs": request.last_epochs,
        "max_points": request.max_points,
    }


# Evicting a table's pages from shared buffers needs pg_buffercache >= 1.6 (PostgreSQL 18) and
# the right to use it; without it "cold" means new connections only (the backend's catalog and
# plan caches are empty, the buffer and OS caches are not). The method is recorded with the run.
_EVICT_SQL = """
SELECT count(*) FROM (
    SELECT pg_buffercache_evict_relation(c.oid)
    FROM pg_class c
    WHERE c.relname IN ('epochs', 'operator_share_prices', 'operator_shares',
                        'epoch_normalizations', 'operators_metadata')
       OR c.oid IN (SELECT reltoastrelid FROM pg_class WHERE relname = 'epochs')
) AS evicted
"""


def make_cold(engine: Engine) -> str:
    """Empty what can be emptied before a cold run; return how (recorded with the run)."""
    engine.dispose()
    try:
        with engine.connect() as conn:
            available = conn.exec_driver_sql(
                "SELECT to_regproc('pg_buffercache_evict_relation') IS NOT NULL"
            ).scalar_one()
            if available:
                conn.exec_driver_sql(_EVICT_SQL)
                conn.commit()
                engine.dispose()
                return "new connections; the tables' shared buffers evicted (OS cache stays warm)"
    except Exception:  # no permission: fall back to new connections only
        engine.dispose()
    return (
        "new connections only (pg_buffercache_evict_relation unavailable: PostgreSQL shared "
        "buffers and the OS page cache stay warm)"
    )


def _peak_python_bytes(func: Callable[[], Any]) -> int:
    """Python's peak allocation during func (tracemalloc: Python objects, not native buffers)."""
    import tracemalloc

    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _plan_bytes(engine: Engine, plan: queries.Plan) -> int:
    """Bytes of the floor's result in text form (what travels on the wire), counted server-side."""
    from psycopg import sql

    statement = sql.SQL("SELECT coalesce(sum(octet_length(t::text)), 0) FROM ({}) AS t").format(
        plan.query
    )
    with psycopg.connect(db.libpq_url(engine), autocommit=True) as conn:
        conn.execute("SET work_mem = '256MB'")
        row = conn.execute(statement, plan.params).fetchone()
    return int(row[0]) if row else 0


def explain_v2(engine: Engine, shape: Shape) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the very SQL v2 (and the floor) runs for the shape."""
    from psycopg import sql

    plan = floor_plan(engine, shape)
    if plan is None:
        return "(empty window: no SQL runs)"
    with psycopg.connect(db.libpq_url(engine), autocommit=True) as conn:
        if shape.kind == "band":
            conn.execute("SET work_mem = '256MB'")
        rows = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS) {}").format(plan.query), plan.params
        ).fetchall()
    return "\n".join(r[0] for r in rows)


def explain_v1(engine: Engine, shape: Shape) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the raw-document read v1 makes (parsing then happens in
    Python, which no plan shows: compare the plan's time with v1's)."""
    from psycopg import sql

    # The query layer's own statement, so the plan is of exactly what v1 runs.
    with queries.connect(engine, timeout_ms=None) as conn:
        plan = queries.raw_documents_plan(conn, shape.request)
        if plan is None:
            return "(empty window: no SQL runs)"
        rows = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS) {}").format(plan.query), plan.params
        ).fetchall()
    return "\n".join(r[0] for r in rows)


class _Paths:
    """The three ways of answering one shape. The floor keeps one bare connection while warm;
    `make_cold` drops it together with the engine's pool."""

    def __init__(self, engine: Engine, shape: Shape) -> None:
        self.engine = engine
        self.shape = shape
        self.plan = floor_plan(engine, shape)
        self._floor: psycopg.Connection | None = None

    def run(self, variant: str) -> Any:
        if variant == "v1":
            return _v1(self.shape)(self.engine, self.shape.request)
        if variant == "v2":
            return _v2(self.shape)(self.engine, self.shape.request)
        if self._floor is None:
            self._floor = psycopg.connect(db.libpq_url(self.engine), autocommit=True)
            if self.plan is not None and self.shape.kind == "band":
                self._floor.execute("SET work_mem = '256MB'")
        return measure_floor(self._floor, self.plan)

    def make_cold(self) -> str:
        self.close()
        return make_cold(self.engine)

    def close(self) -> None:
        if self._floor is not None:
            self._floor.close()
            self._floor = None


def measure_shape_detailed(
    engine: Engine,
    shape: Shape,
    *,
    runs: int = 3,
    v1_runs: int = 1,
    cold: bool = True,
    memory: bool = True,
    explain: bool = True,
    deadline: float | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> DetailedShape:
    """Every path N times cold (each run after make_cold) and N times warm, plus rows, bytes,
    Python peak memory, equality of v1 and v2 and the plans. Raises TimeLimitReached between
    runs once `deadline` (time.monotonic()) has passed."""
    if runs < 1:
        raise ValueError("runs must be at least 1")

    def check_deadline() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeLimitReached(f"time limit reached during {shape.name}")

    paths = _Paths(engine, shape)
    frames: dict[str, pl.DataFrame] = {}
    timings: list[PathTiming] = []
    try:
        for variant, n in (("v2", runs), ("floor", runs), ("v1", v1_runs)):
            if n < 1:
                continue
            mine: list[PathTiming] = []
            for cache in CACHE_STATES if cold else ("warm",):
                result = PathTiming(shape.name, variant, cache)
                mine.append(result)
                if not cold:
                    paths.run(variant)  # warm-up, not counted (with cold, the cold runs warm)
                for i in range(n):
                    check_deadline()
                    if cache == "cold":
                        paths.make_cold()
                    ms, value = _timed(lambda v=variant: paths.run(v))
                    if variant == "floor":
                        ms, result.rows = value  # the fetch alone, not connecting
                    else:
                        frames[variant] = value
                        result.rows = value.height
                        result.bytes = int(value.estimated_size())
                    result.runs_ms.append(ms)
                    if on_step:
                        on_step(
                            {
                                "shape": shape.name,
                                "variant": variant,
                                "cache": cache,
                                "run": i + 1,
                                "of": n,
                                "ms": _round(ms),
                            }
                        )
            if memory:
                check_deadline()
                peak = _peak_python_bytes(lambda v=variant: paths.run(v))
                for t in mine:
                    t.peak_bytes = peak
            if variant == "floor" and paths.plan is not None:
                size = _plan_bytes(engine, paths.plan)
                for t in mine:
                    t.bytes = size
            timings.extend(mine)
    finally:
        paths.close()
    equal = None
    if "v1" in frames and "v2" in frames:
        equal = queries.frames_equal(frames["v1"], frames["v2"])
        for t in timings:
            if t.variant in ("v1", "v2"):
                t.equal = equal
    plans: dict[str, str] = {}
    if explain:
        check_deadline()
        plans["v2"] = explain_v2(engine, shape)
        if v1_runs > 0:
            check_deadline()
            plans["v1"] = explain_v1(engine, shape)
    return DetailedShape(
        shape.name, shape.description, request_dict(shape.request), timings, equal, plans
    )


# --- persistence: timing_runs / timing_results / timing_plans (sql/032) -------------------------


def start_run(
    engine: Engine, options: dict[str, Any], source: str, cold_method: str | None
) -> tuple[int | None, str]:
    """Record a run as started; (None, reason) on a connection that may not write."""
    import orjson
    from sqlalchemy import exc, text

    from shareprice.checks import is_read_only_error

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
    except exc.DBAPIError as error:
        if is_read_only_error(error):
            return None, (
                "not saved: this connection may not write (read-only role), so the run is not "
                "in the history. Run `shareprice timings` with the main database URL to record it."
            )
        raise


def save_shape(engine: Engine, run_id: int, result: DetailedShape) -> None:
    import orjson
    from sqlalchemy import text

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
    from sqlalchemy import text

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
    from sqlalchemy import text

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
    from sqlalchemy import text

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


def detailed_table(results: Iterable[DetailedShape]) -> list[dict[str, Any]]:
    """One row per shape, path and cache state, for the page and the CLI."""
    out = []
    for shape in results:
        for t in shape.timings:
            out.append(
                {
                    "shape": shape.name,
                    "path": t.variant,
                    "cache": t.cache,
                    "median ms": t.median_ms,
                    "min ms": t.min_ms,
                    "max ms": t.max_ms,
                    "runs": len(t.runs_ms),
                    "rows": t.rows,
                    "bytes": t.bytes,
                    "python peak MB": round(t.peak_bytes / 2**20, 2) if t.peak_bytes else None,
                    "v1/v2": shape.ratio(t.cache) if t.variant == "v1" else None,
                    "equal": t.equal,
                }
            )
    return out


@dataclass(slots=True)
class DetailedRun:
    shapes: list[DetailedShape]
    status: str
    run_id: int | None
    #: Why the run was not recorded ("" when it was, or when saving was not asked for).
    not_saved: str
    cold_method: str | None
    database: dict[str, Any]
    error: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "run_id": self.run_id,
            "not_saved": self.not_saved,
            "cold_method": self.cold_method,
            "database": self.database,
            "error": self.error,
            "shapes": [s.to_dict() for s in self.shapes],
        }


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


# --- a detailed run in its own process (the page's Run / Stop) ----------------------------------


@dataclass
class TimingJob:
    """`shareprice timings --events` in a child process, its JSON lines in a file.

    A process, not a thread: it can be stopped at once (SIGTERM records 'stopped'; a kill after
    a grace period if it does not listen), its parsing cannot hold the dashboard's GIL, and its
    tracemalloc peak is its own. The database URL travels in the environment, never in argv.
    """

    process: Any
    output_path: str
    started: float
    time_limit_s: float
    #: Why the page ended the child: None (it finished by itself), 'stopped' or 'timed_out'.
    ended_by: str | None = None

    @classmethod
    def start(cls, url: str, args: list[str], time_limit_s: float) -> TimingJob:
        import os
        import subprocess
        import sys
        import tempfile

        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the child writes it after we return
            prefix="shareprice-timings-", suffix=".jsonl", delete=False
        )
        env = {k: v for k, v in os.environ.items() if k != "SHAREPRICE_READONLY_URL"}
        env["SHAREPRICE_DATABASE_URL"] = url
        command = [
            sys.executable,
            "-m",
            "shareprice.cli",
            "timings",
            "--events",
            "--source",
            "dashboard",
            "--time-limit",
            str(time_limit_s),
            *args,
        ]
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        handle.close()
        return cls(process, handle.name, time.monotonic(), time_limit_s)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def events(self) -> list[dict[str, Any]]:
        """Every complete JSON event so far (other output lines are kept as 'output' events)."""
        import orjson

        try:
            with open(self.output_path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                event = {"event": "output", "text": line.decode(errors="replace")}
            if isinstance(event, dict):
                out.append(event)
        return out

    def stop(self, grace_s: float = 5.0, reason: str = "stopped") -> None:
        import subprocess

        if not self.running:
            return
        self.ended_by = reason
        self.process.terminate()
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=grace_s)

    def enforce_time_limit(self, grace_s: float = 30.0) -> bool:
        """Stop the child when it overran its wall-clock limit (it checks only between runs,
        and one v1 run can be long); True when it had to be stopped."""
        if self.running and self.elapsed_s > self.time_limit_s + grace_s:
            self.stop(reason="timed_out")
            return True
        return False

    def cleanup(self) -> None:
        import contextlib
        import os

        self.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.output_path)


def job_outcome(job: TimingJob) -> tuple[str, str | None]:
    """(status, error) of a finished job, also when the child could not say it itself (killed,
    or it failed before measuring: its last output line is the reason)."""
    state = job_progress(job.events())
    if state["result"] is not None:
        return state["result"]["status"], state["result"].get("error")
    if job.ended_by is not None:
        return job.ended_by, f"{job.ended_by.replace('_', ' ')} from the timings page"
    return "failed", (
        state["output"][-1] if state["output"] else f"exit status {job.process.returncode}"
    )


def job_progress(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a job is: fraction done, the latest step, the run id, the final result if any."""
    start = next((e for e in events if e.get("event") == "start"), None)
    steps = [e for e in events if e.get("event") == "step"]
    done = next((e for e in reversed(events) if e.get("event") == "done"), None)
    total = int(start["total_steps"]) if start and start.get("total_steps") else 0
    current = next((e for e in reversed(events) if e.get("event") in ("step", "shape")), None)
    errors = [e["text"] for e in events if e.get("event") == "output"]
    return {
        "fraction": min(len(steps) / total, 1.0) if total else 0.0,
        "steps": len(steps),
        "total_steps": total,
        "current": current,
        "run_id": start.get("run_id") if start else None,
        "not_saved": start.get("not_saved") if start else "",
        "result": done["run"] if done else None,
        "shapes_done": [e["result"] for e in events if e.get("event") == "shape_done"],
        "output": errors,
    }


def shapes_from_dicts(items: Iterable[dict[str, Any]]) -> list[DetailedShape]:
    """DetailedShape objects back from their to_dict() form (a job's JSON events)."""
    out = []
    for item in items:
        timings = [
            PathTiming(
                t["shape"],
                t["variant"],
                t["cache"],
                list(t["runs_ms"]),
                t.get("rows"),
                t.get("bytes"),
                t.get("peak_bytes"),
                t.get("equal"),
                t.get("error"),
            )
            for t in item["timings"]
        ]
        out.append(
            DetailedShape(
                item["shape"],
                item.get("description", ""),
                item.get("request", {}),
                timings,
                item.get("equal"),
                dict(item.get("plans") or {}),
            )
        )
    return out


def timings_figure(results: Iterable[DetailedShape]):  # -> plotly.graph_objects.Figure
    """Median per shape and path (bars), min-max as error bars, log scale: v1 and v2 differ by
    orders of magnitude."""
    import plotly.graph_objects as go

    results = list(results)
    fig = go.Figure()
    colors = {"v1": "#d64545", "v2": "#2e7dd6", "floor": "#7a8594"}
    for variant in VARIANTS:
        for cache in CACHE_STATES:
            cells = [(s.name, s.timing(variant, cache)) for s in results]
            cells = [(name, t) for name, t in cells if t is not None and t.runs_ms]
            if not cells:
                continue
            fig.add_trace(
                go.Bar(
                    name=f"{variant} {cache}",
                    x=[name for name, _ in cells],
                    y=[t.median_ms for _, t in cells],
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [t.max_ms - t.median_ms for _, t in cells],
                        "arrayminus": [t.median_ms - t.min_ms for _, t in cells],
                    },
                    marker_color=colors[variant],
                    marker_pattern_shape="/" if cache == "cold" else "",
                    opacity=0.75 if cache == "cold" else 1.0,
                )
            )
    fig.update_layout(
        barmode="group",
        yaxis={"type": "log", "title": "median ms (log)"},
        height=420,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": 1.1},
    )
    return fig


def history_figure(rows: list[dict[str, Any]]):  # -> plotly.graph_objects.Figure
    """Warm medians of v1 and v2 per shape across recorded runs: a regression is a step up."""
    import plotly.graph_objects as go

    fig = go.Figure()
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in rows:
        if r["cache"] == "warm" and r["variant"] in ("v1", "v2") and r["median_ms"] is not None:
            series.setdefault((r["shape"], r["variant"]), []).append((r["run_id"], r["median_ms"]))
    for (shape, variant), points in sorted(series.items()):
        points.sort()
        fig.add_trace(
            go.Scatter(
                name=f"{shape} {variant}",
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="lines+markers",
                line={"dash": "dot" if variant == "v1" else "solid"},
            )
        )
    fig.update_layout(
        xaxis_title="run",
        yaxis={"type": "log", "title": "warm median ms (log)"},
        height=360,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
    )
    return fig


def job_arguments(
    *,
    names: Iterable[str],
    operators: str | None = None,
    epoch_from: int | None = None,
    epoch_to: int | None = None,
    last_epochs: int | None = None,
    runs: int = 3,
    v1_runs: int = 1,
    statement_timeout_s: float = 120,
    cold: bool = True,
    memory: bool = True,
    explain: bool = True,
) -> list[str]:
    """`shareprice timings` arguments for the page's choices (named shapes, the custom one)."""
    args: list[str] = []
    for name in names:
        if name != CUSTOM_SHAPE:
            args += ["--shape", name]
    if CUSTOM_SHAPE in names:
        ids = ",".join(part.strip() for part in (operators or "").split(",") if part.strip())
        if ids:
            args += ["--operators", ids]
        for flag, value in (
            ("--epoch-from", epoch_from),
            ("--epoch-to", epoch_to),
            ("--last-epochs", last_epochs),
        ):
            if value is not None:
                args += [flag, str(int(value))]
        if not any(v is not None and v != "" for v in (ids, epoch_from, epoch_to, last_epochs)):
            args += ["--epoch-from", "0"]  # "everything", still a custom shape of its own
    args += ["--runs", str(int(runs)), "--v1-runs", str(int(v1_runs))]
    args += ["--statement-timeout", str(float(statement_timeout_s))]
    if not cold:
        args.append("--no-cold")
    if not memory:
        args.append("--no-memory")
    if not explain:
        args.append("--no-explain")
    return args


def mark_finished(engine: Engine, run_id: int | None, status: str, error: str | None) -> None:
    """Record the end of a run whose process could not record it (killed, or it failed)."""
    from sqlalchemy import exc

    from shareprice.checks import is_read_only_error

    if run_id is None:
        return
    try:
        finish_run(engine, int(run_id), status, error)
    except exc.DBAPIError as error:
        if not is_read_only_error(error):
            raise
