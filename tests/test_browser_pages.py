"""Every dashboard page opens in a real browser (system Chromium) without an exception element."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import text

from shareprice.bench.streamlit_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server

ROOT = Path(__file__).resolve().parent.parent
#: (url path, title the page shows)
#: The first is not the default page: a fresh server's first visitor following a shared link.
PAGES = [
    ("/progress", "Migration progress"),
    ("/", "Share price explorer"),
    ("/nominators", "Nominators"),
    ("/integrity", "Integrity checks"),
    ("/timings", "v1 (JSON) vs v2 (normalized) timings"),
]

pytestmark = pytest.mark.browser  # conftest: Chromium required (a failure under CI=true)


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
    url = db_url.render_as_string(hide_password=False)
    with streamlit_server(url, tmp_path / "streamlit.log") as server:
        yield server.url


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
                # Routed by dashboard.py's st.navigation (its titles), never by pages/ file names.
                sidebar = page.locator('[data-testid="stSidebarNav"]').inner_text()
                assert "Share price explorer" in sidebar and "Nominators" in sidebar, (
                    path,
                    sidebar,
                )
                assert "dashboard" not in sidebar, (path, sidebar)
        finally:
            browser.close()
