"""comprehensive_analytics: v1 (raw JSON, SQL) equals v2 (normalized tables) and the parser;
the swap and its rollback are one transaction each, idempotent, and refuse unexpected states."""

from __future__ import annotations

import secrets

import pytest
from click.testing import CliRunner
from helpers.backfill import as_int, connect, insert_documents
from helpers.database import clone_database, drop_database

from shareprice import backfill
from shareprice.chain.parser import parse_document
from shareprice.cli import main
from shareprice.store import analytics_view, db


def _url(url) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture()
def normalized_copy(pg_admin_url, normalized_small_url):
    url = clone_database(pg_admin_url, normalized_small_url)
    yield url
    drop_database(pg_admin_url, url)


def _rows(url, view: str) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute(f"SELECT * FROM {view} ORDER BY epoch").fetchall()  # noqa: S608


def test_v1_and_v2_return_the_same_columns_and_values(normalized_small_url):
    v1 = _rows(normalized_small_url, analytics_view.V1)
    v2 = _rows(normalized_small_url, analytics_view.V2)
    assert len(v1) == 80 and v1 == v2
    assert analytics_view.differences(db.get_engine(normalized_small_url)) == []
    with connect(normalized_small_url) as conn:
        for view in (analytics_view.V1, analytics_view.V2, analytics_view.PUBLIC):
            cur = conn.execute(f"SELECT * FROM {view} LIMIT 0")  # noqa: S608 (constants)
            assert tuple(d.name for d in cur.description) == analytics_view.COLUMNS


def test_v1_equals_the_parser(normalized_small_url):
    with connect(normalized_small_url) as conn:
        docs = dict(conn.execute("SELECT epoch, data::text FROM epochs").fetchall())
    by_epoch = {r[0]: r for r in _rows(normalized_small_url, analytics_view.V1)}
    for epoch, text in docs.items():
        ops = parse_document(text).operators
        active = [o for o in ops if o.status in (None, "registered")]
        prices = [o.share_price_perq for o in active]
        expected = (
            epoch,
            len(ops),
            len(active),
            sum(o.stake for o in ops) if ops else None,
            sum(o.shares for o in ops) if ops else None,
            sum(o.storage_fee for o in ops) if ops else None,
            sum(o.rewards for o in ops if o.rewards is not None)
            if any(o.rewards is not None for o in ops)
            else None,
            sum(prices) // len(prices) if prices else None,
            min(prices) if prices else None,
            max(prices) if prices else None,
        )
        assert tuple(as_int(v) for v in by_epoch[epoch]) == expected, epoch


def test_real_samples_agree_in_both_definitions(db_url, shared_data):
    import orjson

    flat = orjson.loads((shared_data / "flat-export-220-epochs.json").read_bytes())
    docs = {}
    for doc in flat:
        docs.setdefault(doc["epoch"], orjson.dumps(doc).decode())
    docs[2647] = (shared_data / "storage-dump-epoch-2647.json").read_text()
    docs.pop(2619)
    insert_documents(db_url, sorted(docs.items()))
    backfill.run_backfill(db.get_engine(db_url), backfill.Options(workers=1))
    assert _rows(db_url, analytics_view.V1) == _rows(db_url, analytics_view.V2)
    row = {r[0]: r for r in _rows(db_url, analytics_view.V2)}[2647]
    assert as_int(row[3]) == 2_142_367_189_913_035_523_387_990  # total stake, exact
    assert (as_int(row[8]), as_int(row[9])) == (1000036353676459997, 1000041958130096238)


def test_swap_to_v2_and_back_is_idempotent_with_equal_results(normalized_copy):
    before = _rows(normalized_copy, analytics_view.PUBLIC)
    runner = CliRunner()
    url = ["--url", _url(normalized_copy)]
    swapped = runner.invoke(main, ["views", "use-v2", *url])
    assert swapped.exit_code == 0, swapped.output
    state = analytics_view.state(db.get_engine(normalized_copy))
    assert (state.current, state.old) == (analytics_view.V2, analytics_view.V1)
    assert _rows(normalized_copy, analytics_view.PUBLIC) == before
    again = runner.invoke(main, ["views", "use-v2", *url])
    assert again.exit_code == 0 and "already on v2" in again.output
    back = runner.invoke(main, ["views", "rollback", *url])
    assert back.exit_code == 0, back.output
    state = analytics_view.state(db.get_engine(normalized_copy))
    assert (state.current, state.old) == (analytics_view.V1, None)
    assert _rows(normalized_copy, analytics_view.PUBLIC) == before
    again = runner.invoke(main, ["views", "rollback", *url])
    assert again.exit_code == 0 and "already on v1" in again.output
    status = runner.invoke(main, ["views", "status", *url, "--compare", "80"])
    assert status.exit_code == 0 and "v1 and v2 agree on epochs 0-79" in status.output


def test_swaps_refuse_unexpected_states(normalized_copy):
    engine = db.get_engine(normalized_copy)
    with connect(normalized_copy) as conn:
        conn.execute(
            "INSERT INTO epochs (epoch, data) SELECT 1000, data FROM epochs WHERE epoch = 79"
        )
    with pytest.raises(analytics_view.ViewSwapRefused, match="1 epochs are not normalized"):
        analytics_view.use_v2(engine)
    assert analytics_view.state(engine).current == analytics_view.V1  # nothing changed
    analytics_view.use_v2(engine, force=True)
    with connect(normalized_copy) as conn:
        conn.execute("DROP VIEW comprehensive_analytics_old")
    with pytest.raises(
        analytics_view.ViewSwapRefused, match="comprehensive_analytics_old = missing"
    ):
        analytics_view.rollback(engine)
    with pytest.raises(analytics_view.ViewSwapRefused, match="refusing to swap"):
        analytics_view.use_v2(engine)
    result = CliRunner().invoke(main, ["views", "rollback", "--url", _url(normalized_copy)])
    assert result.exit_code == 1 and "refusing to roll back" in result.output


def test_grants_follow_the_swap(normalized_copy):
    role = f"viewer_{secrets.token_hex(4)}"
    engine = db.get_engine(normalized_copy)
    with connect(normalized_copy) as conn:
        conn.execute(f"CREATE ROLE {role}")
        conn.execute(f"GRANT SELECT ON comprehensive_analytics TO {role}")
    try:
        analytics_view.use_v2(engine)
        with connect(normalized_copy) as conn:
            assert conn.execute(
                "SELECT has_table_privilege(%s, 'comprehensive_analytics', 'SELECT')", (role,)
            ).fetchone() == (True,)
        analytics_view.rollback(engine)
        with connect(normalized_copy) as conn:
            assert conn.execute(
                "SELECT has_table_privilege(%s, 'comprehensive_analytics', 'SELECT')", (role,)
            ).fetchone() == (True,)
    finally:
        db.forget_engine(normalized_copy)
        with connect(normalized_copy) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
