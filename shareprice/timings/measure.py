"""Benchmark core: v1 (raw JSON parsed in Python) vs v2 (normalized tables) vs the floor.

Each named request shape runs through three paths on the same database:

- `v2`: `queries.series_v2` / `queries.band_v2`, into a polars DataFrame, as the pages use it.
- `v1`: `queries.series_v1` / `queries.band_v1`, the old API's way (parse `epochs.data`).
- `floor`: the very SQL v2 runs (same text, same parameters), fetched by a bare psycopg cursor
  (`execute` + `fetchall`, psycopg's default type conversion, no DataFrame). It is what the
  query layer costs at the least; v2 / floor says what the module adds on top.

Every path runs `runs` times (v1 `v1_runs` times: it is the slow one) after one untimed warm-up;
results are medians. The frames of v1 and v2 are compared exactly (`equal`).

`measure_shape_detailed` is the timings page's form of the same: every path cold (after
`make_cold`: new connections and, where pg_buffercache allows, the tables' shared buffers
evicted) and warm, its rows and bytes, Python's peak allocation (tracemalloc) and EXPLAIN
(ANALYZE, BUFFERS) of the very SQL each path runs; it stops between runs at a deadline.

This module is a library (no printing, no streamlit): `shareprice bench queries` prints the quick
benchmark, `runs.run_detailed` records the detailed one, the timings page shows both.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl
import psycopg
from sqlalchemy.engine import Engine

from shareprice import queries
from shareprice.errors import ShareError
from shareprice.store import db
from shareprice.timings.results import CACHE_STATES, DetailedShape, PathTiming, round_ms
from shareprice.timings.shape_catalog import SHAPE_NAMES, Shape, request_dict, shapes


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
    conn = floor_conn or db.connect(engine, autocommit=True)
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
        v1_ms=round_ms(v1_ms),
        v2_ms=round_ms(v2_ms),
        floor_ms=round_ms(floor_ms),
        v1_over_v2=round_ms(v1_ms / v2_ms) if v1_ms is not None and v2_ms > 0 else None,
        v2_over_floor=round_ms(v2_ms / floor_ms) if floor_ms > 0 else 0.0,
        equal=queries.frames_equal(frame1, frame2) if frame1 is not None else None,
        runs=runs,
        v1_runs=v1_runs,
        description=shape.description,
        v2_runs_ms=[round_ms(t) for t in v2_times],
        floor_runs_ms=[round_ms(t) for t in floor_times],
        v1_runs_ms=[round_ms(t) for t in v1_times],
    )


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


# --- detailed measurement for the timings page: cold/warm, memory, bytes, plans ----------------


class TimeLimitReached(ShareError, RuntimeError):
    """The wall-clock limit of a detailed run passed; the results so far are kept."""


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
    with db.connect(engine, autocommit=True) as conn:
        conn.execute("SET work_mem = '256MB'")
        row = conn.execute(statement, plan.params).fetchone()
    return int(row[0]) if row else 0


def explain_v2(engine: Engine, shape: Shape) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the very SQL v2 (and the floor) runs for the shape."""
    from psycopg import sql

    plan = floor_plan(engine, shape)
    if plan is None:
        return "(empty window: no SQL runs)"
    with db.connect(engine, autocommit=True) as conn:
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
            self._floor = db.connect(self.engine, autocommit=True)
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
                    ms, value = _timed(functools.partial(paths.run, variant))
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
                                "ms": round_ms(ms),
                            }
                        )
            if memory:
                check_deadline()
                peak = _peak_python_bytes(functools.partial(paths.run, variant))
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
