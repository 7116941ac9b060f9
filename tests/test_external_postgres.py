"""The external-URL path, against Debian's PostgreSQL 15 (the embedded server is 18).

The test starts its own PostgreSQL 15 cluster, as a non-root user, listening on a loopback port
with password authentication, so both the URL handling (driver, masking) and the schema are
proven on the oldest server version we support.
"""

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from shareprice.cli import main
from shareprice.store import config, db, migrate

PG15 = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def pg15_url():
    assert (PG15 / "pg_ctl").exists(), "Debian's postgresql-15 is required (.ci/run installs it)"
    base = Path(tempfile.mkdtemp(prefix="shareprice-pg15-"))
    data = base / "data"
    password = secrets.token_urlsafe(12)
    pwfile = base / "pw"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(pwfile, "postgres")
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run(
        _as_user(
            [
                str(PG15 / "initdb"),
                "-D",
                str(data),
                "-U",
                "admin",
                "-E",
                "UTF8",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
            ]
        ),
        check=True,
        capture_output=True,
        env=env,
    )
    subprocess.run(
        _as_user(
            [
                str(PG15 / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-l",
                str(base / "log"),
                "-o",
                f"-p {port} -k {base} -c listen_addresses=127.0.0.1",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        env=env,
    )
    yield f"postgresql://admin:{password}@127.0.0.1:{port}/postgres", password
    db.dispose_engines()
    subprocess.run(
        _as_user([str(PG15 / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
        capture_output=True,
        env=env,
    )
    shutil.rmtree(base, ignore_errors=True)


def test_schema_applies_on_postgres_15(pg15_url):
    url, _ = pg15_url
    engine = db.get_engine(url)
    assert engine.url.drivername == "postgresql+psycopg"
    assert db.server_version(engine).startswith("15.")
    migrate.migrate(engine)
    assert migrate.migrate(engine) == []
    with engine.begin() as conn:
        conn.exec_driver_sql("""INSERT INTO epochs (epoch, data) VALUES (7, '{"x": 1}')""")
        assert conn.exec_driver_sql("SELECT revision FROM epochs").scalar_one() > 0


def test_cli_on_external_url_never_prints_the_password(pg15_url, monkeypatch):
    url, password = pg15_url
    monkeypatch.setenv("SHAREPRICE_DATABASE_URL", url)
    result = CliRunner().invoke(main, ["db", "url"])
    assert result.exit_code == 0
    assert password not in result.output
    assert result.output.strip().splitlines()[-1] == config.mask_url(config.normalize_url(url))
    status = CliRunner().invoke(main, ["db", "status"])
    assert password not in status.output and "external database" in status.output


def test_wrong_password_is_a_clear_masked_error(pg15_url, monkeypatch):
    url, password = pg15_url
    bad = url.replace(password, "wrong-" + password)
    monkeypatch.setenv("SHAREPRICE_DATABASE_URL", bad)
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 1
    assert "database unavailable" in result.output
    assert password not in result.output
    with pytest.raises(db.DatabaseUnavailable) as caught:
        db.check_available(db.get_engine(bad))
    message = str(caught.value)
    assert "password authentication failed" in message  # the server's reason, kept
    assert password not in message and "admin:***@127.0.0.1" in message  # the URL, masked
