from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from shareprice.cli import main
from shareprice.store import db, migrate


def table_names(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_migrations_apply_once_and_are_idempotent(empty_db_url):
    engine = db.get_engine(empty_db_url)
    first = migrate.migrate(engine)
    assert first == [m.name for m in migrate.discover()]
    assert {
        "epochs",
        "operator_share_prices",
        "operator_shares",
        "operators_metadata",
    } <= table_names(engine)
    assert migrate.migrate(engine) == []
    assert [name for _, name in migrate.applied(engine)] == first


def test_cli_migrate_twice_changes_nothing(empty_db_url, monkeypatch):
    monkeypatch.setenv(
        "SHAREPRICE_DATABASE_URL", empty_db_url.render_as_string(hide_password=False)
    )
    runner = CliRunner()
    first = runner.invoke(main, ["migrate"])
    assert first.exit_code == 0, first.output
    assert "applied 001_epochs.sql" in first.output
    second = runner.invoke(main, ["migrate"])
    assert second.exit_code == 0, second.output
    assert second.output.strip() == "schema up to date"


def test_edited_applied_migration_is_refused(empty_db_url, tmp_path: Path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "001_first.sql").write_text("CREATE TABLE t (x int);")
    engine = db.get_engine(empty_db_url)
    assert migrate.migrate(engine, sql_dir) == ["001_first.sql"]
    (sql_dir / "001_first.sql").write_text("CREATE TABLE t (x bigint);")
    with pytest.raises(migrate.MigrationError, match="001_first.sql.*edited"):
        migrate.migrate(engine, sql_dir)


def test_failed_migration_leaves_nothing_half_applied(empty_db_url, tmp_path: Path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "001_ok.sql").write_text("CREATE TABLE ok (x int);")
    (sql_dir / "002_bad.sql").write_text("CREATE TABLE half (x int); SELECT no_such_function();")
    engine = db.get_engine(empty_db_url)
    with pytest.raises(migrate.MigrationError, match="002_bad.sql failed.*no_such_function"):
        migrate.migrate(engine, sql_dir)
    assert "ok" in table_names(engine)
    assert "half" not in table_names(engine)
    assert [v for v, _ in migrate.applied(engine)] == [1]


def test_badly_named_migration_file_is_refused(tmp_path: Path):
    (tmp_path / "1-first.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="NNN_lower_snake"):
        migrate.discover(tmp_path)


def test_constraints_reject_impossible_values(engine):
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO operator_share_prices VALUES (1, 1, 1000000000000000000, 'storage_dump')"
        )
    for bad in (
        "INSERT INTO operator_share_prices VALUES (2, 1, 0, 'storage_dump')",
        "INSERT INTO operator_share_prices VALUES (3, 1, 5, 'made_up')",
        "INSERT INTO operator_shares (operator_id, epoch, stake_raw) VALUES (1, 1, -1)",
        "INSERT INTO operator_shares (operator_id, epoch, stake_raw, shares_raw) VALUES (1, 1, 1, -5)",
    ):
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.exec_driver_sql(bad)


def test_epochs_revision_changes_only_when_data_changes(engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("""INSERT INTO epochs (epoch, data) VALUES (1, '{"a": 1}')""")
        r1 = conn.exec_driver_sql("SELECT revision FROM epochs").scalar_one()
        conn.exec_driver_sql("UPDATE epochs SET end_block = 5")
        r2 = conn.exec_driver_sql("SELECT revision FROM epochs").scalar_one()
        conn.exec_driver_sql("""UPDATE epochs SET data = '{"a": 2}'""")
        r3 = conn.exec_driver_sql("SELECT revision FROM epochs").scalar_one()
    assert r1 == r2 and r3 > r2
