"""What every route of the API shares: its engine, JSON answers and errors, ETags and the cache.

The engine has its own pool and every statement runs under a timeout; errors are JSON (400
naming the parameter, 503 with a masked line while the database is down, never a traceback);
bodies are cached per data version (bounded, one computation per key for concurrent misses) and
sent with the data-version ETag, 304 on a match.
"""

from __future__ import annotations

import gzip
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
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from shareprice import queries
from shareprice.api.params import ParamError
from shareprice.errors import error_line
from shareprice.store import config, db

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
