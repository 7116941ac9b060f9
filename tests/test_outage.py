"""The database goes away under an open dashboard, then comes back.

A real embedded server of its own (so stopping it does not disturb other tests) is stopped and
started by the test; pages must show a clear message with the masked URL and a retry, never a
traceback, and recover on the next rerun without restarting Streamlit.
"""

import shutil
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from streamlit.testing.v1 import AppTest

from shareprice.store import db, migrate

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["pages/explorer.py", "pages/progress.py", "pages/integrity.py", "pages/timings.py"]


@pytest.fixture(scope="module")
def own_server():
    base = Path(tempfile.mkdtemp(prefix="shareprice-outage-"))
    data_dir = base / "pgdata"
    url = make_url(db.embedded_up(data_dir))
    engine = sa.create_engine(url)
    migrate.migrate(engine)
    engine.dispose()
    yield data_dir, url
    db.forget_engine(url)
    db.embedded_down(data_dir)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("page", PAGES)
def test_page_survives_database_outage(own_server, monkeypatch, page):
    data_dir, url = own_server
    # A password in the URL proves the message masks it.
    shown_url = url.set(password="outage-secret")
    monkeypatch.setenv("SHAREPRICE_DATABASE_URL", shown_url.render_as_string(hide_password=False))

    at = AppTest.from_file(str(ROOT / page), default_timeout=60).run()
    assert not at.exception, at.exception
    assert not at.error

    db.embedded_down(data_dir)
    try:
        at.run()
        assert not at.exception, at.exception
        messages = " ".join(e.value for e in at.error)
        assert "Database unavailable" in messages
        assert "outage-secret" not in messages
        assert "***" in messages
        assert any(b.label == "Retry" for b in at.button)
    finally:
        db.embedded_up(data_dir)

    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
