"""Backups that restore: dump + manifest, restore into an empty database with counts and
checksums verified, refusal of a non-empty target, --verify, and tampering detected."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from helpers.backfill import connect
from helpers.database import clone_database, drop_database, new_database
from test_external_postgres import pg15_url  # noqa: F401 (a fixture)

from shareprice.cli import main
from shareprice.store import backup, config


def _url(url) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture()
def source(pg_admin_url, normalized_small_url):
    url = clone_database(pg_admin_url, normalized_small_url)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture()
def empty_target(pg_admin_url):
    url = new_database(pg_admin_url, None)
    yield url
    drop_database(pg_admin_url, url)


def _make_backup(source, out: Path) -> Path:
    result = CliRunner().invoke(main, ["backup", "--url", _url(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    match = re.search(r"^backup (\S+):", result.output, re.M)
    assert match, result.output
    directory = Path(match.group(1))
    assert directory.parent == out
    assert re.fullmatch(r"\d{8}T\d{6}Z(-\d+)?", directory.name)
    return directory


def test_backup_restores_into_an_empty_database_with_equal_counts_and_checksums(
    source, empty_target, tmp_path
):
    directory = _make_backup(source, tmp_path)
    manifest = orjson.loads((directory / "manifest.json").read_bytes())
    assert (directory / "shareprice.dump").stat().st_size == manifest["dump"]["bytes"] > 0
    with connect(source) as conn:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 (constants)
            for t in ("epochs", "operator_share_prices", "operator_chain_share_prices")
        }
        source_checks, source_sequences = backup.database_checks(conn)
        version_num = int(conn.execute("SHOW server_version_num").fetchone()[0])
    for table, rows in counts.items():
        assert manifest["tables"][table]["rows"] == rows > 0
    # The manifest names the source server's version: its major and minor, from the number.
    major, minor = divmod(version_num, 10000)
    assert re.match(rf"{major}\.{minor}\b", manifest["server_version"]), manifest["server_version"]
    assert manifest["sequences"]["data_version_seq"] == source_sequences["data_version_seq"]

    result = CliRunner().invoke(main, ["restore", str(directory), "--into", _url(empty_target)])
    assert result.exit_code == 0, result.output
    assert "counts and checksums match the manifest" in result.output
    with connect(empty_target) as conn:
        target_checks, target_sequences = backup.database_checks(conn)
    assert target_checks == source_checks
    assert target_sequences == source_sequences

    # A second restore into the now non-empty database is refused, unless forced.
    again = CliRunner().invoke(main, ["restore", str(directory), "--into", _url(empty_target)])
    assert again.exit_code == 1 and "is not empty" in again.output
    forced = CliRunner().invoke(
        main, ["restore", str(directory), "--into", _url(empty_target), "--force"]
    )
    assert forced.exit_code == 0, forced.output


def test_verify_checks_without_touching_existing_databases(source, tmp_path):
    directory = _make_backup(source, tmp_path)
    with connect(source) as conn:
        databases = conn.execute("SELECT count(*) FROM pg_database").fetchone()[0]
    ok = CliRunner().invoke(main, ["backup", "--url", _url(source), "--verify", str(directory)])
    assert ok.exit_code == 0, ok.output
    assert "OK (sha256, listing and test restore" in ok.output
    with connect(source) as conn:  # the scratch database is gone again
        assert conn.execute("SELECT count(*) FROM pg_database").fetchone()[0] == databases

    # A changed dump is caught by its sha256.
    dump = directory / "shareprice.dump"
    dump.write_bytes(dump.read_bytes() + b"x")
    bad = CliRunner().invoke(main, ["backup", "--verify", str(directory), "--no-restore-test"])
    assert bad.exit_code == 1 and "sha256 differs" in bad.output


def test_restore_reports_a_table_that_does_not_match(source, empty_target, tmp_path):
    directory = _make_backup(source, tmp_path)
    path = directory / "manifest.json"
    manifest = orjson.loads(path.read_bytes())
    manifest["tables"]["operator_shares"]["checksum"] = "12345"
    path.write_bytes(orjson.dumps(manifest))
    result = CliRunner().invoke(main, ["restore", str(directory), "--into", _url(empty_target)])
    assert result.exit_code == 1
    assert "operator_shares: checksum differs" in result.output
    assert "does NOT match the manifest" in result.output


def test_checksums_see_a_changed_value(source):
    with connect(source) as conn:
        before = {c.table: c for c in backup.database_checks(conn)[0]}
        conn.execute(
            "UPDATE operator_share_prices SET share_price_perq = share_price_perq + 1 "
            "WHERE (operator_id, epoch) = (SELECT operator_id, epoch FROM operator_share_prices "
            "LIMIT 1)"
        )
        after = {c.table: c for c in backup.database_checks(conn)[0]}
    assert after["operator_share_prices"].rows == before["operator_share_prices"].rows
    assert after["operator_share_prices"].checksum != before["operator_share_prices"].checksum
    assert after["operator_shares"] == before["operator_shares"]


def test_backfill_backup_restore_and_views_on_postgres_15_with_a_password(pg15_url, tmp_path):  # noqa: F811
    """The oldest supported server over TCP with password auth: pg_dump/pg_restore 15 get the
    password through PGPASSWORD, the v1 view decodes hex without PostgreSQL 16's help."""
    import sqlalchemy as sa

    from shareprice import backfill
    from shareprice.ingest import generator
    from shareprice.store import analytics_view, db, migrate

    admin, password = pg15_url
    admin_engine = sa.create_engine(config.normalize_url(admin), isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.exec_driver_sql("CREATE DATABASE b_src")
        conn.exec_driver_sql("CREATE DATABASE b_dst")
    admin_engine.dispose()
    src = config.normalize_url(admin).set(database="b_src")
    dst = config.normalize_url(admin).set(database="b_dst")
    engine = db.get_engine(src)
    migrate.migrate(engine)
    docs = list(generator.iter_documents("small", seed=2, epochs=25))
    with engine.begin() as conn:
        for d in docs:
            conn.exec_driver_sql(
                "INSERT INTO epochs (epoch, data) VALUES (%s, %s::jsonb)",
                (d.epoch, d.data.decode()),
            )
    summary = backfill.run_backfill(engine, backfill.Options(workers=2, batch_size=4))
    assert summary.status == "succeeded" and summary.epochs_done == 25
    assert analytics_view.differences(engine) == []
    analytics_view.use_v2(engine)

    result = CliRunner().invoke(main, ["backup", "--url", _url(src), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    directory = Path(re.search(r"^backup (\S+):", result.output, re.M).group(1))
    manifest = orjson.loads((directory / "manifest.json").read_bytes())
    assert manifest["server_version"].startswith("15.") and manifest["dump"]["tool"].startswith(
        "pg_dump 15"
    )
    restored = CliRunner().invoke(main, ["restore", str(directory), "--into", _url(dst)])
    assert restored.exit_code == 0, restored.output
    assert password not in result.output + restored.output
    with connect(src) as a, connect(dst) as b:
        assert backup.database_checks(a) == backup.database_checks(b)
        assert b.execute("SELECT count(*) FROM comprehensive_analytics").fetchone()[0] == 25
    db.forget_engine(src)
    db.forget_engine(dst)
