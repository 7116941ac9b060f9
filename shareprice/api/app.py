"""The API's routes: a Starlette app mounted at /api on the dashboard's own server.

Each handler parses its parameters (`params`), asks shareprice.queries in a worker thread (the
database calls are blocking; Streamlit's event loop must keep serving websockets), and shapes
the answer. What every route shares lives here once: the engine (its own pool, every statement
under a timeout), errors as JSON (400 naming the parameter, 503 with a masked line while the
database is down, never a traceback), the data-version ETag with 304, and CORS, closed unless
SHAREPRICE_API_CORS names origins.
"""

from __future__ import annotations

import gzip
import html
import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from shareprice import queries
from shareprice.api.params import ParamError, Params, known_or_error
from shareprice.backfill import status as backfill_status
from shareprice.errors import error_line
from shareprice.store import analytics_view, config, db

log = logging.getLogger("shareprice.api")

CORS_VAR = "SHAREPRICE_API_CORS"
TIMEOUT_VAR = "SHAREPRICE_API_TIMEOUT_MS"
DEFAULT_TIMEOUT_MS = 10_000
#: Bumped when a response's shape changes, so an ETag never matches a body of another shape.
API_REVISION = "1"
MAX_RAW_LIMIT = 100
MAX_RAW_BYTES = 64 * 2**20
#: /api/v1/series: default operators (the largest), and the most rows one response may hold.
SERIES_DEFAULT_OPERATORS = 8
SERIES_MAX_OPERATORS = 64
SERIES_MAX_POINTS = 20_000
SERIES_MAX_ROWS = 200_000
CACHE_CONTROL = "public, no-cache"  # may be stored, but revalidated (ETag) before each use

JSON = "application/json"

_engine_lock = threading.Lock()
_engine: Engine | None = None


def timeout_ms() -> int:
    value = os.environ.get(TIMEOUT_VAR, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_TIMEOUT_MS


def engine() -> Engine:
    """The API's engine: the read-only URL when configured (what the dashboard reads), else the
    main one, else the embedded server. Resolved once per process, so a stopped database is a
    503 until it is back (pre-ping then reconnects) rather than being restarted by a request.
    Every connection carries `statement_timeout` (SHAREPRICE_API_TIMEOUT_MS, 10 s)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            url = db.resolve_url(config.readonly_url() or config.configured_url())
            options = url.query.get("options", "")
            options = options if isinstance(options, str) else " ".join(options)
            url = url.update_query_dict(
                {"options": f"{options} -c statement_timeout={timeout_ms()}".strip()}
            )
            _engine = db.get_engine(url)
        return _engine


# --- responses ----------------------------------------------------------------------------------


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def raw_json_response(text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text.encode(), media_type=JSON, headers=headers)


def error(status: int, message: str) -> Response:
    return json_response({"error": message}, status=status)


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None) or exc, "sqlstate", None)


def fault_response(exc: Exception) -> Response:
    """The JSON answer to an exception a handler raised: 400, 503 or a masked 500."""
    if isinstance(exc, ParamError | queries.RequestError | queries.EpochRowsError):
        return error(400, str(exc))
    state = _sqlstate(exc)
    if state == "57014":  # query_canceled: the statement timeout
        return error(503, f"the query took longer than the {timeout_ms()} ms statement timeout")
    if state == "42P01":  # undefined_table
        return error(503, "the database has no shareprice schema yet (run `shareprice migrate`)")
    if isinstance(
        exc,
        db.DatabaseUnavailable
        | sa.exc.OperationalError
        | sa.exc.InterfaceError
        | psycopg.OperationalError
        | psycopg.InterfaceError,
    ) or (state or "").startswith("08"):
        return error(503, f"database unavailable: {error_line(exc)}")
    log.exception("API request failed")
    return error(500, "internal error (the server log has the details)")


Handler = Callable[[Request], Response]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Run a blocking handler in a worker thread; any exception becomes a JSON answer."""

    def guarded(request: Request) -> Response:
        try:
            return handler(request)
        except Exception as exc:  # every fault is answered as JSON, never a traceback
            return fault_response(exc)

    async def run(request: Request) -> Response:
        return await run_in_threadpool(guarded, request)

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def etag_for(version: int) -> str:
    return f'"sp{API_REVISION}-{version}"'


def not_modified(request: Request) -> tuple[Response | None, dict[str, str]]:
    """(304 response or None, headers to send): the ETag is the data version, which moves on
    every backfill write, so a matching If-None-Match means the client's copy is current."""
    tag = etag_for(queries.data_version(engine()))
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL}
    wanted = request.headers.get("if-none-match", "")
    if wanted.strip() == "*" or tag in {t.strip().removeprefix("W/") for t in wanted.split(",")}:
        return Response(status_code=304, headers=headers), headers
    return None, headers


