"""The one query module: every page and the CLI read share prices through here.

Two implementations answer the same `SeriesRequest` with identical frames:

- `series_v2` / `band_v2` read the normalized tables (`operator_share_prices`,
  `operator_shares`, and the per-epoch band `epoch_price_bands` kept by sql/020) and reduce
  large requests in SQL before anything leaves the server.
- `series_v1` / `band_v1` are the old way, kept on purpose as the baseline: read `epochs.data` for
  the requested epochs and parse every document in Python with the shared parser, like the old
  `/api/epochs` did. `shareprice bench queries` measures one against the other.

Frames carry exact integers (`pl.Int128`: stake, shares and prices exceed 2^64) plus float
columns computed from them at the very end, for drawing only.

Fetching: v2 streams `COPY (SELECT ...) TO STDOUT (FORMAT csv)` into `pl.read_csv` with an Int128
schema. Converting NUMERIC to Python ints (or Decimals) row by row costs more than the query
itself at 100k rows; parsing the text in Rust does not (see `shareprice bench queries`). COPY
takes parameters through psycopg's client-side binding, so values are still never spliced into
SQL text by us.

Every statement runs with a `statement_timeout` (datasette's idea: a dashboard request must not
hold the database for minutes), and every query is timed into the active `trace()` if any.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import psycopg
from psycopg import sql
from sqlalchemy.engine import Engine

from shareprice.chain.records import PERQ
from shareprice.queries import yields

#: Downsampling keeps, per bucket, the first and last point, the min and max price, and the
#: min and max change per epoch: six points, so a bucket never holds more than that.
POINTS_PER_BUCKET = 6
MIN_MAX_POINTS = POINTS_PER_BUCKET
#: Change per epoch is ordered by trunc((price - prev) * CHANGE_KEY_SCALE / (prev * gap)): an
#: exact integer both in SQL (div() truncates toward zero) and in Python, so v1 and v2 pick the
#: same extremes. 1e18 resolves relative changes of 1e-18.
CHANGE_KEY_SCALE = 10**18
#: The overview band: percentiles of all operators' prices per epoch (percentile_disc: always a
#: real price of some operator, never an interpolated value).
BAND_FRACTIONS = (0.05, 0.25, 0.5, 0.75, 0.95)
BAND_COLUMNS = ("p05", "p25", "p50", "p75", "p95")
DEFAULT_TIMEOUT_MS = 30_000
#: Points per operator (and band epochs) the explorer sends to the browser: about one per pixel
#: column of a wide chart; with ~3 distinct points per bucket in practice, far fewer are drawn.
DEFAULT_MAX_POINTS = 1200

SERIES_EXACT_SCHEMA: dict[str, pl.DataType] = {
    "operator_id": pl.Int64(),
    "epoch": pl.Int64(),
    "share_price_perq": pl.Int128(),
    "stake": pl.Int128(),
    "shares": pl.Int128(),
    "rewards": pl.Int128(),
    # The operator's previous epoch in the data (inside the request's window) and its price:
    # the change per epoch is (price - prev) / prev / (epoch - prev_epoch).
    "prev_epoch": pl.Int64(),
    "prev_share_price_perq": pl.Int128(),
}
SERIES_FLOAT_COLUMNS = ("share_price", "stake_ai3", "rewards_ai3", "change_bps")

BAND_EXACT_SCHEMA: dict[str, pl.DataType] = {
    "epoch": pl.Int64(),
    "operators": pl.Int64(),
    **{name: pl.Int128() for name in BAND_COLUMNS},
}

OPERATOR_SCHEMA: dict[str, pl.DataType] = {
    "operator_id": pl.Int64(),
    "name": pl.String(),
    "color": pl.String(),
    "status": pl.String(),
    "nomination_tax": pl.Int64(),
    "first_seen_epoch": pl.Int64(),
    "last_seen_epoch": pl.Int64(),
    "is_active": pl.Boolean(),
    "latest_epoch": pl.Int64(),
    "share_price_perq": pl.Int128(),
    "stake": pl.Int128(),
    "shares": pl.Int128(),
    "rewards": pl.Int128(),
    **{
        name: dtype
        for days in yields.WINDOWS_DAYS
        for name, dtype in ((f"epoch_{days}d", pl.Int64()), (f"price_{days}d_perq", pl.Int128()))
    },
}


class RequestError(ValueError):
    """A request that cannot be answered as asked (bad range, too few points)."""


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    """What to read: which operators, which epochs, and at most how many points per operator.

    Epochs: `last_epochs` (the last N epochs of the data) wins over `epoch_from`/`epoch_to`
    (inclusive; either may be None = open); all None = every epoch. Operators: None = all.
    Hashable and comparable, so it can key a cache.
    """

    operators: tuple[int, ...] | None = None
    epoch_from: int | None = None
    epoch_to: int | None = None
    last_epochs: int | None = None
    max_points: int | None = None

    def __post_init__(self) -> None:
        if self.operators is not None:
            ops = tuple(sorted({int(o) for o in self.operators}))
            if any(o < 0 or o >= 2**63 for o in ops):
                raise RequestError("operator ids are 0 .. 2^63-1")
            object.__setattr__(self, "operators", ops)
        for name in ("epoch_from", "epoch_to", "last_epochs", "max_points"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0 or value >= 2**31):
                raise RequestError(f"{name} must be an integer 0 .. 2^31-1, got {value!r}")
        if self.last_epochs is not None and self.last_epochs < 1:
            raise RequestError("last_epochs must be at least 1")
        if (
            self.epoch_from is not None
            and self.epoch_to is not None
            and self.epoch_from > self.epoch_to
        ):
            raise RequestError(f"epoch_from {self.epoch_from} is after epoch_to {self.epoch_to}")
        if self.max_points is not None and self.max_points < MIN_MAX_POINTS:
            raise RequestError(f"max_points must be at least {MIN_MAX_POINTS}")


@dataclass(frozen=True, slots=True)
class Window:
    """A request's epochs resolved against the data: inclusive bounds, None = open."""

    lo: int | None
    hi: int | None

    @property
    def empty(self) -> bool:
        return self.lo is not None and self.hi is not None and self.lo > self.hi


