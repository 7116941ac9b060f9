"""The API when the database goes away and comes back, and CORS once origins are configured.

A real embedded server of its own (stopping it disturbs no other test) under a real dashboard
server started as `make run` starts it: while the database is down every endpoint answers 503
with a masked one-line JSON error, never a traceback, and answers again once it is back, without
restarting anything.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from shareprice import backfill
from shareprice.api import create_app
from shareprice.bench.streamlit_server import streamlit_server
from shareprice.ingest.importer import import_paths
from shareprice.store import db, migrate

SECRET = "api-outage-secret"


@pytest.fixture(scope="module")
def own_server(shared_data):
    base = Path(tempfile.mkdtemp(prefix="shareprice-api-outage-"))
    data_dir = base / "pgdata"
    url = make_url(db.embedded_up(data_dir))
    engine = sa.create_engine(url)
    migrate.migrate(engine)
    import_paths(engine, [shared_data / "flat-export-220-epochs.json"])
    assert backfill.run_backfill(engine, backfill.Options(workers=1)).ok
    engine.dispose()
    yield data_dir, url, base
    db.forget_engine(url)
    db.embedded_down(data_dir)
    shutil.rmtree(base, ignore_errors=True)


PATHS = [
    "/api/epochs?limit=5",
    "/api/epochs-v2",
    "/api/summary",
    "/api/raw-epochs",
    "/api/v1/operators",
    "/api/v1/series",
    "/api/v1/band",
    "/api/v1/progress",
    "/api/v1/health",
]


def test_database_down_is_a_masked_503_and_the_api_recovers(own_server):
    data_dir, url, base = own_server
    # A password in the URL proves the message masks it (the socket trusts local users).
    shown = url.set(password=SECRET).render_as_string(hide_password=False)
    with streamlit_server(shown, base / "streamlit.log") as running:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            for path in PATHS:
                assert client.get(path).status_code == 200, path
            db.embedded_down(data_dir)
            try:
                for path in PATHS:
                    response = client.get(path)
                    assert response.status_code == 503, (path, response.text)
                    message = response.json()["error"]
                    assert message.startswith("database unavailable"), message
                    assert SECRET not in response.text and "Traceback" not in response.text
                    assert "\n" not in message
            finally:
                db.embedded_up(data_dir)
            deadline = time.monotonic() + 30
            while client.get("/api/v1/health").status_code != 200:
                assert time.monotonic() < deadline, "the API did not recover"
                time.sleep(0.5)
            for path in PATHS:
                assert client.get(path).status_code == 200, path
        log = (base / "streamlit.log").read_text(errors="replace")
        assert SECRET not in log


def _get(app, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, path, headers=headers)

    return asyncio.run(go())


def test_cors_opens_only_to_the_configured_origins(monkeypatch):
    monkeypatch.setenv("SHAREPRICE_API_CORS", "https://frontend.example")
    app = create_app()
    preflight = {"Origin": "https://frontend.example", "Access-Control-Request-Method": "GET"}
    allowed = _get(app, "OPTIONS", "/docs", preflight)
    assert allowed.headers["access-control-allow-origin"] == "https://frontend.example"
    refused = _get(app, "GET", "/docs", {"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in refused.headers
    monkeypatch.delenv("SHAREPRICE_API_CORS")
    closed = _get(create_app(), "GET", "/docs", {"Origin": "https://frontend.example"})
    assert "access-control-allow-origin" not in closed.headers
