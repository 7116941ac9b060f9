"""`shareprice db roles`: the dashboard's connection cannot write; the writer cannot migrate."""

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

from shareprice import ui
from shareprice.cli import main
from shareprice.store import db, roles

ROOT = Path(__file__).resolve().parent.parent


def as_role(db_url, role: str) -> str:
    # The embedded test server trusts local socket connections, so no password is needed.
    return db_url.set(username=role, password=None).render_as_string(hide_password=False)


@pytest.fixture()
def with_roles(db_url, engine):
    roles.ensure_roles(engine)
    return db_url


def test_roles_command_is_idempotent_and_prints_usage(db_url):
    runner = CliRunner()
    first = runner.invoke(main, ["db", "roles"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(main, ["db", "roles"])
    assert second.exit_code == 0, second.output
    assert "shareprice_reader: exists, grants refreshed" in second.output
    assert "SHAREPRICE_READONLY_URL=" in second.output


def test_role_password_comes_from_environment_and_is_never_printed(db_url, monkeypatch):
    monkeypatch.setenv("READER_PW", "reader-pw-should-not-print")
    result = CliRunner().invoke(main, ["db", "roles", "--reader-password-env", "READER_PW"])
    assert result.exit_code == 0, result.output
    assert "reader-pw-should-not-print" not in result.output
    assert "password set" in result.output


def test_reader_can_select_but_not_write(with_roles):
    reader = db.get_engine(as_role(with_roles, roles.READER))
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM epochs").scalar_one() == 0
        conn.exec_driver_sql("SELECT last_value FROM data_version_seq").scalar_one()
    for statement in (
        """INSERT INTO epochs (epoch, data) VALUES (1, '{}')""",
        "UPDATE operators_metadata SET name = 'x'",
        "CREATE TABLE sneaky (x int)",
        "SELECT nextval('data_version_seq')",
    ):
        with pytest.raises(sa.exc.DBAPIError), reader.begin() as conn:
            conn.exec_driver_sql(statement)


def test_writer_can_write_rows_but_not_change_the_schema(with_roles):
    writer = db.get_engine(as_role(with_roles, roles.WRITER))
    with writer.begin() as conn:
        conn.exec_driver_sql("""INSERT INTO epochs (epoch, data) VALUES (1, '{}')""")
        conn.exec_driver_sql("SELECT nextval('data_version_seq')")
    with pytest.raises(sa.exc.ProgrammingError), writer.begin() as conn:
        conn.exec_driver_sql("DROP TABLE epochs")


def test_dashboard_connection_cannot_write(with_roles, monkeypatch):
    monkeypatch.setenv("SHAREPRICE_READONLY_URL", as_role(with_roles, roles.READER))
    assert ui.using_readonly_role()
    engine = ui.engine()
    assert engine.url.username == roles.READER
    with pytest.raises(sa.exc.DBAPIError, match="permission denied|read-only"):
        with engine.begin() as conn:
            conn.exec_driver_sql("""INSERT INTO epochs (epoch, data) VALUES (2, '{}')""")


@pytest.mark.parametrize(
    "page", ["pages/explorer.py", "pages/progress.py", "pages/integrity.py", "pages/timings.py"]
)
def test_every_page_works_on_the_reader_role(with_roles, monkeypatch, page):
    monkeypatch.setenv("SHAREPRICE_READONLY_URL", as_role(with_roles, roles.READER))
    at = AppTest.from_file(str(ROOT / page), default_timeout=60).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_sidebar_says_when_the_dashboard_is_not_read_only(db_url):
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
    assert not at.exception
    assert any("SHAREPRICE_READONLY_URL" in w.value for w in at.sidebar.warning)