@dataclass(frozen=True, slots=True)
class Plan:
    """The SQL a v2 query runs, so a benchmark can fetch the very same rows another way."""

    name: str
    query: sql.Composable
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DataSummary:
    raw_epochs: int
    normalized_epochs: int
    first_epoch: int | None
    last_epoch: int | None
    operators: int
    data_version: int

    @property
    def empty(self) -> bool:
        return self.raw_epochs == 0 and self.normalized_epochs == 0


# --- timing traces --------------------------------------------------------------------------------


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


def _record(name: str, started: float, rows: int) -> None:
    current = _trace.get()
    if current is not None:
        current.timings.append(QueryTiming(name, (time.perf_counter() - started) * 1000, rows))


# --- connections ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _connection(
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


def _copy_frame(
    conn: psycopg.Connection, plan: Plan, schema: dict[str, pl.DataType]
) -> pl.DataFrame:
    started = time.perf_counter()
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(plan.query)
    chunks: list[bytes] = []
    with conn.cursor() as cur, cur.copy(statement, plan.params) as copy:
        for chunk in copy:
            chunks.append(bytes(chunk))
    frame = pl.read_csv(b"".join(chunks), has_header=True, schema=schema)
    _record(plan.name, started, frame.height)
    return frame


def _scalar_row(conn: psycopg.Connection, name: str, query: str, params: Any = None) -> tuple:
    started = time.perf_counter()
    row = conn.execute(query, params).fetchone()
    _record(name, started, 1)
    assert row is not None
    return row


# --- small cheap reads ---------------------------------------------------------------------------

# last_value of the sequence every backfill batch and metadata edit advances: one tuple read.
_DATA_VERSION_SQL = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM data_version_seq"


def data_version(engine: Engine) -> int:
    """Changes whenever a backfill writes; part of every cache key so new data shows at once."""
    with _connection(engine) as conn:
        return int(_scalar_row(conn, "data_version", _DATA_VERSION_SQL)[0])


# Counts for the page's empty states and the range slider's bounds. epochs is small in its main
# heap (documents are TOASTed), epoch_normalizations and operators_metadata are small tables.
_SUMMARY_SQL = """
SELECT (SELECT count(*) FROM epochs),
       (SELECT count(*) FROM epoch_normalizations),
       (SELECT min(epoch) FROM epoch_normalizations),
       (SELECT max(epoch) FROM epoch_normalizations),
       (SELECT count(*) FROM operators_metadata),
       (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM data_version_seq)
"""


def summary(engine: Engine) -> DataSummary:
    with _connection(engine) as conn:
        row = _scalar_row(conn, "summary", _SUMMARY_SQL)
    return DataSummary(*(None if v is None else int(v) for v in row))  # type: ignore[arg-type]


# --- epoch windows --------------------------------------------------------------------------------

# The latest epoch the normalized tables hold (v2) / the raw table holds (v1). Both are small
# index lookups; on fully backfilled data they agree, so both paths resolve "last N" alike.
_LATEST_NORMALIZED_SQL = "SELECT max(epoch) FROM epoch_normalizations"
_LATEST_RAW_SQL = "SELECT max(epoch) FROM epochs"


def _window(conn: psycopg.Connection, request: SeriesRequest, latest_sql: str) -> Window:
    if request.last_epochs is None:
        return Window(request.epoch_from, request.epoch_to)
    (latest,) = _scalar_row(conn, "latest_epoch", latest_sql)
    if latest is None:
        return Window(1, 0)  # no data: an empty window
    return Window(max(0, latest - request.last_epochs + 1), latest)


