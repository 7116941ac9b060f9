"""Every page runs without exception on an empty database and says how to fill it."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["pages/explorer.py", "pages/progress.py", "pages/integrity.py", "pages/timings.py"]


@pytest.mark.parametrize("page", PAGES)
def test_page_on_empty_database(db_url, page):
    at = AppTest.from_file(str(ROOT / page), default_timeout=60).run()
    assert not at.exception, at.exception
    text = " ".join(i.value for i in at.info)
    assert "shareprice demo" in text or "shareprice import" in text


def test_dashboard_navigation_runs(db_url):
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
    assert not at.exception, at.exception
