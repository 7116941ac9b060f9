"""Every dashboard page opens in a real browser (system Chromium) without an exception element."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: (url path, title the page shows)
PAGES = [
    ("/", "Share price explorer"),
    ("/progress", "Migration progress"),
    ("/integrity", "Integrity checks"),
    ("/timings", "v1 (JSON) vs v2 (normalized) timings"),
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="system Chromium not found at /usr/bin/chromium"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        time.sleep(0.3)
    raise TimeoutError("streamlit did not become healthy")


@pytest.fixture()
def dashboard(db_url, engine, tmp_path):
    """`streamlit run dashboard.py` on a free port against a small test database."""
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO epochs (epoch, data) VALUES (:e, CAST(:d AS jsonb))"),
            [{"e": e, "d": json.dumps({"epoch": e})} for e in range(5)],
        )
        conn.execute(
            text(
                "INSERT INTO backfill_runs (status, epochs_total, epochs_done) "
                "VALUES ('succeeded', 5, 3)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO epoch_normalizations (epoch, revision, operator_count) "
                "SELECT epoch, revision, 0 FROM epochs WHERE epoch < 3"
            )
        )
    port = _free_port()
    env = dict(os.environ)
    env["SHAREPRICE_DATABASE_URL"] = db_url.render_as_string(hide_password=False)
    env.pop("SHAREPRICE_READONLY_URL", None)
    log = (tmp_path / "streamlit.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "dashboard.py"),
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_every_page_opens_without_exception(dashboard):
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-") as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            for path, title in PAGES:
                page.goto(dashboard + path, wait_until="domcontentloaded", timeout=60_000)
                page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
                # Let the script finish: the app reports running until then.
                page.wait_for_function(
                    "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                    timeout=60_000,
                )
                assert page.locator('[data-testid="stException"]').count() == 0, path
        finally:
            browser.close()
