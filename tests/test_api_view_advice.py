"""After a backfill: the embedded default moves comprehensive_analytics to v2 by itself once
every raw epoch is normalized; an adopted database is told whether the swap is safe and how;
the progress page says which definition is live."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.database import clone_database, drop_database
from streamlit.testing.v1 import AppTest

from shareprice import prepare
from shareprice.cli import main
from shareprice.store import analytics_view, db

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def normalized_copy(pg_admin_url, normalized_small_url):
    url = clone_database(pg_admin_url, normalized_small_url)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture()
def raw_copy(pg_admin_url, raw_small_url):
    url = clone_database(pg_admin_url, raw_small_url)
    yield url
    drop_database(pg_admin_url, url)


def test_complete_backfill_swaps_the_embedded_default_to_v2(normalized_copy):
    engine = db.get_engine(normalized_copy)
    assert analytics_view.state(engine).version == "v1"
    line = prepare.swap_view_when_complete(engine)
    assert analytics_view.state(engine).version == "v2", line
    assert prepare.swap_view_when_complete(engine) == (
        "comprehensive_analytics: v2 (normalized tables)"
    )


def test_pending_epochs_keep_v1(raw_copy):
    engine = db.get_engine(raw_copy)
    line = prepare.swap_view_when_complete(engine)
    assert "stays on v1" in line and "80 of 80 raw epochs are not normalized" in line
    assert analytics_view.state(engine).version == "v1"
    advice = " ".join(prepare.view_advice(engine))
    assert "not safe yet" in advice and "0 of 80 raw epochs normalized" in advice


def test_adopted_database_is_told_the_swap_is_safe_and_how(normalized_copy):
    advice = prepare.view_advice(db.get_engine(normalized_copy))
    assert advice[0].endswith("swap to v2: safe")
    assert "80 of 80 raw epochs normalized" in advice[1]
    assert "no integrity check has run" in advice[1]
    assert "shareprice views use-v2" in advice[2]
    assert analytics_view.state(db.get_engine(normalized_copy)).version == "v1"  # only advice


def test_backfill_command_ends_with_the_advice(raw_copy):
    url = raw_copy.render_as_string(hide_password=False)
    result = CliRunner().invoke(main, ["backfill", "--url", url, "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "comprehensive_analytics is on v1 (raw JSON, slow); swap to v2: safe" in result.output
    assert "shareprice views use-v2" in result.output


def test_progress_page_shows_the_live_definition(normalized_copy, monkeypatch):
    monkeypatch.setenv(
        "SHAREPRICE_DATABASE_URL", normalized_copy.render_as_string(hide_password=False)
    )
    at = AppTest.from_file(str(ROOT / "pages/progress.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert any("live on **v1**" in c.value for c in at.caption)
    analytics_view.use_v2(db.get_engine(normalized_copy))
    at.run()
    assert any("live on **v2**" in c.value for c in at.caption)


def test_prepare_ends_with_the_swap_on_the_embedded_server(normalized_copy):
    engine = db.get_engine(normalized_copy)
    assert prepare.is_embedded(engine)  # the session's test server is an embedded one
    lines: list[str] = []
    prepare.prepare(engine, echo=lines.append, demo=False)
    assert analytics_view.state(engine).version == "v2", lines
    assert lines[-1].startswith("comprehensive_analytics: ")
