"""kill -9 at several points of a running backfill, then a rerun: the tables equal a clean run's,
with nothing missing and nothing twice (each batch commits atomically with its bookkeeping)."""

from __future__ import annotations

import signal
import time

import psutil
import pytest
from helpers.backfill import connect, run_cli, snapshot, start_cli
from helpers.database import clone_database, drop_database

#: The positions tables (sql/042) in key order; base_revision as whether it names E-1's
#: current revision (the clone's revisions equal the reference's, but say what matters).
POSITIONS = {
    "nominator_positions": "SELECT * FROM nominator_positions ORDER BY 1, 2, 3",
    "nominator_withdrawals": "SELECT * FROM nominator_withdrawals ORDER BY 1, 2, 3",
    "epoch_positions": (
        "SELECT p.*, p.base_revision IS NOT DISTINCT FROM e1.revision FROM epoch_positions AS p "
        "LEFT JOIN epochs AS e1 ON e1.epoch = p.epoch - 1 ORDER BY 1"
    ),
    "nominator_accounts": "SELECT * FROM nominator_accounts ORDER BY 1",
}


def _positions(url) -> dict[str, list[tuple]]:
    with connect(url) as conn:
        return {t: conn.execute(q).fetchall() for t, q in POSITIONS.items()}


def _normalized(url) -> int:
    with connect(url) as conn:
        return conn.execute("SELECT count(*) FROM epoch_normalizations").fetchone()[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_mid_run_then_rerun_equals_a_clean_run(
    pg_admin_url, raw_small_url, normalized_small_url, workers
):
    url = clone_database(pg_admin_url, raw_small_url)
    try:
        kills = 0
        for threshold in (5, 30, 55):
            proc = start_cli(url, "backfill", "--batch-size", "1", "--workers", str(workers), "-q")
            children: list[psutil.Process] = []
            deadline = time.monotonic() + 60
            while _normalized(url) < threshold and proc.poll() is None:
                assert time.monotonic() < deadline, "the backfill made no progress"
                children = psutil.Process(proc.pid).children(recursive=True) or children
                time.sleep(0.005)
            killed = proc.poll() is None
            if killed:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
            # Workers die with their coordinator (no orphan keeps writing).
            gone, alive = psutil.wait_procs(children, timeout=10)
            assert not alive, alive
            if killed:  # killed mid-run: what it committed stays, the rest is still to do
                after = _normalized(url)
                assert threshold <= after < 80, f"killed at {threshold}, {after} normalized"
        assert kills >= 2, "the backfill finished before it could be killed"
        final = run_cli(url, "backfill", "--workers", str(workers))
        assert final.returncode == 0, final.stderr
        assert snapshot(url) == snapshot(normalized_small_url)
        positions = _positions(url)
        assert positions == _positions(normalized_small_url)
        assert positions["nominator_positions"], "the generated data carries positions"
        with connect(url) as conn:
            statuses = [r[0] for r in conn.execute("SELECT status FROM backfill_runs ORDER BY 1")]
            duplicates = conn.execute(
                "SELECT count(*) - count(DISTINCT (operator_id, epoch)) FROM operator_shares"
            ).fetchone()[0]
        # The killed runs are marked interrupted by the run that found them dead.
        assert statuses.count("succeeded") == 1
        assert statuses.count("interrupted") == kills
        assert duplicates == 0
    finally:
        drop_database(pg_admin_url, url)
