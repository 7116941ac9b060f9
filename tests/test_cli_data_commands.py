"""`demo`, `prepare`, `backfill --from/--to`, and the yields `shareprice operators` prints.

The yields and APYs are recomputed here from the tables alone, with their definitions from
DOMAIN.md (yield = price_now / price_then - 1, APY = (1 + yield) ** (365 / days) - 1) evaluated
in 50-digit decimals, so neither the query's SQL nor `queries.yields`' float formula is trusted.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from decimal import Decimal

import orjson
import pytest
from helpers.backfill import connect, run_cli, snapshot
from helpers.database import clone_database, drop_database, new_database

#: The consensus chain makes one block every 6 s (DOMAIN.md: end blocks are consensus blocks).
BLOCKS_PER_DAY = 86_400 // 6
WINDOWS = (1, 7, 30)
#: A yield is shown for a window only when its real span is within 20 % of the window.
SPAN_TOLERANCE = Decimal("0.2")
DEMO_EPOCHS = 3734  # the demo profile (README: what `make run` loads)


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def prepared(pg_admin_url, template_url) -> Iterator:
    """An empty database (no schema at all) after one `shareprice prepare`."""
    url = new_database(pg_admin_url, None)
    result = run_cli(url, "prepare", timeout=600)
    yield url, result
    drop_database(pg_admin_url, url)


def test_prepare_migrates_loads_the_demo_and_normalizes_everything(prepared):
    url, result = prepared
    assert result.returncode == 0, result.stderr
    with connect(url) as conn:
        epochs = conn.execute("SELECT count(*), min(epoch), max(epoch) FROM epochs").fetchone()
        normalized = conn.execute("SELECT count(*) FROM epoch_normalizations").fetchone()[0]
        pending = conn.execute(
            "SELECT count(*) FROM epochs e LEFT JOIN epoch_normalizations n USING (epoch) "
            "WHERE n.epoch IS NULL OR n.revision <> e.revision"
        ).fetchone()[0]
        migrations = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
    assert epochs == (DEMO_EPOCHS, 0, DEMO_EPOCHS - 1)
    assert normalized == DEMO_EPOCHS and pending == 0
    assert migrations > 0
    # A second prepare changes nothing: no second demo, nothing left to normalize.
    before = snapshot(url)
    _ok(run_cli(url, "prepare", timeout=300))
    assert snapshot(url) == before


def test_prepare_no_demo_leaves_an_empty_database_migrated(pg_admin_url):
    url = new_database(pg_admin_url, None)
    try:
        _ok(run_cli(url, "prepare", "--no-demo"))
        with connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM epochs").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] > 0
    finally:
        drop_database(pg_admin_url, url)


def test_demo_fills_an_empty_database_and_refuses_a_full_one(db_url):
    _ok(run_cli(db_url, "demo", "--epochs", "60", "--operators", "4"))
    with connect(db_url) as conn:
        assert conn.execute("SELECT count(*), min(epoch), max(epoch) FROM epochs").fetchone() == (
            60,
            0,
            59,
        )
        # Each document's `operators` storage dump holds that epoch's operators (`count`).
        operators = conn.execute(
            "SELECT max((data->'operators'->>'count')::int) FROM epochs"
        ).fetchone()[0]
    assert 1 <= operators <= 4
    again = run_cli(db_url, "demo", "--epochs", "5")
    assert again.returncode == 1
    assert "already holds 60 epochs" in again.stderr and "Traceback" not in again.stderr
    with connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM epochs").fetchone()[0] == 60


def _normalized_epochs(url) -> list[int]:
    with connect(url) as conn:
        rows = conn.execute("SELECT epoch FROM epoch_normalizations ORDER BY epoch").fetchall()
    return [r[0] for r in rows]


def _priced_epochs(url) -> set[int]:
    with connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT DISTINCT epoch FROM operator_share_prices")}


def test_backfill_from_to_normalizes_exactly_that_range(
    pg_admin_url, raw_small_url, normalized_small_url
):
    url = clone_database(pg_admin_url, raw_small_url)  # 80 raw epochs, none normalized
    try:
        _ok(run_cli(url, "backfill", "--from", "20", "--to", "39", "-q"))
        assert _normalized_epochs(url) == list(range(20, 40))
        assert _priced_epochs(url) <= set(range(20, 40))
        _ok(run_cli(url, "backfill", "--to", "9", "-q"))
        assert _normalized_epochs(url) == [*range(10), *range(20, 40)]
        _ok(run_cli(url, "backfill", "--from", "70", "-q"))
        assert _normalized_epochs(url) == [*range(10), *range(20, 40), *range(70, 80)]
        # Again over a done range: nothing to do, nothing changed.
        before = snapshot(url)
        _ok(run_cli(url, "backfill", "--from", "20", "--to", "39", "-q"))
        after = snapshot(url)
        assert after["epoch_normalizations"] == before["epoch_normalizations"]
        # The holes filled last: the same tables as one complete run.
        _ok(run_cli(url, "backfill", "-q"))
        assert _normalized_epochs(url) == list(range(80))
        ours, clean = snapshot(url), snapshot(normalized_small_url)
        for table in ours:
            if table != "epoch_normalizations":
                assert ours[table] == clean[table], table
    finally:
        drop_database(pg_admin_url, url)


def test_backfill_rejects_an_inverted_range(db_url):
    result = run_cli(db_url, "backfill", "--from", "10", "--to", "5", "-q")
    assert result.returncode != 0
    assert "--from" in result.stderr and "Traceback" not in result.stderr


# --- yields and APY ------------------------------------------------------------------------


def _epochs_per_day(conn) -> Decimal:
    """From the first and last end blocks the raw epochs carry (the demo has them all)."""
    rows = conn.execute(
        "SELECT epoch, end_block FROM epochs WHERE end_block IS NOT NULL ORDER BY epoch"
    ).fetchall()
    (e1, b1), (e2, b2) = rows[0], rows[-1]
    return Decimal(BLOCKS_PER_DAY) * (e2 - e1) / (b2 - b1)


def _expected_yields(url) -> dict[int, dict[str, Decimal | None]]:
    """Per operator and window: yield and APY from the exact prices, or None (n/a)."""
    decimal.getcontext().prec = 50
    with connect(url) as conn:
        per_day = _epochs_per_day(conn)
        prices: dict[int, list[tuple[int, int]]] = {}
        for operator_id, epoch, perq in conn.execute(
            "SELECT operator_id, epoch, share_price_perq FROM operator_share_prices "
            "ORDER BY operator_id, epoch"
        ):
            prices.setdefault(operator_id, []).append((epoch, int(perq)))
        known = [r[0] for r in conn.execute("SELECT operator_id FROM operators_metadata")]
    out: dict[int, dict[str, Decimal | None]] = {}
    for operator_id in known:
        series = prices.get(operator_id, [])
        row: dict[str, Decimal | None] = {}
        for days in WINDOWS:
            row[f"yield_{days}d"] = row[f"apy_{days}d"] = None
            if not series:
                continue
            now_epoch, now_price = series[-1]
            back = max(1, int((days * per_day).to_integral_value(decimal.ROUND_HALF_EVEN)))
            earlier = [(e, p) for e, p in series if e <= now_epoch - back]
            if not earlier:
                continue
            then_epoch, then_price = earlier[-1]
            span = Decimal(now_epoch - then_epoch) / per_day
            if abs(span - days) > SPAN_TOLERANCE * days:
                continue
            growth = Decimal(now_price) / Decimal(then_price)
            row[f"yield_{days}d"] = growth - 1
            row[f"apy_{days}d"] = (growth.ln() * Decimal(365) / span).exp() - 1
        out[operator_id] = row
    return out


def test_operators_json_yields_and_apy_match_the_tables(prepared):
    url, _ = prepared
    printed = [orjson.loads(line) for line in _ok(run_cli(url, "operators", "--format", "json"))
               .splitlines() if line.strip()]  # fmt: skip
    expected = _expected_yields(url)
    assert {row["operator_id"] for row in printed} == set(expected)
    shown = {f"yield_{d}d": 0 for d in WINDOWS}
    for row in printed:
        want = expected[row["operator_id"]]
        for key, value in want.items():
            got = row[key]
            if value is None:
                assert got is None, (row["operator_id"], key, got)
                continue
            assert got is not None, (row["operator_id"], key)
            assert abs(Decimal(repr(got)) - value) <= abs(value) * Decimal("1e-9"), (
                row["operator_id"],
                key,
                got,
                value,
            )
            if key in shown:
                shown[key] += 1
    # The demo has operators with every window, and late ones without the long windows.
    assert all(count > 0 for count in shown.values()), shown
    assert any(want["yield_30d"] is None and want["yield_1d"] is not None
               for want in expected.values())  # fmt: skip
