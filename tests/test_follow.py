"""`backfill --follow`: new and changed epochs normalized within 2 s (NOTIFY, or the polling
fallback when no notification comes), and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import time

import orjson
import pytest
from helpers.backfill import actual, connect, expected_from_raw, insert_documents, start_cli

from shareprice.ingest import generator


def _wait_normalized(conn, epoch: int, revision: int | None = None, limit: float = 2.0) -> float:
    started = time.perf_counter()
    while True:
        row = conn.execute(
            "SELECT revision FROM epoch_normalizations WHERE epoch = %s", (epoch,)
        ).fetchone()
        if row is not None and (revision is None or row[0] == revision):
            return time.perf_counter() - started
        elapsed = time.perf_counter() - started
        assert elapsed < limit, f"epoch {epoch} not normalized within {limit} s"
        time.sleep(0.01)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_follow_normalizes_new_and_changed_epochs_within_2_s(db_url, stop):
    docs = list(generator.iter_documents("small", seed=5, epochs=36))
    insert_documents(db_url, [(d.epoch, d.data.decode()) for d in docs[:30]])
    proc = start_cli(db_url, "backfill", "--follow", "--workers", "1", "-q")
    try:
        with connect(db_url) as conn:
            deadline = time.monotonic() + 60
            while conn.execute("SELECT count(*) FROM epoch_normalizations").fetchone()[0] < 30:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)

            latencies = []
            for doc in docs[30:33]:  # new epochs
                insert_documents(db_url, [(doc.epoch, doc.data.decode())])
                latencies.append(_wait_normalized(conn, doc.epoch))

            changed = orjson.loads(docs[10].data)
            changed["operators"]["entries"].pop()
            changed["operators"]["count"] -= 1
            revision = conn.execute(
                "UPDATE epochs SET data = %s::jsonb WHERE epoch = 10 RETURNING revision",
                (orjson.dumps(changed).decode(),),
            ).fetchone()[0]
            latencies.append(_wait_normalized(conn, 10, revision))

            # No notification at all (triggers off for this session): the polling fallback.
            conn.execute("SET session_replication_role = replica")
            conn.execute(
                "INSERT INTO epochs (epoch, data) VALUES (%s, %s::jsonb)",
                (docs[33].epoch, docs[33].data.decode()),
            )
            conn.execute("SET session_replication_role = DEFAULT")
            latencies.append(_wait_normalized(conn, docs[33].epoch))
            assert max(latencies) < 2.0, latencies

        proc.send_signal(stop)
        assert proc.wait(timeout=30) == 130, proc.stderr.read()
        expected = expected_from_raw(db_url)
        got = actual(db_url)
        assert got.prices == expected.prices and got.shares == expected.shares
        with connect(db_url) as conn:
            run = conn.execute(
                "SELECT status, error, epochs_done, epochs_total, finished_at IS NOT NULL "
                "FROM backfill_runs"
            ).fetchone()
        assert run == ("interrupted", f"stopped by {stop.name}", 35, 35, True)
    finally:
        if proc.poll() is None:
            proc.kill()
