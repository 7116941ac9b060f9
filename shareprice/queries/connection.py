"""How every query reaches PostgreSQL: a pooled connection with a time limit, timed into a trace.

`connect` lends the engine's pooled psycopg connection inside a transaction with a local
`statement_timeout` (datasette's idea: a dashboard request must not hold the database for
minutes) and always rolls back: the query layer only reads. `trace()` collects the name,
duration and row count of every statement run inside it, for the pages' timing footers.

`copy_frame` is the fast way rows leave the server: `COPY (SELECT ...) TO STDOUT (FORMAT csv)`
parsed by `pl.read_csv` with an exact (Int128) schema. Converting NUMERIC to Python ints row by
row costs more than the query itself at 100k rows; parsing the text in Rust does not (see
`shareprice bench queries`). COPY takes parameters through psycopg's client-side binding, so
values are still never spliced into SQL text by us.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl
import psycopg
from psycopg import sql
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from shareprice.queries.request import Plan

DEFAULT_TIMEOUT_MS = 30_000


@dataclass(slots=True)
class QueryTiming:
    name: str
    ms: float
    rows: int


@dataclass(slots=True)
class Trace:
    timings: list[QueryTiming] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return sum(t.ms for t in self.timings)


_trace: ContextVar[Trace | None] = ContextVar("shareprice_query_trace", default=None)


@contextlib.contextmanager
def trace() -> Iterator[Trace]:
    """Collect the name, duration and row count of every query run inside the block."""
    current = Trace()
    token = _trace.set(current)
    try:
        yield current
    finally:
        _trace.reset(token)


def record(name: str, started: float, rows: int) -> None:
    """Add one statement, started at `started` (perf_counter), to the active trace if any."""
    current = _trace.get()
    if current is not None:
        current.timings.append(QueryTiming(name, (time.perf_counter() - started) * 1000, rows))


# --- connections ----------------------------------------------------------------------------------


@contextlib.contextmanager
def connect(
    engine: Engine, timeout_ms: int | None = DEFAULT_TIMEOUT_MS
) -> Iterator[psycopg.Connection]:
    """A pooled psycopg connection inside a transaction with a local statement timeout."""
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        if timeout_ms is not None:
            raw.execute("SELECT set_config('statement_timeout', %s, true)", (str(timeout_ms),))
        try:
            yield raw
        finally:
            raw.rollback()  # read-only work: never leave the pooled connection in a transaction


def copy_frame(
    conn: psycopg.Connection, plan: Plan, schema: dict[str, pl.DataType]
) -> pl.DataFrame:
    """The plan's rows through COPY ... TO STDOUT (csv), parsed with `schema`; timed."""
    started = time.perf_counter()
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(plan.query)
    chunks: list[bytes] = []
    with conn.cursor() as cur, cur.copy(statement, plan.params) as copy:
        for chunk in copy:
            chunks.append(bytes(chunk))
    frame = pl.read_csv(b"".join(chunks), has_header=True, schema=schema)
    record(plan.name, started, frame.height)
    return frame


def scalar_row(conn: psycopg.Connection, name: str, query: str, params: Any = None) -> tuple:
    """The one row of a small statement; timed as `name`."""
    started = time.perf_counter()
    row = conn.execute(query, params).fetchone()
    record(name, started, 1)
    assert row is not None
    return row
