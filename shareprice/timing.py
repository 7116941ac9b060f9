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

from shareprice import db, queries

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


def largest_operators(engine: Engine, count: int) -> tuple[int, ...]:
    """The `count` largest active operators by latest stake (the explorer's default view)."""
    return queries.largest_operators(queries.operators(engine), count)


def shapes(engine: Engine, names: Iterable[str] = SHAPE_NAMES) -> list[Shape]:
    """The named request shapes, resolved against the data (which operators are largest)."""
    top = largest_operators(engine, 4)
    catalogue = {
        "all_epochs_4_operators": Shape(
            "all_epochs_4_operators",
            "series",
            queries.SeriesRequest(operators=top),
            "every epoch of the 4 largest operators, full resolution",
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
            queries.SeriesRequest(operators=top[:1]),
            "every epoch of the largest operator",
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
