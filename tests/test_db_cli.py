"""`shareprice db up | status | url | down` against a real embedded server in its own data dir."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SHAREPRICE = [sys.executable, "-m", "shareprice.cli"]


def run(args, data_dir: Path, **env):
    environment = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    environment.update(SHAREPRICE_DATA_DIR=str(data_dir), **env)
    return subprocess.run(
        [*SHAREPRICE, *args], capture_output=True, text=True, env=environment, timeout=120
    )


@pytest.fixture()
def own_data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("own") / "pgdata"
    yield path
    run(["db", "down"], path)


def test_db_up_status_url_down_round_trip(own_data_dir):
    status = run(["db", "status"], own_data_dir)
    assert status.returncode == 0, status.stderr
    assert f"data dir:    {own_data_dir}" in status.stdout
    assert "running:     no" in status.stdout

    up = run(["db", "up"], own_data_dir)
    assert up.returncode == 0, up.stderr
    assert "running" in up.stdout

    status = run(["db", "status"], own_data_dir)
    assert "running:     yes" in status.stdout
    assert "version:     PostgreSQL 18" in status.stdout

    url = run(["db", "url"], own_data_dir)
    last = url.stdout.strip().splitlines()[-1]
    assert last.startswith("postgresql+psycopg://")
    assert str(own_data_dir).replace("/", "%2F") in last or str(own_data_dir) in last

    # The URL printed is one other tools can connect with.
    import sqlalchemy as sa

    engine = sa.create_engine(last)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
    engine.dispose()

    down = run(["db", "down"], own_data_dir)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert "running:     no" in run(["db", "status"], own_data_dir).stdout


def test_db_url_masks_password_unless_revealed(own_data_dir):
    secret_url = "postgresql://reader:not-a-real-secret@db.invalid:5432/shareprice"
    masked = run(["db", "url"], own_data_dir, SHAREPRICE_DATABASE_URL=secret_url)
    assert masked.returncode == 0, masked.stderr
    assert "not-a-real-secret" not in masked.stdout + masked.stderr
    assert masked.stdout.strip().splitlines()[-1] == (
        "postgresql+psycopg://reader:***@db.invalid:5432/shareprice"
    )
    revealed = run(["db", "url", "--reveal"], own_data_dir, SHAREPRICE_DATABASE_URL=secret_url)
    assert "not-a-real-secret" in revealed.stdout


def test_unreachable_database_gives_one_masked_line(own_data_dir):
    secret_url = "postgresql://u:hunter2-secret@127.0.0.1:1/x"
    result = run(["migrate"], own_data_dir, SHAREPRICE_DATABASE_URL=secret_url)
    assert result.returncode == 1
    assert "database unavailable" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