def _filters(
    operators: tuple[int, ...] | None, window: Window, *aliases: str
) -> tuple[sql.Composable, dict[str, Any]]:
    """WHERE conditions for operators and epochs, repeated per table alias so the planner can
    push them into both sides of the price/shares join. Values are always bound parameters."""
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for alias in aliases:
        table = sql.Identifier(alias)
        if operators is not None:
            parts.append(sql.SQL("{}.operator_id = ANY(%(operators)s)").format(table))
            params["operators"] = list(operators)
        if window.lo is not None:
            parts.append(sql.SQL("{}.epoch >= %(epoch_lo)s").format(table))
            params["epoch_lo"] = window.lo
        if window.hi is not None:
            parts.append(sql.SQL("{}.epoch <= %(epoch_hi)s").format(table))
            params["epoch_hi"] = window.hi
    condition = sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")
    return condition, params


# --- series: v2 -----------------------------------------------------------------------------------

# One row per (operator, epoch): the price with the stake state behind it, and the operator's
# previous epoch and price inside the window (for the change per epoch). LEFT JOIN: a price
# without a shares row still shows (stake NULL) rather than vanishing.
_SERIES_ROWS = sql.SQL("""
SELECT p.operator_id, p.epoch, p.share_price_perq,
       s.stake_raw AS stake, s.shares_raw AS shares, s.rewards_raw AS rewards{previous}
FROM operator_share_prices p
LEFT JOIN operator_shares s
       ON s.operator_id = p.operator_id AND s.epoch = p.epoch AND {shares_filter}
WHERE {prices_filter}
""")
# The previous row's epoch and price, for the change per epoch. Downsampling needs them in SQL
# (the change's extremes are kept); a full-resolution read adds them in polars instead
# (`_with_previous_columns`), which saves the server a window pass (~25 % of the query).
_PREVIOUS_IN_SQL = sql.SQL(""",
       lag(p.epoch) OVER by_operator AS prev_epoch,
       lag(p.share_price_perq) OVER by_operator AS prev_share_price_perq""")
_BY_OPERATOR = sql.SQL(" WINDOW by_operator AS (PARTITION BY p.operator_id ORDER BY p.epoch)")

# Downsampling, per operator: number the rows by epoch (r, of n), split them into `buckets`
# equal runs, and keep in each run the first and last row, the rows with the lowest and highest
# price, and the rows with the lowest and highest change per epoch (ties: the earliest epoch).
# An operator with at most max_points rows keeps all of them (each row its own bucket). Nothing
# is averaged or interpolated: every row returned is a real (operator, epoch) row.
_SERIES_DOWNSAMPLED = sql.SQL("""
WITH numbered AS (
    SELECT rows.*,
           row_number() OVER (PARTITION BY operator_id ORDER BY epoch) - 1 AS r,
           count(*) OVER (PARTITION BY operator_id) AS n
    FROM ({rows}) AS rows
), keyed AS (
    SELECT numbered.*,
           CASE WHEN n <= %(max_points)s THEN r ELSE r * %(buckets)s / n END AS bucket,
           CASE WHEN prev_share_price_perq IS NOT NULL THEN
               div((share_price_perq - prev_share_price_perq) * {scale},
                   prev_share_price_perq * (epoch - prev_epoch))
           END AS change_key
    FROM numbered
), marked AS (
    SELECT keyed.*,
           min(r) OVER bucket_rows AS first_r,
           max(r) OVER bucket_rows AS last_r,
           first_value(r) OVER (bucket_rows ORDER BY share_price_perq, epoch) AS low_r,
           first_value(r) OVER (bucket_rows ORDER BY share_price_perq DESC, epoch) AS high_r,
           first_value(r) OVER (bucket_rows ORDER BY change_key NULLS LAST, epoch) AS drop_r,
           first_value(r) OVER (bucket_rows ORDER BY change_key DESC NULLS LAST, epoch) AS jump_r
    FROM keyed
    WINDOW bucket_rows AS (PARTITION BY operator_id, bucket)
)
SELECT operator_id, epoch, share_price_perq, stake, shares, rewards, prev_epoch,
       prev_share_price_perq
FROM marked
WHERE r IN (first_r, last_r, low_r, high_r, drop_r, jump_r)
""")


def buckets_for(max_points: int) -> int:
    return max_points // POINTS_PER_BUCKET


