"""The server answers requests on a kept-alive connection without a delayed-ACK stall.

Streamlit's pre-bound listening socket leaves Nagle's algorithm on for accepted connections
(shareprice.api.serving); every reused connection then waited ~40 ms (the client's delayed ACK)
per response. These tests fail if the listener loses TCP_NODELAY again.
"""

from __future__ import annotations

import socket
import statistics
import time

import httpx
import pytest
import sqlalchemy as sa
from helpers.database import TEMPLATE_DB, drop_database, new_database

from shareprice.api.serving import disable_nagle_on_listeners
from shareprice.bench.streamlit_server import streamlit_server

#: Linux's minimum delayed-ACK timeout is 40 ms; a stalled response cannot come in under it.
DELAYED_ACK_MS = 40


def test_listening_sockets_get_nodelay_and_accepted_ones_inherit_it():
    # Bound the way Streamlit binds it: protocol 0, so asyncio would not set TCP_NODELAY.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # not listening: left alone
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert disable_nagle_on_listeners() >= 1
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert other.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()
        other.close()


@pytest.fixture(scope="module")
def server(pg_admin_url, template_url, tmp_path_factory):
    url = new_database(pg_admin_url, TEMPLATE_DB)
    log = tmp_path_factory.mktemp("serving") / "streamlit.log"
    try:
        with streamlit_server(url.render_as_string(hide_password=False), log) as running:
            yield running
    finally:
        sa.create_engine(url).dispose()
        drop_database(pg_admin_url, url)


@pytest.mark.parametrize("path", ["/api/v1/health", "/_stcore/health"])
def test_kept_alive_requests_do_not_wait_for_a_delayed_ack(server, path):
    with httpx.Client(base_url=server.url, timeout=30) as client:  # one kept-alive connection
        client.get(path).raise_for_status()
        times = []
        for _ in range(15):
            started = time.perf_counter()
            client.get(path).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    # With the stall every request takes >= 40 ms; without it a few ms (busy machine: margin).
    assert statistics.median(times) < DELAYED_ACK_MS * 0.6, times


def test_bench_load_client_reads_whole_bodies_like_httpx(server):
    """`shareprice bench api`'s lean concurrent client: same status and body bytes as httpx
    (raw, undecoded), on one kept-alive connection, and no errors under concurrency."""
    import asyncio

    from shareprice.bench import api as bench_api

    paths = ["/api/v1/health", "/api/epochs-v2?limit=all", "/api/v1/nope", "/_stcore/health"]
    url = httpx.URL(server.url)

    async def fetch_all() -> list[tuple[int, int]]:
        connection = bench_api.KeptAliveConnection(url.host, url.port)
        try:
            return [await connection.get(p) for p in paths]
        finally:
            await connection.close()

    got = asyncio.run(fetch_all())
    with httpx.Client(base_url=server.url, timeout=30) as client:
        expected = []
        for path in paths:
            with client.stream("GET", path, headers={"accept-encoding": "gzip"}) as response:
                expected.append((response.status_code, len(b"".join(response.iter_raw()))))
    assert got == expected and got[2][0] == 404
    result = asyncio.run(bench_api.concurrent_load(server.url, paths[:2], 8, 3, 30.0))
    assert result["requests"] == 24 and result["errors"] == 0
