"""Hot standbys: the dashboard on a PostgreSQL streaming-replication standby.

Scale-out is more dashboard processes reading standbys (`SHAREPRICE_READONLY_URL`), so this
builds the real thing with Debian's PostgreSQL 15: a primary, a `pg_basebackup -R` standby
streaming from it on localhost, then migrate, demo and backfill on the primary only. Everything
the standby holds arrived by replication. Then: every page works on the standby alone; an epoch
backfilled on the primary is served by the standby within 5 s (the measured lag is printed);
and `replica_status` reports the standby, its lag and how many epochs it is behind, also while
replay is paused on purpose.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from helpers import pg15
from helpers.requirements import require_pg15
from streamlit.testing.v1 import AppTest

from shareprice import queries
from shareprice.cli import main
from shareprice.store import db

ROOT = Path(__file__).resolve().parent.parent
DEMO_EPOCHS = 60
#: Epochs the fixture backfills (0..FIRST_BACKFILL_TO); the tests backfill the rest.
FIRST_BACKFILL_TO = DEMO_EPOCHS - 3
LAG_LIMIT_S = 5.0

NORMALIZED_SQL = sa.text("SELECT count(*), max(epoch) FROM epoch_normalizations")
HAS_EPOCH_SQL = sa.text("SELECT EXISTS (SELECT 1 FROM epoch_normalizations WHERE epoch = :e)")


@dataclass
class Pair:
    primary: pg15.Cluster
    standby: pg15.Cluster
    primary_engine: sa.Engine
    standby_engine: sa.Engine


def _cli(url: str, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env={"SHAREPRICE_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def pair(pg_admin_url) -> Iterator[Pair]:
    """Primary and standby; the standby made before any data, so all of it was streamed."""
    bin_dir = require_pg15()
    primary = pg15.primary(bin_dir)
    try:
        standby = pg15.standby(primary)
    except Exception:
        pg15.remove(primary)
        raise
    primary_engine = db.get_engine(primary.url)
    standby_engine = db.get_engine(standby.url)
    try:
        _cli(primary.url, "migrate")
        _cli(primary.url, "demo", "--epochs", str(DEMO_EPOCHS), "--operators", "4")
        _cli(primary.url, "backfill", "--to", str(FIRST_BACKFILL_TO), "--quiet")
        pg15.wait_caught_up(primary_engine, standby_engine, timeout=30)
        yield Pair(primary, standby, primary_engine, standby_engine)
    finally:
        db.forget_engine(primary.url)
        db.forget_engine(standby.url)
        pg15.remove(standby, primary)


def _normalized(engine: sa.Engine) -> tuple[int, int | None]:
    with engine.connect() as conn:
        count, latest = conn.execute(NORMALIZED_SQL).one()
    return int(count), latest


def test_replica_status_is_none_on_a_primary(engine) -> None:
    assert queries.replica_status(engine) is None
    assert queries.replica_status(engine, primary=engine) is None


def test_the_standby_holds_what_the_primary_wrote_and_refuses_writes(pair):
    with pair.standby_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_is_in_recovery()")).scalar_one() is True
        assert conn.execute(sa.text("SELECT count(*) FROM epochs")).scalar_one() == DEMO_EPOCHS
    assert _normalized(pair.standby_engine) == _normalized(pair.primary_engine)
    with pytest.raises(sa.exc.InternalError, match="read-only transaction"):
        with pair.standby_engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM epoch_normalizations"))


def test_replica_status_on_primary_and_caught_up_standby(pair):
    assert queries.replica_status(pair.primary_engine) is None
    pg15.wait_caught_up(pair.primary_engine, pair.standby_engine, timeout=10)
    status = queries.replica_status(pair.standby_engine, pair.primary_engine)
    assert status is not None
    # Everything received is replayed: an idle standby is not behind, whatever the age of the
    # last transaction it replayed.
    assert status.replay_lag_s == 0.0
    assert status.epochs_behind == 0
    assert status.last_replay_at is not None


def test_replica_status_while_replay_is_paused(pair):
    """Pause replay, backfill the last epoch on the primary: the standby says it is behind."""
    last = DEMO_EPOCHS - 1
    _, standby_latest = _normalized(pair.standby_engine)
    with pair.standby_engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_wal_replay_pause()"))
    try:
        _cli(pair.primary.url, "backfill", "--from", str(last), "--to", str(last), "--quiet")
        with pair.primary_engine.connect() as conn:
            target = conn.execute(sa.text("SELECT pg_current_wal_lsn()::text")).scalar_one()
        # Wait until the standby has *received* the backfill (it cannot replay it).
        deadline = time.monotonic() + 10
        while True:
            with pair.standby_engine.connect() as conn:
                received = conn.execute(
                    sa.text("SELECT pg_last_wal_receive_lsn() >= CAST(:t AS pg_lsn)"),
                    {"t": target},
                ).scalar_one()
            if received or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert received, "the standby did not receive the primary's WAL"
        time.sleep(0.3)  # so the replay lag is measurably positive
        status = queries.replica_status(pair.standby_engine, pair.primary_engine)
        assert status is not None
        assert status.epochs_behind == last - standby_latest > 0
        assert status.replay_lag_s is not None and status.replay_lag_s >= 0.3
        assert queries.replica_status(pair.standby_engine).epochs_behind is None
    finally:
        with pair.standby_engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_wal_replay_resume()"))
    pg15.wait_caught_up(pair.primary_engine, pair.standby_engine, timeout=LAG_LIMIT_S)
    after = queries.replica_status(pair.standby_engine, pair.primary_engine)
    assert after is not None and after.epochs_behind == 0 and after.replay_lag_s == 0.0


def test_an_epoch_backfilled_on_the_primary_is_served_by_the_standby_within_5s(pair):
    epoch = DEMO_EPOCHS - 2
    with pair.standby_engine.connect() as conn:
        assert conn.execute(HAS_EPOCH_SQL, {"e": epoch}).scalar_one() is False
    _cli(pair.primary.url, "backfill", "--from", str(epoch), "--to", str(epoch), "--quiet")
    committed = time.perf_counter()  # the CLI returns after the batch committed
    while True:
        with pair.standby_engine.connect() as conn:
            if conn.execute(HAS_EPOCH_SQL, {"e": epoch}).scalar_one():
                break
        assert time.perf_counter() - committed < LAG_LIMIT_S, "not on the standby within 5 s"
        time.sleep(0.005)
    lag = time.perf_counter() - committed
    print(f"replication lag: epoch {epoch} on the standby {1000 * lag:.0f} ms after its commit")
    assert lag < LAG_LIMIT_S
    # Served: the explorer's own query, on the standby, draws the new epoch.
    request = queries.SeriesRequest(operators=(0,), epoch_from=epoch, epoch_to=epoch)
    series = queries.series_v2(pair.standby_engine, request)
    assert series["epoch"].to_list() == [epoch]


PAGES = ["explorer.py", "progress.py", "integrity.py", "timings.py"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_works_on_the_standby(pair, page, monkeypatch):
    """The standby alone: no main URL at all, so nothing can quietly read the primary."""
    monkeypatch.delenv("SHAREPRICE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("SHAREPRICE_READONLY_URL", pair.standby.url)
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=120).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    count, latest = _normalized(pair.standby_engine)
    texts = "\n".join(str(e.value) for e in [*at.caption, *at.markdown, *at.info])
    if page == "explorer.py":
        assert "Server time" in texts
        assert f"–{latest:,}" in texts  # the range drawn ends at the standby's latest epoch
        assert len(at.get("plotly_chart")) == 1
    if page == "progress.py":
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Raw epochs"] == str(DEMO_EPOCHS)
        assert metrics["Normalized epochs"] == str(count)
        assert metrics["Replay lag"].endswith(" s")


def test_progress_page_on_the_standby_shows_epochs_behind(pair, monkeypatch):
    monkeypatch.setenv("SHAREPRICE_DATABASE_URL", pair.primary.url)
    monkeypatch.setenv("SHAREPRICE_READONLY_URL", pair.standby.url)
    pg15.wait_caught_up(pair.primary_engine, pair.standby_engine, timeout=10)
    at = AppTest.from_file(str(ROOT / "pages" / "progress.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Replay lag"] == "0.0 s"
    assert metrics["Epochs behind primary"] == "0"


def test_progress_page_on_a_primary_shows_no_replica_panel(pair, monkeypatch):
    monkeypatch.setenv("SHAREPRICE_DATABASE_URL", pair.primary.url)
    monkeypatch.delenv("SHAREPRICE_READONLY_URL", raising=False)
    at = AppTest.from_file(str(ROOT / "pages" / "progress.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert "Replay lag" not in {m.label for m in at.metric}


API_PATHS = [
    "/api/epochs-v2?limit=5&operators=0,1",
    "/api/epochs?sample=10",
    "/api/summary",
    "/api/raw-epochs?limit=2",
    "/api/v1/operators",
    "/api/v1/series?operators=0,1&last=20",
    "/api/v1/band?last=20",
    "/api/v1/progress",
]


def test_every_endpoint_works_on_the_standby_and_health_reports_it(pair, tmp_path):
    """A real dashboard server (with the API on its port) reading the standby."""
    import httpx

    from shareprice.bench.streamlit_server import streamlit_server

    pg15.wait_caught_up(pair.primary_engine, pair.standby_engine, timeout=10)
    count, latest = _normalized(pair.standby_engine)
    with streamlit_server(
        pair.primary.url, tmp_path / "st.log", readonly_url=pair.standby.url
    ) as s:
        with httpx.Client(base_url=s.url, timeout=60) as client:
            health = client.get("/api/v1/health")
            assert health.status_code == 200, health.text
            body = health.json()
            assert body["replica"] is True
            assert body["replay_lag_s"] == 0.0 and body["epochs_behind"] == 0
            assert body["latest_epoch"] == latest and body["normalized_epochs"] == count
            for path in API_PATHS:
                response = client.get(path)
                assert response.status_code == 200, (path, response.text[:300])
                assert response.content, path
            operators = client.get("/api/v1/operators").json()
            with pair.standby_engine.connect() as conn:
                known = conn.execute(sa.text("SELECT count(*) FROM operators_metadata")).scalar()
            assert len(operators) == known > 0
    assert pair.standby.password not in (tmp_path / "st.log").read_text(errors="replace")