class ResponseCache:
    """Bodies of data responses, keyed by path, parameters and ETag (the data version), so a
    repeated request is answered from memory until the next backfill write makes its key
    unreachable. Bounded in bytes (least recently used out first). Concurrent misses of one key
    compute it once: the others wait for the first and read its body.

    Large bodies are also kept gzip-compressed (once, when stored) and sent that way to clients
    that accept it: the old rows of every epoch are 2.3 MB of JSON for 4 operators (13 MB for
    64), ~7x smaller compressed, and pushing megabytes through the server's pure-Python HTTP
    layer is what limits many concurrent clients, not the database."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._computing: dict[tuple, threading.Lock] = {}

    def get_or_compute(
        self, key: tuple, compute: Callable[[], Response], gzip_ok: bool
    ) -> Response:
        with self._lock:
            hit = self._hit(key, gzip_ok)
            if hit is not None:
                return hit
            flight = self._computing.setdefault(key, threading.Lock())
        with flight:
            with self._lock:
                hit = self._hit(key, gzip_ok)
            if hit is not None:
                return hit
            try:
                response = compute()
            finally:
                with self._lock:
                    self._computing.pop(key, None)
            if response.status_code != 200:
                return response
            entry = self._store(key, response)
            return response if entry is None else entry.response(gzip_ok)

    def _hit(self, key: tuple, gzip_ok: bool) -> Response | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.response(gzip_ok)

    def _store(self, key: tuple, response: Response) -> _Entry | None:
        body = bytes(response.body)
        if len(body) > self.max_bytes // 4:
            return None
        headers = {k: v for k, v in response.headers.items() if k != "content-length"}
        compressed = gzip.compress(body, compresslevel=1) if len(body) >= GZIP_MIN_BYTES else None
        entry = _Entry(body, compressed, response.media_type or JSON, headers)
        with self._lock:
            self._entries.setdefault(key, entry)
            self._bytes += entry.size
            while self._bytes > self.max_bytes and self._entries:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.size
        return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


GZIP_MIN_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True)
class _Entry:
    body: bytes
    gzipped: bytes | None
    media_type: str
    headers: dict[str, str]

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"")

    def response(self, gzip_ok: bool) -> Response:
        if self.gzipped is None:
            return Response(self.body, media_type=self.media_type, headers=self.headers)
        headers = {**self.headers, "Vary": "Accept-Encoding"}
        if not gzip_ok:
            return Response(self.body, media_type=self.media_type, headers=headers)
        headers["Content-Encoding"] = "gzip"
        return Response(self.gzipped, media_type=self.media_type, headers=headers)


CACHE_MAX_BYTES = 256 * 2**20
response_cache = ResponseCache(CACHE_MAX_BYTES)


def from_cache(
    request: Request, headers: dict[str, str], compute: Callable[[], Response]
) -> Response:
    """`compute()` (a data response whose ETag is in `headers`), from the response cache."""
    query = tuple(sorted(request.query_params.multi_items()))
    key = (request.url.path, query, headers["ETag"])
    gzip_ok = "gzip" in request.headers.get("accept-encoding", "").lower()
    return response_cache.get_or_compute(key, compute, gzip_ok)


def exact_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows for JSON: exact integers wider than 64 bits as decimal strings, nulls as null."""
    wide = [name for name, dtype in frame.schema.items() if dtype == pl.Int128]
    return frame.with_columns(pl.col(wide).cast(pl.String)).to_dicts()


# --- the old API --------------------------------------------------------------------------------

_EPOCHS_PARAMS = ("limit", "sample", "health", "operators")


def _epochs(request: Request, version_header: bool) -> Response:
    # The old frontend adds cache-busting parameters of its own: unknown ones are ignored here.
    p = Params(request.query_params, _EPOCHS_PARAMS, strict=False)
    extra = {"x-api-version": "2.0"} if version_header else {}
    limit = p.limit_or_all("limit", maximum=queries.EPOCH_ROWS_MAX_LIMIT)
    sample = p.integer("sample", minimum=1, maximum=queries.EPOCH_ROWS_MAX_SAMPLE)
    operators = p.operator_ids("operators", maximum_count=queries.EPOCH_ROWS_MAX_OPERATORS)
    if p.flag("health"):
        return json_response(queries.epochs_health(engine(), timeout_ms()), headers=extra)
    cached, headers = not_modified(request)
    headers.update(extra)
    if cached is not None:
        cached.headers.update(extra)
        return cached
    return from_cache(request, headers, lambda: _epoch_rows(headers, limit, sample, operators))


