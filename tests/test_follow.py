"""`backfill --follow`: new and changed epochs normalized as soon as they are notified (well under
the polling interval), the polling fallback within its interval when no notification comes, and
a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import time

import orjson
import pytest
from helpers.backfill import actual, connect, expected_from_raw, insert_documents, start_cli

from shareprice.backfill import Options
from shareprice.ingest import generator

#: The follower's polling interval (nothing notified).
POLL_S = Options().poll_seconds
#: A notified epoch: the notification plus normalizing one epoch, far below a poll's wait.
NOTIFY_BOUND_S = 0.6 * POLL_S
#: A polled epoch: the interval, plus normalizing it on a busy two-core machine.
POLL_MARGIN_S = 1.0


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
def test_follow_normalizes_notified_epochs_at_once_and_polls_the_rest(db_url, stop):
    docs = list(generator.iter_documents("small", seed=5, epochs=36))
    insert_documents(db_url, [(d.epoch, d.data.decode()) for d in docs[:30]])
    proc = start_cli(db_url, "backfill", "--follow", "--workers", "1", "-q")
    try:
        with connect(db_url) as conn:
            deadline = time.monotonic() + 60
            while conn.execute("SELECT count(*) FROM epoch_normalizations").fetchone()[0] < 30:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)

            # Each write follows the previous epoch's normalization at once, so the follower has
            # just begun its wait: without a notification it would sleep a whole POLL_S. A
            # latency well under POLL_S is therefore the NOTIFY path's, not a lucky poll.
            notified = []
            for doc in docs[30:33]:  # new epochs
                insert_documents(db_url, [(doc.epoch, doc.data.decode())])
                notified.append(_wait_normalized(conn, doc.epoch))

            changed = orjson.loads(docs[10].data)
            changed["operators"]["entries"].pop()
            changed["operators"]["count"] -= 1
            revision = conn.execute(
                "UPDATE epochs SET data = %s::jsonb WHERE epoch = 10 RETURNING revision",
                (orjson.dumps(changed).decode(),),
            ).fetchone()[0]
            notified.append(_wait_normalized(conn, 10, revision))
            assert max(notified) < NOTIFY_BOUND_S, notified

            # No notification at all (triggers off for this session): the polling fallback
            # finds it on its next look, POLL_S after the follower began waiting.
            conn.execute("SET session_replication_role = replica")
            conn.execute(
                "INSERT INTO epochs (epoch, data) VALUES (%s, %s::jsonb)",
                (docs[33].epoch, docs[33].data.decode()),
            )
            conn.execute("SET session_replication_role = DEFAULT")
            polled = _wait_normalized(conn, docs[33].epoch, limit=POLL_S + POLL_MARGIN_S)
            assert POLL_S / 2 < polled < POLL_S + POLL_MARGIN_S, polled

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
        # 30 + 3 new + 10 changed (with 11, whose positions were compared with 10) + 1 polled.
        assert run == ("interrupted", f"stopped by {stop.name}", 36, 36, True)
    finally:
        if proc.poll() is None:
            proc.kill()
