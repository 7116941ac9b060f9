"""The explorer in a real browser: chart drawn, selection and range changed, shared URL reloaded.

Starts `streamlit run dashboard.py` on a free port against a small test database and drives
system Chromium through Playwright. Saves a screenshot under $TMPDIR and prints its path.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from helpers.normalized_rows import Row, load

from shareprice.bench.streamlit_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server

ROOT = Path(__file__).resolve().parent.parent
PERQ = 10**18

pytestmark = pytest.mark.browser  # conftest: Chromium required (a failure under CI=true)


@pytest.fixture()
def explorer_url(db_url, engine, tmp_path):
    rows = [
        Row(o, e, PERQ + (o + 1) * 10**9 * e, stake=(o + 1) * 10**21, rewards=10**15 + e)
        for o in range(12)
        for e in range(0, 400)
        if not (o == 5 and e > 300)  # operator 5 deregistered after epoch 300
    ]
    load(engine, rows, statuses={5: "deregistered"}, names={3: "Gamma node"})
    url = db_url.render_as_string(hide_password=False)
    with streamlit_server(url, tmp_path / "streamlit.log") as server:
        yield server.url


def _settle(page) -> None:
    """Wait until the app has finished its run (no running indicator) and the chart is drawn."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
    )
    page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for(timeout=60_000)


def _selected_chips(page, count: int) -> list[str]:
    """The operator picker's chips, once there are `count` of them (the sidebar is drawn after
    the chart, so it can still be arriving when the chart is already there)."""
    from playwright.sync_api import expect

    chips = page.locator('[data-testid="stMultiSelect"]').nth(1).locator("[data-tag] > span[title]")
    expect(chips).to_have_count(count, timeout=60_000)
    return sorted(chips.all_inner_texts())


def _wait_caption(page, expected: str) -> None:
    """Reruns finish asynchronously: wait until the chart's caption says what is expected."""
    from playwright.sync_api import expect

    caption = page.locator('[data-testid="stCaptionContainer"]', has_text="points drawn")
    expect(caption).to_contain_text(expected, timeout=60_000)


def test_explorer_selection_range_and_shared_url(explorer_url):
    from playwright.sync_api import sync_playwright

    shot = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "shareprice-explorer.png"
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.goto(explorer_url + "/", wait_until="domcontentloaded", timeout=60_000)
            _settle(page)
            assert page.locator('[data-testid="stException"]').count() == 0
            assert len(_selected_chips(page, 8)) == 8  # the default: largest 8 active operators
            _wait_caption(page, "8 operators · epochs 0–399")

            # choose exactly two operators: clear, then search by name and by id
            page.get_by_role("button", name="Clear", exact=True).click()
            _settle(page)
            _selected_chips(page, 0)
            picker = page.locator('[data-testid="stMultiSelect"]').nth(1).locator("input")
            picker.click()
            picker.fill("Gamma")
            page.keyboard.press("Enter")
            _settle(page)
            picker.click()
            picker.fill("#5 ")
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            _settle(page)
            assert _selected_chips(page, 2) == [
                "#3 · Gamma node · registered",
                "#5 · operator 5 · deregistered",
            ]

            # a range preset
            page.locator('[data-testid="stButtonGroup"]').get_by_role(
                "radio", name="200", exact=True
            ).click()
            _settle(page)
            page.wait_for_function("() => location.search.includes('range=200')", timeout=30_000)
            _wait_caption(page, "2 operators · epochs 200–399")
            legend = page.locator(".js-plotly-plot .legend").first.text_content() or ""
            assert "Gamma node" in legend and "#5" in legend
            assert page.locator(".js-plotly-plot text", has_text="deregistered").count() >= 1
            shared = page.url
            assert re.search(r"ops=3(%2C|,)5", shared), shared

            # downloads sit behind one "Download" button; the wide CSV is the shown epochs
            page.get_by_role("button", name="Download", exact=True).click()
            wide = page.get_by_role("button", name="Wide CSV (raw)")
            wide.wait_for(timeout=60_000)
            with page.expect_download(timeout=60_000) as download:
                wide.click()
            lines = Path(download.value.path()).read_text().splitlines()
            assert lines[0].startswith("epoch,startBlock,endBlock,totalStake,")
            assert {"stake3", "stake5", "rewards3", "rewards5"} <= set(lines[0].split(","))
            assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(200, 400))
            page.keyboard.press("Escape")

            # the shared link, opened fresh, shows the same view
            other = browser.new_page()
            other.goto(shared, wait_until="domcontentloaded", timeout=60_000)
            _settle(other)
            _wait_caption(other, "2 operators · epochs 200–399")
            assert _selected_chips(other, 2) == _selected_chips(page, 2)
            assert other.locator('[data-testid="stException"]').count() == 0
            other.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_live_mode_draws_a_new_epoch_within_5_s_without_a_reload(db_url, tmp_path):
    """An epoch imported and backfilled while the page is open is drawn within 5 s: the live
    fragment polls the data version every 2 s and reruns the page in place (no reload)."""
    import time

    from helpers.backfill import insert_documents, run_cli
    from playwright.sync_api import expect, sync_playwright

    from shareprice.ingest import generator

    docs = list(generator.iter_documents("small", seed=7, epochs=31))
    insert_documents(db_url, [(d.epoch, d.data.decode()) for d in docs[:30]])
    run_cli(db_url, "backfill", "--workers", "1", "-q")
    first, last, new = docs[0].epoch, docs[29].epoch, docs[30].epoch
    url = db_url.render_as_string(hide_password=False)
    with (
        streamlit_server(url, tmp_path / "streamlit.log") as server,
        tempfile.TemporaryDirectory(prefix="chromium-") as profile,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.goto(server.url + "/", wait_until="domcontentloaded", timeout=60_000)
            _settle(page)
            _wait_caption(page, f"epochs {first:,}–{last:,}")
            expect(page.get_by_text("🟢 live")).to_be_visible(timeout=30_000)
            page.evaluate("() => { window.__same_document = true; }")

            insert_documents(db_url, [(docs[30].epoch, docs[30].data.decode())])
            run_cli(db_url, "backfill", "--workers", "1", "-q")
            backfilled = time.monotonic()
            _wait_caption(page, f"epochs {first:,}–{new:,}")
            elapsed = time.monotonic() - backfilled
            assert elapsed < 5.0, f"new epoch drawn after {elapsed:.1f} s"
            assert page.evaluate("() => window.__same_document === true")  # no reload
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
    print(f"live: new epoch drawn {elapsed:.2f} s after its backfill finished")
