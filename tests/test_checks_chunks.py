"""Chunking must not change what the checks find: the nominator walk split into chunks (each a
walk of its own from a jump, in worker processes in a full run) and the raw positions check's
item batches find exactly what one walk over every epoch finds, on the generated history with
and without a planted fault; and the short walk's chain prices fetched by key equal the whole
table's.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from shareprice import checks
from shareprice.checks import nominator_checks as nc

NOMINATOR_CHECKS = [n for n in checks.check_names() if n.startswith("nominator_")]


def _summary(run: checks.CheckRun) -> dict[str, tuple[str, int, list]]:
    return {
        r.name: (r.status, r.count, r.examples) for r in run.results if r.name in NOMINATOR_CHECKS
    }


def _plant(engine: Engine) -> int:
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "SELECT operator_id, account, from_epoch FROM nominator_positions "
                "WHERE from_epoch BETWEEN 30 AND 60 AND effective_shares > 0 "
                "AND from_epoch > (SELECT min(epoch) FROM epoch_positions) "
                "ORDER BY from_epoch, operator_id, account LIMIT 1"
            )
        ).one()
        conn.execute(
            text(
                "UPDATE nominator_positions SET effective_shares = effective_shares + 10 ^ 20 "
                "WHERE operator_id = :o AND account = :a AND from_epoch = :e"
            ),
            {"o": row.operator_id, "a": row.account, "e": row.from_epoch},
        )
    return int(row.from_epoch)


@pytest.mark.parametrize("planted", [False, True], ids=["clean", "planted"])
def test_chunked_walks_find_what_one_walk_finds(normalized_small_copy, monkeypatch, planted):
    engine = normalized_small_copy
    epoch = _plant(engine) if planted else None
    one = _summary(checks.run_checks(engine, full=True))
    monkeypatch.setattr(nc, "FINDINGS_CHUNK", 7)
    monkeypatch.setattr(nc, "POSITIONS_CHUNK", 9)
    monkeypatch.setattr(nc, "ITEMS_BATCH", 4)
    serial = _summary(checks.run_checks(engine, full=True))
    assert serial == one
    if planted:
        assert one["nominator_shares_sum"][0] == "fail"
        assert one["nominator_positions_match_raw"][0] == "fail"
        assert one["nominator_shares_sum"][2][0]["epoch"] == epoch
    else:
        assert all(status == "pass" for status, _, _ in one.values()), one


def test_chunked_walks_in_worker_processes(normalized_small_copy):
    """Worker processes get the module's chunk sizes from a fresh import, so the chunks are
    the defaults there: on 80 epochs one findings chunk at most; what matters here is that
    the parts pickle and merge to the single connection's findings."""
    engine = normalized_small_copy
    _plant(engine)
    one = _summary(checks.run_checks(engine, full=True))
    pooled = checks.run_checks(engine, full=True, workers=2, parallel_from=1)
    assert pooled.workers == 2
    assert _summary(pooled) == one


def test_chain_prices_by_key_equal_the_whole_table(normalized_small_copy):
    engine = normalized_small_copy
    with engine.connect() as conn:
        whole = nc._chain_prices(conn)
        keys = set(list(whole)[::3]) | {(10**6, 0, 1)}  # and one key that does not exist
        by_key = nc._ChainByKey(conn)
        by_key.need(keys)
        by_key.need(keys)  # asked again: nothing more fetched, nothing lost
    assert dict(by_key) == {k: v for k, v in whole.items() if k in keys}
    assert by_key.get((10**6, 0, 1)) is None