def series_plan(request: SeriesRequest, window: Window) -> Plan:
    prices_filter, params = _filters(request.operators, window, "p")
    shares_filter, _ = _filters(request.operators, window, "s")
    if request.max_points is None:
        rows = _SERIES_ROWS.format(
            previous=sql.SQL(""), prices_filter=prices_filter, shares_filter=shares_filter
        )
        query = sql.SQL("{} ORDER BY p.operator_id, p.epoch").format(rows)
        return Plan("series_v2", query, params)
    rows = sql.SQL("{}{}").format(
        _SERIES_ROWS.format(
            previous=_PREVIOUS_IN_SQL, prices_filter=prices_filter, shares_filter=shares_filter
        ),
        _BY_OPERATOR,
    )
    query = sql.SQL("{} ORDER BY operator_id, epoch").format(
        _SERIES_DOWNSAMPLED.format(rows=rows, scale=sql.Literal(CHANGE_KEY_SCALE))
    )
    params = {
        **params,
        "max_points": request.max_points,
        "buckets": buckets_for(request.max_points),
    }
    return Plan("series_v2", query, params)


_FULL_RESOLUTION_SCHEMA = {
    name: dtype for name, dtype in SERIES_EXACT_SCHEMA.items() if not name.startswith("prev_")
}


def _with_previous_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """prev_epoch / prev_share_price_perq of rows sorted by (operator, epoch), as SQL's lag()."""
    return frame.with_columns(
        pl.col("epoch").shift(1).over("operator_id").alias("prev_epoch"),
        pl.col("share_price_perq").shift(1).over("operator_id").alias("prev_share_price_perq"),
    )


def resolve_window_v2(engine: Engine, request: SeriesRequest) -> Window:
    with _connection(engine) as conn:
        return _window(conn, request, _LATEST_NORMALIZED_SQL)


def series_v2(engine: Engine, request: SeriesRequest) -> pl.DataFrame:
    """The request's series from the normalized tables, reduced in SQL when max_points is set."""
    with _connection(engine) as conn:
        window = _window(conn, request, _LATEST_NORMALIZED_SQL)
        if window.empty:
            return finish_series(empty_series())
        plan = series_plan(request, window)
        if request.max_points is not None:
            frame = _copy_frame(conn, plan, SERIES_EXACT_SCHEMA)
        else:
            frame = _with_previous_columns(_copy_frame(conn, plan, _FULL_RESOLUTION_SCHEMA))
    return finish_series(frame)


# --- series: v1 (the old way, kept as the baseline) ----------------------------------------------

_RAW_DOCUMENTS_SQL = sql.SQL(
    "SELECT epoch, data::text FROM epochs WHERE {epochs_filter} ORDER BY epoch"
)


def _raw_documents(conn: psycopg.Connection, window: Window) -> Iterator[Any]:
    """Parsed documents of the window's epochs, read in batches (never the whole table at once)."""
    from shareprice.chain.parser import parse_document

    epochs_filter, params = _filters(None, window, "epochs")
    started = time.perf_counter()
    count = 0
    with conn.cursor(name="v1_documents") as cur:
        cur.itersize = 50
        cur.execute(_RAW_DOCUMENTS_SQL.format(epochs_filter=epochs_filter), params)
        for _epoch, text in cur:
            count += 1
            yield parse_document(text)
    _record("v1_documents", started, count)


def series_v1(engine: Engine, request: SeriesRequest) -> pl.DataFrame:
    """The same frame as series_v2, from the raw documents parsed in Python."""
    wanted = None if request.operators is None else set(request.operators)
    per_operator: dict[int, list[tuple]] = {}
    with _connection(engine, timeout_ms=None) as conn:
        window = _window(conn, request, _LATEST_RAW_SQL)
        if window.empty:
            return finish_series(empty_series())
        for record in _raw_documents(conn, window):
            for state in record.operators:
                if wanted is not None and state.operator_id not in wanted:
                    continue
                per_operator.setdefault(state.operator_id, []).append(
                    (
                        state.operator_id,
                        record.epoch,
                        state.share_price_perq,
                        state.stake,
                        state.shares,
                        state.rewards,
                    )
                )
    rows: list[tuple] = []
    for operator_id in sorted(per_operator):
        operator_rows = _with_previous(per_operator[operator_id])
        if request.max_points is not None:
            operator_rows = downsample_rows(operator_rows, request.max_points)
        rows.extend(operator_rows)
    return finish_series(_frame_from_rows(rows, SERIES_EXACT_SCHEMA))


def _with_previous(rows: list[tuple]) -> list[tuple]:
    """Append (prev_epoch, prev_share_price_perq) to each row of one operator, sorted by epoch."""
    rows.sort(key=lambda row: row[1])
    out = []
    previous: tuple | None = None
    for row in rows:
        out.append((*row, *((previous[1], previous[2]) if previous else (None, None))))
        previous = row
    return out


def change_key(
    price: int, prev_price: int | None, epoch: int, prev_epoch: int | None
) -> int | None:
    """trunc((price - prev) * CHANGE_KEY_SCALE / (prev * gap)), as SQL's div() computes it."""
    if prev_price is None or prev_epoch is None:
        return None
    numerator = (price - prev_price) * CHANGE_KEY_SCALE
    denominator = prev_price * (epoch - prev_epoch)
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