def _epoch_rows(
    headers: dict[str, str],
    limit: int | None,
    sample: int | None,
    operators: tuple[int, ...] | None,
) -> Response:
    headers = dict(headers)
    result = queries.epoch_rows(
        engine(), limit=limit, sample=sample, operators=operators, timeout_ms=timeout_ms()
    )
    if result.operators is None:
        headers["x-operators"] = f"all {result.operators_known}"
    elif result.capped:
        headers["x-operators"] = (
            f"largest {len(result.operators)} of {result.operators_known} by latest stake "
            "(operators= names others)"
        )
    else:
        headers["x-operators"] = ",".join(str(o) for o in result.operators)
    return raw_json_response("[" + ",".join(result.rows) + "]", headers=headers)


@endpoint
def epochs(request: Request) -> Response:
    """The old /api/epochs rows (normalized tables)."""
    return _epochs(request, version_header=False)


@endpoint
def epochs_v2(request: Request) -> Response:
    """The old /api/epochs-v2: the same rows, with x-api-version: 2.0."""
    return _epochs(request, version_header=True)


@endpoint
def summary(request: Request) -> Response:
    """The latest normalized epoch: totals, rewards and every operator's price, exact."""
    Params(request.query_params, (), strict=False)
    cached, headers = not_modified(request)
    if cached is not None:
        return cached

    def compute() -> Response:
        text = queries.latest_epoch_summary(engine(), timeout_ms())
        if text is None:
            return error(404, "no epoch is normalized yet (run `shareprice backfill`)")
        return raw_json_response(text, headers=headers)

    return from_cache(request, headers, compute)


@endpoint
def raw_epochs(request: Request) -> Response:
    """The newest stored raw documents, newest first, unchanged."""
    p = Params(request.query_params, ("limit",), strict=False)
    limit = p.integer("limit", minimum=1, maximum=MAX_RAW_LIMIT, default=1)
    assert limit is not None
    documents = queries.raw_epochs(engine(), limit, MAX_RAW_BYTES, timeout_ms())
    parts = [f'{{"epoch":{epoch},"data":{text}}}' for epoch, text in documents]
    return raw_json_response("[" + ",".join(parts) + "]", headers={"Cache-Control": "no-store"})


# --- the versioned API --------------------------------------------------------------------------


@endpoint
def v1_operators(request: Request) -> Response:
    """Every operator: metadata, latest price, stake and 1/7/30-day yields."""
    Params(request.query_params, (), strict=True)
    cached, headers = not_modified(request)
    if cached is not None:
        return cached
    return from_cache(
        request,
        headers,
        lambda: json_response(exact_rows(queries.operators(engine())), headers=headers),
    )


def _series_request(p: Params, operators: tuple[int, ...] | None) -> queries.SeriesRequest:
    epoch_from = p.integer("from", minimum=0, maximum=2**31 - 1)
    epoch_to = p.integer("to", minimum=0, maximum=2**31 - 1)
    if epoch_from is not None and epoch_to is not None and epoch_from > epoch_to:
        raise ParamError(f"from: epoch {epoch_from} is after to={epoch_to}")
    return queries.SeriesRequest(
        operators=operators,
        epoch_from=epoch_from,
        epoch_to=epoch_to,
        last_epochs=p.integer("last", minimum=1, maximum=2**31 - 1),
        max_points=p.integer(
            "max_points",
            minimum=6,
            maximum=SERIES_MAX_POINTS,
            default=queries.DEFAULT_MAX_POINTS,
        ),
    )


_SERIES_COLUMNS = ("operator_id", "epoch", "share_price_perq", "stake", "shares", "rewards")


@endpoint
def v1_series(request: Request) -> Response:
    """Share-price series of some operators (the explorer's request), exact, downsampled."""
    p = Params(
        request.query_params,
        ("operators", "from", "to", "last", "max_points", "format"),
        strict=True,
    )
    wanted = p.operator_ids("operators", maximum_count=SERIES_MAX_OPERATORS)
    fmt = p.choice("format", ("json", "csv", "parquet"), "json")
    series_request = _series_request(p, wanted)
    max_points = series_request.max_points
    assert max_points is not None
    cached, headers = not_modified(request)
    if cached is not None:
        return cached
    return from_cache(
        request, headers, lambda: _series_response(p, wanted, fmt, series_request, headers)
    )


