"""The Nominators page in real Chromium on the real sample: the example nominator's card and
value chart draw without an exception element, and the holders table links to the view."""

from __future__ import annotations

import tempfile

import pytest
import sqlalchemy as sa
from helpers.database import TEMPLATE_DB, drop_database, new_database

from shareprice import backfill
from shareprice.bench.streamlit_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server
from shareprice.ingest.importer import import_paths

pytestmark = pytest.mark.browser  # conftest: Chromium required (a failure under CI=true)

EXAMPLE = "suftE5YTB8cS3TnDT5mV1CvTvxforaPLudwkLqZH6HrX8nqBp"


@pytest.fixture()
def dashboard(pg_admin_url, template_url, shared_data, tmp_path):
    url = new_database(pg_admin_url, TEMPLATE_DB)
    engine = sa.create_engine(url)
    try:
        import_paths(engine, [shared_data / "storage-dump-epoch-2647.json"])
        assert backfill.run_backfill(engine, backfill.Options(workers=1)).ok
    finally:
        engine.dispose()
    with streamlit_server(
        url.render_as_string(hide_password=False), tmp_path / "streamlit.log"
    ) as server:
        yield server.url
    drop_database(pg_admin_url, url)


def test_nominator_view_draws_in_chromium(dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-") as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.set_viewport_size({"width": 1400, "height": 1400})
            page.goto(
                f"{dashboard}/nominators?address={EXAMPLE}&operator=0",
                wait_until="domcontentloaded",
                timeout=60_000,
            )
            page.get_by_role("heading", name="Nominators").first.wait_for(timeout=60_000)
            page.wait_for_function(
                """() => !document.querySelector('[data-testid="stStatusWidget"]')
                    && [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
                         .some(e => e.innerText.includes('Server time'))""",
                timeout=60_000,
            )
            assert page.locator('[data-testid="stException"]').count() == 0
            card = page.locator(".sp-nominator-card").first
            card.wait_for(timeout=30_000)
            assert "160,000.0067 AI3" in card.inner_text()
            page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
            holder = page.locator("table.sp-holders a").first  # the largest holder's link
            holder.wait_for(timeout=30_000)
            assert "nominators?address=" in (holder.get_attribute("href") or "")
            page.screenshot(path=str(tmp_path / "nominators.png"), full_page=True)
        finally:
            browser.close()
