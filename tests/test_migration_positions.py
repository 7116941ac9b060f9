"""sql/051: epochs normalized before positions were read get them on the next backfill.

A database upgraded to sql/042 holds prices for its epochs but no positions; the backfill's
pending rule alone never revisits an epoch normalized at its current revision. The state before
the upgrade is made here from a real normalization by removing what 042 added for the epoch.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from shareprice import backfill
from shareprice.ingest.importer import import_paths
from shareprice.store import migrate

DUMP = "storage-dump-epoch-2647.json"
FLAT = "flat-export-220-epochs.json"


def _migration_051() -> str:
    (found,) = [m for m in migrate.discover() if m.version == 51]
    return found.sql


def _position_rows(engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM nominator_positions),"
                    " (SELECT count(*) FROM nominator_withdrawals),"
                    " (SELECT count(*) FROM epoch_positions)"
                )
            ).one()
        )


def test_epochs_normalized_before_positions_get_them(engine, shared_data):
    raw = json.loads((shared_data / DUMP).read_text())[0]
    deposits, withdrawals = raw["deposits"]["count"], raw["withdrawals"]["count"]
    import_paths(engine, [shared_data / FLAT, shared_data / DUMP])
    assert backfill.run_backfill(engine, backfill.Options(workers=1)).ok
    assert _position_rows(engine) == (deposits, withdrawals, 1)
    with engine.begin() as conn:  # what an epoch normalized before sql/042 looks like
        for table in ("nominator_positions", "nominator_withdrawals", "epoch_positions"):
            conn.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608 (constant names)
        raw_before = conn.execute(sa.text("SELECT data::text FROM epochs ORDER BY epoch")).all()
    assert backfill.pending_count(engine) == 0  # the pending rule alone never comes back

    with engine.begin() as conn:
        conn.exec_driver_sql(_migration_051())
    # Only the dump: the 220 flat-export epochs carry no positions and stay as they are.
    assert backfill.pending_count(engine) == 1
    summary = backfill.run_backfill(engine, backfill.Options(workers=1))
    assert summary.ok and summary.epochs_done == 1 and summary.epochs_failed == 0
    assert _position_rows(engine) == (deposits, withdrawals, 1)
    assert backfill.pending_count(engine) == 0
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT data::text FROM epochs ORDER BY epoch")).all() == (
            raw_before
        )