def downsample_rows(rows: Sequence[tuple], max_points: int) -> list[tuple]:
    """The SQL downsampling, in Python, for one operator's rows (sorted by epoch).

    Row layout: (operator_id, epoch, price, stake, shares, rewards, prev_epoch, prev_price).
    """
    n = len(rows)
    if n <= max_points:
        return list(rows)
    buckets = buckets_for(max_points)
    keep: set[int] = set()
    start = 0
    while start < n:
        bucket = start * buckets // n
        end = start
        while end < n and end * buckets // n == bucket:
            end += 1
        members = range(start, end)
        keys = {r: change_key(rows[r][2], rows[r][7], rows[r][1], rows[r][6]) for r in members}
        keep.add(start)
        keep.add(end - 1)
        keep.add(min(members, key=lambda r: (rows[r][2], rows[r][1])))
        keep.add(min(members, key=lambda r: (-rows[r][2], rows[r][1])))
        keep.add(min(members, key=lambda r: (keys[r] is None, keys[r] or 0, rows[r][1])))
        keep.add(min(members, key=lambda r: (keys[r] is None, -(keys[r] or 0), rows[r][1])))
        start = end
    return [rows[r] for r in sorted(keep)]


# --- series frames --------------------------------------------------------------------------------


def empty_series() -> pl.DataFrame:
    return pl.DataFrame(schema=SERIES_EXACT_SCHEMA)