def _series_response(
    p: Params,
    wanted: tuple[int, ...] | None,
    fmt: str,
    series_request: queries.SeriesRequest,
    headers: dict[str, str],
) -> Response:
    headers = dict(headers)
    max_points = series_request.max_points
    assert max_points is not None
    table = queries.operators(engine())
    if wanted is None:
        wanted = queries.largest_operators(table, SERIES_DEFAULT_OPERATORS)
        series_request = _series_request(p, wanted)
    else:
        known_or_error("operators", wanted, set(table["operator_id"].to_list()))
    if len(wanted) * max_points > SERIES_MAX_ROWS:
        raise ParamError(
            f"max_points: {len(wanted)} operators x {max_points} points is over "
            f"the {SERIES_MAX_ROWS:,} rows one response may hold"
        )
    headers["x-operators"] = ",".join(str(o) for o in wanted)
    frame = queries.series_v2(engine(), series_request).select(_SERIES_COLUMNS)
    if fmt == "csv":
        return Response(frame.write_csv(), media_type="text/csv", headers=headers)
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.write_parquet(buffer)  # Int128 columns stay exact 128-bit integers
        return Response(
            buffer.getvalue(), media_type="application/vnd.apache.parquet", headers=headers
        )
    return json_response(exact_rows(frame), headers=headers)


@endpoint
def v1_band(request: Request) -> Response:
    """Percentiles (5/25/50/75/95) of every operator's price per epoch, exact."""
    p = Params(request.query_params, ("from", "to", "last", "max_points"), strict=True)
    band_request = _series_request(p, None)
    cached, headers = not_modified(request)
    if cached is not None:
        return cached

    def compute() -> Response:
        frame = queries.band_v2(engine(), band_request).select(
            ["epoch", "operators", *queries.BAND_COLUMNS]
        )
        return json_response(exact_rows(frame), headers=headers)

    return from_cache(request, headers, compute)


@endpoint
def v1_progress(request: Request) -> Response:
    """How far the backfill has got (the progress page's summary)."""
    Params(request.query_params, (), strict=True)
    body = backfill_status.summarize(engine()).to_json()
    body["analytics_view"] = analytics_view.state(engine()).version
    return json_response(body, headers={"Cache-Control": "no-store"})


@endpoint
def v1_checks_latest(request: Request) -> Response:
    """The latest stored integrity-check run with its results."""
    Params(request.query_params, (), strict=True)
    from shareprice import checks

    loaded = checks.load_results(engine())
    if loaded is None:
        return error(404, "no integrity check has run yet (run `shareprice check`)")
    run, results = loaded
    body = {
        "run_id": run.run_id,
        "started_at": run.started_at.isoformat(),
        "seconds": run.seconds,
        "status": run.status,
        "sample_size": run.sample_size,
        "source": run.source,
        "results": [r.to_json() for r in results],
    }
    return json_response(body, headers={"Cache-Control": "no-store"})


@endpoint
def v1_health(request: Request) -> Response:
    """Database reachable, latest epoch, normalized share, data version, replica lag."""
    Params(request.query_params, (), strict=True)
    eng = engine()
    facts = queries.summary(eng)
    body: dict[str, Any] = {
        "database": "ok",
        "latest_epoch": facts.last_epoch,
        "raw_epochs": facts.raw_epochs,
        "normalized_epochs": facts.normalized_epochs,
        "normalized_share": (
            None if facts.raw_epochs == 0 else facts.normalized_epochs / facts.raw_epochs
        ),
        "data_version": facts.data_version,
        "analytics_view": analytics_view.state(eng).version,
        "replica": False,
    }
    primary = _primary_engine()
    replica = queries.replica_status(eng, primary)
    if replica is not None:
        body["replica"] = True
        body["replay_lag_s"] = replica.replay_lag_s
        body["epochs_behind"] = replica.epochs_behind
    return json_response(body, headers={"Cache-Control": "no-store"})


def _primary_engine() -> Engine | None:
    """The main database when the API reads a separate read-only URL (maybe a standby)."""
    readonly, main = config.readonly_url(), config.configured_url()
    if readonly is None or main is None or readonly == main:
        return None
    return db.get_engine(main)


# --- documentation ------------------------------------------------------------------------------

