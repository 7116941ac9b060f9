"""The README's screenshot is taken by this browser test, so it always shows the real product.

By default the test renders the explorer on the session's small data set and checks the page a
reader would see (chart drawn, no exception, sidebar present), saving the PNG under $TMPDIR.
With SHAREPRICE_UPDATE_SCREENSHOT=1 it renders the demo profile instead and writes
docs/screenshot.png (commit it).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from shareprice.bench.streamlit_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server

ROOT = Path(__file__).resolve().parent.parent
README_SHOT = ROOT / "docs" / "screenshot.png"
UPDATE = os.environ.get("SHAREPRICE_UPDATE_SCREENSHOT") == "1"

pytestmark = pytest.mark.browser  # conftest: Chromium required (a failure under CI=true)


@pytest.fixture()
def screenshot_db(request, pg_admin_url, template_url):
    if not UPDATE:
        return request.getfixturevalue("normalized_small_url")
    from helpers.database import TEMPLATE_DB, new_database

    from shareprice import backfill
    from shareprice.ingest import generator
    from shareprice.store import db

    url = new_database(pg_admin_url, TEMPLATE_DB)
    engine = db.get_engine(url)
    generator.generate(engine, profile="demo")
    backfill.run_backfill(engine, backfill.Options(workers=1))
    return url


def test_explorer_screenshot(screenshot_db, tmp_path):
    from playwright.sync_api import sync_playwright

    url = screenshot_db.render_as_string(hide_password=False)
    with streamlit_server(url, tmp_path / "streamlit.log") as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(server.url)
        page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for(timeout=90_000)
        page.locator('[data-testid="stCaptionContainer"]', has_text="Server time").wait_for(
            timeout=90_000
        )
        page.wait_for_timeout(500)  # let plotly finish its transition
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator('[data-testid="stSidebar"]').is_visible()
        target = README_SHOT if UPDATE else Path(tempfile.gettempdir()) / "shareprice-explorer.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target))
        browser.close()
    assert target.stat().st_size > 20_000  # a real rendered page, not a blank one
    print(f"screenshot: {target}")
