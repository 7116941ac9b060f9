"""Pointing shareprice at the old system's database: its `epochs` table is adopted in place.

The old indexer wrote `epochs (epoch, data)`; the old migration added tables under the names we
use. `shareprice migrate` must keep every raw byte, move the old tables aside (not drop them),
and leave a database the backfill normalizes like any other.
"""

import json

import pytest
import sqlalchemy as sa

from shareprice import backfill
from shareprice.store import db, migrate


def test_old_database_is_adopted_without_touching_raw_data(empty_db_url, shared_data):
    engine = db.get_engine(empty_db_url)
    dump = json.loads((shared_data / "storage-dump-epoch-2647.json").read_text())[0]
    flat = json.loads((shared_data / "flat-export-220-epochs.json").read_text())[100]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE epochs (epoch INTEGER PRIMARY KEY, data JSONB NOT NULL, "
            "created_at TIMESTAMPTZ DEFAULT now())"
        )
        conn.execute(
            sa.text("INSERT INTO epochs (epoch, data) VALUES (:e, CAST(:d AS jsonb))"),
            [
                {"e": 2647, "d": json.dumps(dump)},
                {"e": flat["epoch"], "d": json.dumps(flat)},
            ],
        )
        # The old system's own normalized table, with an index name ours would collide with.
        conn.exec_driver_sql(
            "CREATE TABLE operator_share_prices (id SERIAL PRIMARY KEY, epoch INT, "
            "operator_id INT, share_price NUMERIC)"
        )
        conn.exec_driver_sql(
            "CREATE INDEX operator_share_prices_epoch_brin ON operator_share_prices USING brin (epoch)"
        )
        conn.exec_driver_sql(
            "INSERT INTO operator_share_prices (epoch, operator_id, share_price) VALUES (1, 7, 1.5)"
        )
        conn.exec_driver_sql("CREATE VIEW comprehensive_analytics AS SELECT 1 AS x")
        before = conn.exec_driver_sql("SELECT epoch, md5(data::text) FROM epochs ORDER BY 1").all()

    migrate.migrate(engine)

    with engine.connect() as conn:
        after = conn.exec_driver_sql("SELECT epoch, md5(data::text) FROM epochs ORDER BY 1").all()
        assert after == before
        assert conn.exec_driver_sql(
            "SELECT end_block, end_hash IS NOT NULL, indexed_at IS NOT NULL FROM epochs WHERE epoch = 2647"
        ).one() == (4169635, True, True)
        legacy = conn.exec_driver_sql(
            "SELECT operator_id, share_price FROM operator_share_prices_legacy"
        ).one()
        assert legacy == (7, 1.5)
        assert (
            conn.exec_driver_sql("SELECT x FROM comprehensive_analytics_legacy").scalar_one() == 1
        )

    summary = backfill.run_backfill(engine, backfill.Options(workers=1))
    assert summary.epochs_failed == 0
    with engine.connect() as conn:
        prices = dict(
            conn.exec_driver_sql(
                "SELECT operator_id, share_price_perq FROM operator_share_prices WHERE epoch = 2647"
            ).all()
        )
    assert prices == {0: 1000036353676459997, 1: 1000041958130096238}
    assert migrate.migrate(engine) == []


def test_old_epochs_with_json_not_jsonb_is_refused_clearly(empty_db_url):
    engine = db.get_engine(empty_db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE epochs (epoch INTEGER PRIMARY KEY, data JSON NOT NULL)")
    with pytest.raises(migrate.MigrationError, match="001_epochs.sql failed.*not jsonb"):
        migrate.migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM schema_migrations").scalar_one() == 0