#: path -> (summary, parameters: name -> description). The one list /api/docs and
#: /api/openapi.json are made from.
ENDPOINTS: dict[str, tuple[str, dict[str, str]]] = {
    "/api/epochs": (
        "Old-frontend epoch rows, ascending by epoch, from the normalized tables.",
        {
            "limit": "positive integer up to 5000, or all (default all): the newest N epochs",
            "sample": "positive integer up to 20000: evenly spaced rows, always the newest",
            "operators": "comma-separated operator ids to narrow the maps to (default: all "
            "when at most 64, else the 64 largest by latest stake; header x-operators)",
            "health": "1: {sample, rewardsAvailable, normalizedDataAvailable} instead",
        },
    ),
    "/api/epochs-v2": ("Same as /api/epochs, with header x-api-version: 2.0.", {}),
    "/api/summary": ("The latest normalized epoch: totals and every operator's price.", {}),
    "/api/raw-epochs": (
        "The newest stored raw documents, newest first, unchanged.",
        {"limit": "1-100, default 1"},
    ),
    "/api/v1/operators": ("Every operator with metadata, latest state and yields.", {}),
    "/api/v1/series": (
        "Share-price series, downsampled in SQL, exact.",
        {
            "operators": "comma-separated ids, at most 64 (default: the 8 largest)",
            "from": "first epoch (inclusive)",
            "to": "last epoch (inclusive)",
            "last": "the last N epochs (wins over from/to)",
            "max_points": "points per operator, 6-20000 (default 1200)",
            "format": "json (default), csv or parquet (Int128 columns)",
        },
    ),
    "/api/v1/band": (
        "Percentiles of every operator's price per epoch.",
        {"from": "first epoch", "to": "last epoch", "last": "last N epochs",
         "max_points": "epochs kept, 6-20000"},
    ),
    "/api/v1/progress": ("Backfill progress (as `shareprice progress --json`).", {}),
    "/api/v1/checks/latest": ("The latest stored integrity-check run.", {}),
    "/api/v1/health": ("Database reachable, latest epoch, normalized share, replica lag.", {}),
}  # fmt: skip


def openapi_document() -> dict[str, Any]:
    paths = {}
    for path, (text, parameters) in ENDPOINTS.items():
        paths[path] = {
            "get": {
                "summary": text,
                "parameters": [
                    {"name": n, "in": "query", "required": False, "description": d,
                     "schema": {"type": "string"}}
                    for n, d in parameters.items()
                ],
                "responses": {
                    "200": {"description": "OK"},
                    "304": {"description": "Not modified (If-None-Match matched the ETag)"},
                    "400": {"description": '{"error": "<parameter>: <what is wrong>"}'},
                    "503": {"description": "Database unavailable (masked message)"},
                },
            }
        }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "shareprice API", "version": API_REVISION},
        "paths": paths,
    }


async def openapi(request: Request) -> Response:
    return json_response(openapi_document())


async def docs(request: Request) -> Response:
    items = []
    for path, (text, parameters) in ENDPOINTS.items():
        rows = "".join(
            f"<li><code>{html.escape(n)}</code>: {html.escape(d)}</li>"
            for n, d in parameters.items()
        )
        items.append(
            f"<h2><code>GET {html.escape(path)}</code></h2><p>{html.escape(text)}</p>"
            + (f"<ul>{rows}</ul>" if rows else "")
        )
    page = (
        "<!doctype html><meta charset=utf-8><title>shareprice API</title>"
        "<h1>shareprice API</h1><p>Exact integers are decimal strings; errors are "
        '<code>{"error": "..."}</code>. Machine-readable: <a href="/api/openapi.json">'
        "/api/openapi.json</a>.</p>" + "".join(items)
    )
    return HTMLResponse(page)


async def not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    if status == 405:
        return error(405, "only GET is served")
    return error(status, f"no such endpoint: {request.url.path} (see /api/docs)")


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("API request failed", exc_info=exc)
    return error(500, "internal error (the server log has the details)")


def cors_middleware() -> list[Middleware]:
    """CORS only when SHAREPRICE_API_CORS names origins (comma-separated, or *): closed by
    default, so no other site's page can read the API through a visitor's browser."""
    origins = [o.strip() for o in os.environ.get(CORS_VAR, "").split(",") if o.strip()]
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET"],
            allow_headers=["If-None-Match"],
            expose_headers=["ETag", "x-api-version", "x-operators"],
        )
    ]


def create_app() -> Starlette:
    routes = [
        Route("/epochs", epochs),
        Route("/epochs-v2", epochs_v2),
        Route("/summary", summary),
        Route("/raw-epochs", raw_epochs),
        Route("/v1/operators", v1_operators),
        Route("/v1/series", v1_series),
        Route("/v1/band", v1_band),
        Route("/v1/progress", v1_progress),
        Route("/v1/checks/latest", v1_checks_latest),
        Route("/v1/health", v1_health),
        Route("/openapi.json", openapi),
        Route("/docs", docs),
    ]
    return Starlette(
        routes=routes,
        middleware=cors_middleware(),
        exception_handlers={HTTPException: not_found, Exception: server_error},
    )
