"""`shareprice bench check` on the small profile: the floor reads every document, the full
run verifies every epoch, the incremental run after N new epochs re-reads exactly those N,
with nothing changed none; and the database measured is left as it was."""

from __future__ import annotations

import subprocess
import sys

import orjson
from sqlalchemy import text

from shareprice.store import db


def _verifications(url) -> int:
    with db.get_engine(url).connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM epoch_verifications")).scalar_one())


def test_bench_check_on_a_clone(pg_admin_url, normalized_small_url):
    before = _verifications(normalized_small_url)
    db.forget_engine(normalized_small_url)  # the clone copies the database: nobody connected
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "shareprice.cli",
            "bench",
            "check",
            "--url",
            normalized_small_url.render_as_string(hide_password=False),
            "--new-epochs",
            "3",
            "--repeats",
            "2",
            "--workers",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = orjson.loads(out.stdout)
    assert result["epochs"] == 80 and result["documents"] == 80 and result["json_mb"] > 0
    assert result["floor_read_s"] > 0 and result["full_over_floor"] > 0
    # The small profile slashes an operator: its falling price is a warning, nothing fails.
    assert result["full_status"] == "warn" and result["full_verified_epochs"] == 80
    assert set(result["full_checks_s"]) >= {"prices_match_raw", "nominator_positions_match_raw"}
    assert result["new_epochs"] == 3 and result["incremental_reread_epochs"] == [3]
    assert len(result["incremental_cli_runs_s"]) == 2
    assert result["unchanged_reread_epochs"] == [0]
    assert _verifications(normalized_small_url) == before
    with db.connect(pg_admin_url.set(database="postgres")) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'bench_check_%'")
        assert left.fetchone() == (0,)