def _frame_from_rows(rows: list[tuple], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    return pl.DataFrame(
        [
            pl.Series(name, list(values), dtype=dtype)
            for (name, dtype), values in zip(schema.items(), columns, strict=True)
        ]
    )


def _to_float(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Float64)


def finish_series(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the drawing columns (floats) computed from the exact ones; v1 and v2 share this."""
    perq = float(PERQ)
    return frame.with_columns(
        (_to_float("share_price_perq") / perq).alias("share_price"),
        (_to_float("stake") / perq).alias("stake_ai3"),
        (_to_float("rewards") / perq).alias("rewards_ai3"),
        (
            (pl.col("share_price_perq") - pl.col("prev_share_price_perq")).cast(pl.Float64)
            / _to_float("prev_share_price_perq")
            / (pl.col("epoch") - pl.col("prev_epoch")).cast(pl.Float64)
            * 10_000.0
        ).alias("change_bps"),
    )


# --- the all-operators band -----------------------------------------------------------------------

# Per epoch, the 5/25/50/75/95th percentile of every operator's price: what the overview draws
# instead of 900 traces. percentile_disc picks real prices (exact NUMERIC). This is the live
# computation: it sorts every price of the window (0.7-1.1 s for all ~3.5 M at seed scale).
_BAND_LIVE_SQL = sql.SQL("""
SELECT epoch, n AS operators, q[1] AS p05, q[2] AS p25, q[3] AS p50, q[4] AS p75, q[5] AS p95
FROM (
    SELECT epoch, count(*) AS n,
           percentile_disc(ARRAY[{fractions}]::float8[]) WITHIN GROUP (ORDER BY share_price_perq)
               AS q
    FROM operator_share_prices p
    WHERE {filter}
    GROUP BY epoch
) AS per_epoch
""")
# What v2 reads: the band stored per epoch by sql/020 (kept by triggers on the backfill's epoch
# marks), trusted only where its operator count equals the mark's; any other normalized epoch of
# the window (none, normally) is computed live right here, so the answer is never stale.
_BAND_SQL = sql.SQL("""
WITH marks AS (
    SELECT n.epoch, n.operator_count FROM epoch_normalizations n WHERE {marks_filter}
), stored AS (
    SELECT b.epoch, b.operators, b.p05, b.p25, b.p50, b.p75, b.p95
    FROM epoch_price_bands b
    JOIN marks m ON m.epoch = b.epoch AND m.operator_count = b.operators
), stale AS (
    SELECT m.epoch FROM marks m
    WHERE m.operator_count > 0 AND NOT EXISTS (SELECT 1 FROM stored s WHERE s.epoch = m.epoch)
), live AS (
    SELECT epoch, n AS operators, q[1] AS p05, q[2] AS p25, q[3] AS p50, q[4] AS p75, q[5] AS p95
    FROM (
        SELECT p.epoch, count(*) AS n,
               percentile_disc(ARRAY[{fractions}]::float8[])
                   WITHIN GROUP (ORDER BY p.share_price_perq) AS q
        FROM operator_share_prices p
        WHERE p.epoch BETWEEN (SELECT min(epoch) FROM stale) AND (SELECT max(epoch) FROM stale)
          AND p.epoch IN (SELECT epoch FROM stale)
        GROUP BY p.epoch
    ) AS per_epoch
)
SELECT * FROM stored
UNION ALL
SELECT * FROM live
""")
# With max_points, the band's epochs are reduced like an operator's series: equal runs of epochs,
# keeping each run's first and last epoch and the epochs of its lowest p5 and highest p95, so
# the band's outer envelope is exact and every value drawn is a real percentile of a real epoch.
_BAND_DOWNSAMPLED = sql.SQL("""
WITH band AS ({band}), numbered AS (
    SELECT band.*, row_number() OVER (ORDER BY epoch) - 1 AS r, count(*) OVER () AS n FROM band
), keyed AS (
    SELECT numbered.*,
           CASE WHEN n <= %(max_points)s THEN r ELSE r * %(buckets)s / n END AS bucket
    FROM numbered
), marked AS (
    SELECT keyed.*,
           min(r) OVER bucket_rows AS first_r,
           max(r) OVER bucket_rows AS last_r,
           first_value(r) OVER (bucket_rows ORDER BY p05, epoch) AS low_r,
           first_value(r) OVER (bucket_rows ORDER BY p95 DESC, epoch) AS high_r
    FROM keyed
    WINDOW bucket_rows AS (PARTITION BY bucket)
)
SELECT epoch, operators, p05, p25, p50, p75, p95 FROM marked
WHERE r IN (first_r, last_r, low_r, high_r)
""")
BAND_POINTS_PER_BUCKET = 4
_BAND_WORK_MEM = "256MB"


def band_plan(window: Window, max_points: int | None = None, *, live: bool = False) -> Plan:
    """The band's SQL: stored (what v2 reads) or `live` (recomputed from every price)."""
    fractions = sql.SQL(", ").join(sql.Literal(f) for f in BAND_FRACTIONS)
    if live:
        condition, params = _filters(None, window, "p")
        band = _BAND_LIVE_SQL.format(fractions=fractions, filter=condition)
    else:
        condition, params = _filters(None, window, "n")
        band = _BAND_SQL.format(fractions=fractions, marks_filter=condition)
    name = "band_live" if live else "band_v2"
    if max_points is None:
        return Plan(name, sql.SQL("{} ORDER BY epoch").format(band), params)
    query = sql.SQL("{} ORDER BY epoch").format(_BAND_DOWNSAMPLED.format(band=band))
    params = {
        **params,
        "max_points": max_points,
        "buckets": max_points // BAND_POINTS_PER_BUCKET,
    }
    return Plan(name, query, params)


def band_v2(engine: Engine, request: SeriesRequest, *, live: bool = False) -> pl.DataFrame:
    """Percentile band of all operators' prices per epoch over the request's epochs, at most
    max_points epochs (see _BAND_DOWNSAMPLED). The request's operators do not apply: the band
    is always every operator. `live` recomputes it from every price instead of reading the
    stored band (the benchmark's comparison; same result)."""
    with _connection(engine) as conn:
        window = _window(conn, request, _LATEST_NORMALIZED_SQL)
        if window.empty:
            return finish_band(pl.DataFrame(schema=BAND_EXACT_SCHEMA))
        conn.execute("SELECT set_config('work_mem', %s, true)", (_BAND_WORK_MEM,))
        if not live and not _has_stored_bands(conn):
            live = True  # a database not yet migrated to sql/020: still right, only slower
        plan = band_plan(window, request.max_points, live=live)
        frame = _copy_frame(conn, plan, BAND_EXACT_SCHEMA)
    return finish_band(frame)


def _has_stored_bands(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('epoch_price_bands') IS NOT NULL").fetchone()
    return bool(row and row[0])


def band_live(engine: Engine, request: SeriesRequest) -> pl.DataFrame:
    return band_v2(engine, request, live=True)


def downsample_band_rows(rows: Sequence[tuple], max_points: int) -> list[tuple]:
    """_BAND_DOWNSAMPLED in Python (v1). Rows: (epoch, operators, p05, p25, p50, p75, p95)."""
    n = len(rows)
    if n <= max_points:
        return list(rows)
    buckets = max_points // BAND_POINTS_PER_BUCKET
    keep: set[int] = set()
    start = 0
    while start < n:
        bucket = start * buckets // n
        end = start
        while end < n and end * buckets // n == bucket:
            end += 1
        members = range(start, end)
        keep.update((start, end - 1))
        keep.add(min(members, key=lambda r: (rows[r][2], rows[r][0])))
        keep.add(min(members, key=lambda r: (-rows[r][6], rows[r][0])))
        start = end
    return [rows[r] for r in sorted(keep)]


def percentile_disc(sorted_values: Sequence[int], fraction: float) -> int:
    """PostgreSQL's percentile_disc: the first value whose position reaches the fraction."""
    row = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[row - 1]


def band_v1(engine: Engine, request: SeriesRequest) -> pl.DataFrame:
    rows = []
    with _connection(engine, timeout_ms=None) as conn:
        window = _window(conn, request, _LATEST_RAW_SQL)
        if window.empty:
            return finish_band(pl.DataFrame(schema=BAND_EXACT_SCHEMA))
        for record in _raw_documents(conn, window):
            prices = sorted(state.share_price_perq for state in record.operators)
            if prices:
                rows.append(
                    (
                        record.epoch,
                        len(prices),
                        *(percentile_disc(prices, f) for f in BAND_FRACTIONS),
                    )
                )
    rows.sort()
    if request.max_points is not None:
        rows = downsample_band_rows(rows, request.max_points)
    return finish_band(_frame_from_rows(rows, BAND_EXACT_SCHEMA))


def finish_band(frame: pl.DataFrame) -> pl.DataFrame:
    perq = float(PERQ)
    return frame.with_columns(
        *((_to_float(name) / perq).alias(f"{name}_price") for name in BAND_COLUMNS)
    )


# --- operators ------------------------------------------------------------------------------------

# Every known operator with its latest state and the price 1, 7 and 30 days before it (the latest
# price at or before that epoch). Each lateral is one backward index probe on the primary key, so
# ~1,000 operators cost ~4,000 probes, not a scan of 3.5 M rows.
_OPERATORS_SQL = sql.SQL("""
SELECT m.operator_id, m.name, m.color, m.status, m.nomination_tax, m.first_seen_epoch,
       m.last_seen_epoch, m.is_active::text AS is_active,
       latest.epoch AS latest_epoch, latest.share_price_perq,
       s.stake_raw AS stake, s.shares_raw AS shares, s.rewards_raw AS rewards,
       {window_columns}
FROM operators_metadata m
LEFT JOIN LATERAL (
    SELECT p.epoch, p.share_price_perq FROM operator_share_prices p
    WHERE p.operator_id = m.operator_id ORDER BY p.epoch DESC LIMIT 1
) AS latest ON true
LEFT JOIN operator_shares s ON s.operator_id = m.operator_id AND s.epoch = latest.epoch
{window_joins}
ORDER BY m.operator_id
""")
_WINDOW_JOIN = sql.SQL("""
LEFT JOIN LATERAL (
    SELECT p.epoch, p.share_price_perq FROM operator_share_prices p
    WHERE p.operator_id = m.operator_id AND p.epoch <= latest.epoch - {span}
    ORDER BY p.epoch DESC LIMIT 1
) AS {alias} ON true
""")


def operators_plan(rate: yields.EpochRate) -> Plan:
    columns, joins, params = [], [], {}
    for days in yields.WINDOWS_DAYS:
        alias = sql.Identifier(f"back_{days}d")
        span = f"span_{days}d"
        params[span] = rate.epochs_for_days(days)
        columns.append(
            sql.SQL("{alias}.epoch AS {epoch}, {alias}.share_price_perq AS {price}").format(
                alias=alias,
                epoch=sql.Identifier(f"epoch_{days}d"),
                price=sql.Identifier(f"price_{days}d_perq"),
            )
        )
        joins.append(_WINDOW_JOIN.format(span=sql.Placeholder(span), alias=alias))
    query = _OPERATORS_SQL.format(
        window_columns=sql.SQL(", ").join(columns), window_joins=sql.SQL("").join(joins)
    )
    return Plan("operators", query, params)


def operators(engine: Engine, rate: yields.EpochRate | None = None) -> pl.DataFrame:
    """Every operator with metadata, latest price/stake, and 1/7/30-day yield and APY."""
    rate = rate or epoch_rate(engine)
    with _connection(engine) as conn:
        frame = _copy_frame(conn, operators_plan(rate), OPERATOR_SCHEMA)
    return add_yields(frame, rate)


def largest_operators(operators_frame: pl.DataFrame, count: int) -> tuple[int, ...]:
    """The `count` largest operators by latest stake, active ones first (the default view)."""
    if operators_frame.height == 0:
        return ()
    ranked = operators_frame.filter(pl.col("stake").is_not_null()).sort(
        ["is_active", "stake", "operator_id"], descending=[True, True, False]
    )
    return tuple(ranked.head(count)["operator_id"].to_list())


def add_yields(frame: pl.DataFrame, rate: yields.EpochRate) -> pl.DataFrame:
    """yield_Nd / apy_Nd columns from the exact prices (None where history is too short)."""
    now = frame["share_price_perq"].to_list()
    latest = frame["latest_epoch"].to_list()
    columns = []
    for days in yields.WINDOWS_DAYS:
        then = frame[f"price_{days}d_perq"].to_list()
        then_epoch = frame[f"epoch_{days}d"].to_list()
        y_values, apy_values = [], []
        for p_now, p_then, e_now, e_then in zip(now, then, latest, then_epoch, strict=True):
            if p_now is None or p_then is None:
                y_values.append(None)
                apy_values.append(None)
                continue
            span_days = (e_now - e_then) / rate.epochs_per_day
            y_values.append(yields.yield_float(p_now, p_then))
            apy_values.append(yields.apy(p_now, p_then, span_days))
        columns.append(pl.Series(f"yield_{days}d", y_values, dtype=pl.Float64))
        columns.append(pl.Series(f"apy_{days}d", apy_values, dtype=pl.Float64))
    perq = float(PERQ)
    return frame.with_columns(
        (_to_float("share_price_perq") / perq).alias("share_price"),
        (_to_float("stake") / perq).alias("stake_ai3"),
        *columns,
    )


# --- epochs per day and dates ---------------------------------------------------------------------

_RATE_SQL = """
SELECT (SELECT epoch FROM epochs WHERE end_block IS NOT NULL ORDER BY epoch LIMIT 1),
       (SELECT end_block FROM epochs WHERE end_block IS NOT NULL ORDER BY epoch LIMIT 1),
       (SELECT epoch FROM epochs WHERE end_block IS NOT NULL ORDER BY epoch DESC LIMIT 1),
       (SELECT end_block FROM epochs WHERE end_block IS NOT NULL ORDER BY epoch DESC LIMIT 1),
       (SELECT epoch FROM epochs WHERE indexed_at IS NOT NULL ORDER BY epoch LIMIT 1),
       (SELECT extract(epoch FROM indexed_at)::float8 FROM epochs
         WHERE indexed_at IS NOT NULL ORDER BY epoch LIMIT 1),
       (SELECT epoch FROM epochs WHERE indexed_at IS NOT NULL ORDER BY epoch DESC LIMIT 1),
       (SELECT extract(epoch FROM indexed_at)::float8 FROM epochs
         WHERE indexed_at IS NOT NULL ORDER BY epoch DESC LIMIT 1)
"""


def epoch_rate(engine: Engine) -> yields.EpochRate:
    """Epochs per day from end blocks, else live-looking timestamps, else 120 (see yields)."""
    with _connection(engine) as conn:
        e1, b1, e2, b2, t_e1, t1, t_e2, t2 = _scalar_row(conn, "epoch_rate", _RATE_SQL)
    by_blocks = None if e1 is None else yields.rate_from_end_blocks((e1, b1), (e2, b2))
    by_time = None if t_e1 is None else yields.rate_from_timestamps((t_e1, t1), (t_e2, t2))
    return yields.choose_rate(by_blocks, by_time)


_DATES_SQL = """
SELECT epoch, indexed_at FROM epochs
WHERE indexed_at IS NOT NULL AND epoch BETWEEN %(lo)s AND %(hi)s ORDER BY epoch
"""


def epoch_dates(engine: Engine, lo: int, hi: int) -> pl.DataFrame:
    """epoch -> UTC time, when the data's timestamps look like live indexing; else empty.

    Format A `timestamp` is when the indexer ran: after a bulk re-index it says nothing about the
    epoch, so dates are only shown when the timestamps advance at a plausible epoch rate.
    """
    empty = pl.DataFrame(schema={"epoch": pl.Int64, "time": pl.Datetime("us", "UTC")})
    with _connection(engine) as conn:
        e1, _, e2, _, t_e1, t1, t_e2, t2 = _scalar_row(conn, "epoch_rate", _RATE_SQL)
        if t_e1 is None or yields.rate_from_timestamps((t_e1, t1), (t_e2, t2)) is None:
            return empty
        started = time.perf_counter()
        rows = conn.execute(_DATES_SQL, {"lo": lo, "hi": hi}).fetchall()
        _record("epoch_dates", started, len(rows))
    if not rows:
        return empty
    epochs, times = zip(*rows, strict=True)
    return pl.DataFrame(
        {"epoch": pl.Series(epochs, dtype=pl.Int64), "time": pl.Series(times)}
    ).with_columns(pl.col("time").dt.convert_time_zone("UTC"))


def epoch_date_labels(engine: Engine, lo: int, hi: int) -> dict[int, str]:
    """epoch -> "YYYY-MM-DD HH:MM UTC" for hover texts; empty when dates are not known."""
    frame = epoch_dates(engine, lo, hi)
    return {epoch: moment.strftime("%Y-%m-%d %H:%M UTC") for epoch, moment in frame.iter_rows()}


# --- helpers for display --------------------------------------------------------------------------


def perq_to_decimal(value: int | None) -> str | None:
    """An exact decimal string of a 1e18-scaled integer: 1000036353676459997 -> 1.000036353676459997."""
    if value is None:
        return None
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), PERQ)
    return f"{sign}{whole}.{frac:018d}"


def frames_equal(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Same columns, dtypes and values (nulls equal): the v1 == v2 check."""
    return a.schema == b.schema and a.equals(b)
