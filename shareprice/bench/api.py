"""`shareprice bench api`: the HTTP API against the old way of answering it, and under load.

A real dashboard server (`streamlit run dashboard.py` on a free port, as `make run` starts it)
serves `/api/epochs-v2`; each request is timed over HTTP (median of `repeat` runs, full bodies,
no ETag revalidation). Beside it, the same rows answered the old way: every epoch's raw JSON
parsed in Python per request (`queries.epoch_rows_v1`, the v1 path), timed in-process without
HTTP, so the ratio understates the old way's cost rather than flattering v2. The API caches
response bodies per data version: `v2_cold_ms` is the first request (computed), `v2_ms` the
median of the repeats (the cache, as every repeated request is until the next backfill write). `limit=all` is
also compared with a bare psycopg cursor fetching the very statement v2 runs (the floor any
implementation over these tables pays). Then `clients` clients on kept-alive connections
request the four requests in turn, all at once, for p50/p95 and the error count (a minimal
asyncio HTTP/1.1 client, see `KeptAliveConnection`: httpx's own CPU dominated that measurement).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from shareprice import queries
from shareprice.bench.streamlit_server import streamlit_server
from shareprice.store import config, db

#: The old frontend's four charts' requests (its range buttons 50 / 200 / All, and a sample).
REQUESTS: dict[str, dict[str, Any]] = {
    "limit=50": {"limit": 50},
    "limit=200": {"limit": 200},
    "limit=all": {},
    "sample=1000": {"sample": 1000},
}


def _query_string(kwargs: dict[str, Any], operators: tuple[int, ...]) -> str:
    parts = [f"{k}={v}" for k, v in kwargs.items()] or ["limit=all"]
    parts.append("operators=" + ",".join(str(o) for o in operators))
    return "&".join(parts)


def _median_ms(run: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def _bare_cursor_ms(engine: Engine, operators: tuple[int, ...], repeat: int) -> float:
    """The statement v2 runs for limit=all, fetched by a bare cursor (no HTTP, no checks)."""
    with db.connect(engine) as conn:
        epochs = [r[0] for r in conn.execute("SELECT epoch FROM epoch_normalizations ORDER BY 1")]

        def fetch() -> None:
            statement, params = queries.epoch_rows_statement(conn, epochs, operators)
            conn.execute(statement, params).fetchall()

        return _median_ms(fetch, repeat)


class KeptAliveConnection:
    """One kept-alive HTTP/1.1 connection speaking just enough of the protocol to time GETs.

    Why not httpx here: in the concurrent run the load generator shares the machine's 2 cores
    with the server, and httpx spends ~8 ms of CPU per request (measured: 4.4 s of client CPU
    against 0.6 s of server CPU for 400 requests), so its p95 measured httpx, not the server.
    This client reads each body whole (Content-Length or chunked) without decoding it, as a
    browser's network stack would before handing it on; gzip is accepted like any client does.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> tuple[int, int]:
        """(status, body bytes) of GET `path`; reconnects once if the server closed the line."""
        for attempt in (0, 1):
            if self._streams is None:
                self._streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._streams
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    "Accept-Encoding: gzip\r\nAccept: application/json\r\n\r\n".encode()
                )
                await writer.drain()
                return await self._response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, int]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])
        }
        if "content-length" in headers:
            size = int(headers["content-length"])
            await reader.readexactly(size)
            return status, size
        size = 0
        while headers.get("transfer-encoding", "").lower() == "chunked":
            chunk = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(chunk + 2)
            size += chunk
            if chunk == 0:
                break
        return status, size

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def concurrent_load(
    base_url: str, paths: list[str], clients: int, per_client: int, timeout_s: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    kinds: dict[str, int] = {}
    url = httpx.URL(base_url)
    host, port = url.host, url.port or 80

    async def client_loop(index: int) -> None:
        nonlocal errors
        connection = KeptAliveConnection(host, port)
        try:
            for i in range(per_client):
                path = paths[(index + i) % len(paths)]
                started = time.perf_counter()
                try:
                    status, _size = await asyncio.wait_for(connection.get(path), timeout_s)
                    if status != 200:
                        errors += 1
                        kinds[str(status)] = kinds.get(str(status), 0) + 1
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                    errors += 1
                    kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
                    await connection.close()
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            await connection.close()

    started = time.perf_counter()
    cpu_started = time.process_time()
    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "error_kinds": kinds,
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
        "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "client_cpu_s": round(time.process_time() - cpu_started, 2),
    }


def run(
    url: str | None,
    *,
    operators: tuple[int, ...] = (0, 1, 2, 3),
    repeat: int = 5,
    v1_repeat: int = 1,
    clients: int = 50,
    per_client: int = 8,
    log_path: Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    engine = db.get_engine(url)
    db.check_available(engine)
    shown = config.mask_url(engine.url)
    database_url = engine.url.render_as_string(hide_password=False)
    facts = queries.summary(engine)
    echo(f"bench api on {shown}: {facts.normalized_epochs:,} normalized epochs")
    log_path = log_path or Path("/tmp/shareprice-bench-api.log")
    results = []
    with streamlit_server(database_url, log_path) as server:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for name, kwargs in REQUESTS.items():
                path = f"/api/epochs-v2?{_query_string(kwargs, operators)}"
                started = time.perf_counter()
                first = http.get(path)
                first.raise_for_status()
                cold_ms = round((time.perf_counter() - started) * 1000, 1)
                rows = len(first.json())

                def new_way(p: str = path) -> None:
                    http.get(p).raise_for_status()

                v2_ms = _median_ms(new_way, repeat)

                def old_way(kw: dict[str, Any] = kwargs) -> None:
                    answer = queries.epoch_rows_v1(engine, operators=operators, **kw)
                    ("[" + ",".join(answer.rows) + "]").encode()

                echo(f"  {name}: v2 {v2_ms} ms over HTTP ({rows} rows); timing v1...")
                v1_ms = _median_ms(old_way, v1_repeat)
                entry: dict[str, Any] = {
                    "name": name,
                    "v2_ms": v2_ms,
                    "v2_cold_ms": cold_ms,
                    "v1_ms": v1_ms,
                    "ratio": round(v1_ms / v2_ms, 1) if v2_ms else None,
                    "ratio_cold": round(v1_ms / cold_ms, 1) if cold_ms else None,
                    "rows": rows,
                    "bytes": len(first.content),
                }
                if name == "limit=all":
                    bare = _bare_cursor_ms(engine, operators, repeat)
                    entry["bare_cursor_ms"] = bare
                    entry["vs_bare_cursor"] = round(v2_ms / bare, 2) if bare else None
                results.append(entry)
                echo(f"  {name}: v1 {v1_ms} ms")
        paths = [f"/api/epochs-v2?{_query_string(kw, operators)}" for kw in REQUESTS.values()]
        echo(f"  {clients} concurrent clients x {per_client} requests...")
        concurrent = asyncio.run(concurrent_load(server.url, paths, clients, per_client, 60.0))
        # Other processes share the machine: say how busy it was while the clients ran.
        concurrent["load_average_1m"] = round(os.getloadavg()[0], 2)
        concurrent["cpus"] = os.cpu_count()
    return {
        "database": shown,
        "normalized_epochs": facts.normalized_epochs,
        "operators": list(operators),
        "repeat": repeat,
        "v1_repeat": v1_repeat,
        "requests": results,
        "concurrent": concurrent,
    }
