"""Change marks (sql/080): every kind of write marks the epochs it touched, so an incremental
run recomputes the digests (sql/041, sql/060's text, verified epochs stay verified) of those
epochs only and re-reads the ones whose rows changed; a saved run forgets exactly the marks it
accounted for; a write that bypasses the triggers is caught by `verified_digests_hold` in a
full run, which also repairs the recorded digests."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from shareprice import backfill, checks

# sql/060's epoch_rows_digests() body, verbatim but for the function wrapper: what every epoch
# verified before sql/080 recorded. sql/080's per-epoch digests must give the same text, or an
# upgrade would make the next incremental run re-read everything (and the digest would have
# changed meaning).
_SQL_060 = """
    WITH prices AS (
        SELECT p.epoch, count(*) AS n,
               bit_xor(hash_record_extended(
                   ROW(p.operator_id, p.share_price_perq, p.source), p.epoch)) AS h
        FROM operator_share_prices p GROUP BY p.epoch
    ), states AS (
        SELECT s.epoch, count(*) AS n,
               bit_xor(hash_record_extended(
                   ROW(s.operator_id, s.stake_raw, s.shares_raw, s.storage_fee_raw,
                       s.rewards_raw, s.status, s.nomination_tax), s.epoch)) AS h
        FROM operator_shares s GROUP BY s.epoch
    ), chain AS (
        SELECT c.domain_epoch AS epoch, count(*) AS n,
               bit_xor(hash_record_extended(
                   ROW(c.operator_id, c.domain_id, c.shares_per_stake_perq, c.seen_in_epoch),
                   c.domain_epoch)) AS h
        FROM operator_chain_share_prices c GROUP BY c.domain_epoch
    ), positions AS (
        SELECT p.from_epoch AS epoch, count(*) AS n,
               bit_xor(hash_record_extended(
                   ROW(p.operator_id, p.account, p.known_shares, p.known_storage_fee,
                       p.pending_domain_id, p.pending_epoch, p.pending_amount,
                       p.pending_storage_fee, p.effective_shares, p.deposit_on_hold),
                   p.from_epoch)) AS h
        FROM nominator_positions p GROUP BY p.from_epoch
    ), withdrawals AS (
        SELECT w.from_epoch AS epoch, count(*) AS n,
               bit_xor(hash_record_extended(
                   ROW(w.operator_id, w.account, w.total_amount, w.total_storage_fee,
                       w.in_shares_domain_id, w.in_shares_epoch, w.in_shares_unlock_block,
                       w.in_shares, w.in_shares_storage_fee_refund, w.unlocking),
                   w.from_epoch)) AS h
        FROM nominator_withdrawals w GROUP BY w.from_epoch
    )
    SELECT n.epoch, e.revision,
           format('r2|%s|%s|%s:%s|%s:%s|c%s:%s|p%s|%s|%s|%s:%s|%s:%s',
                  n.revision, n.operator_count,
                  coalesce(p.n, 0), p.h, coalesce(s.n, 0), s.h,
                  coalesce(c.n, 0), c.h,
                  ep.base_revision, ep.head_domain_number, ep.positions, ep.withdrawals,
                  coalesce(np.n, 0), np.h, coalesce(nw.n, 0), nw.h) AS rows_digest
    FROM epoch_normalizations n
    JOIN epochs e ON e.epoch = n.epoch
    LEFT JOIN prices p ON p.epoch = n.epoch
    LEFT JOIN states s ON s.epoch = n.epoch
    LEFT JOIN chain c ON c.epoch = n.epoch
    LEFT JOIN epoch_positions ep ON ep.epoch = n.epoch
    LEFT JOIN positions np ON np.epoch = n.epoch
    LEFT JOIN withdrawals nw ON nw.epoch = n.epoch
"""


@pytest.fixture()
def small(normalized_small_copy: Engine) -> Engine:
    return normalized_small_copy


def _marks(conn: Connection) -> list[int | None]:
    return sorted(
        conn.execute(text("SELECT DISTINCT epoch FROM epoch_rows_changes")).scalars(),
        key=lambda e: -1 if e is None else e,
    )


def _verified(engine: Engine) -> checks.CheckRun:
    run = checks.run_checks(engine, full=True)
    assert checks.save_run(engine, run).saved
    return run


def test_digests_of_any_epochs_are_sql_060s(small):
    with small.connect() as conn:
        old = {int(r.epoch): r.rows_digest for r in conn.execute(text(_SQL_060))}
        every = dict(
            conn.execute(
                text(
                    "SELECT epoch, rows_digest FROM epoch_rows_digests_of(ARRAY(SELECT generate_series(0, 79)))"
                )
            ).all()
        )
        some = dict(
            conn.execute(
                text("SELECT epoch, rows_digest FROM epoch_rows_digests_of(ARRAY[3, 40, 79, 500])")
            ).all()
        )
    assert len(old) == 80 and every == old
    assert some == {e: old[e] for e in (3, 40, 79)}


def test_a_saved_full_run_forgets_the_marks_and_the_next_run_computes_no_digest(small):
    with small.connect() as conn:
        assert len(_marks(conn)) >= 80  # the backfill's own writes marked every epoch
    run = _verified(small)
    assert len(run.verified) == 80
    with small.connect() as conn:
        assert _marks(conn) == []
    again = checks.run_checks(small)
    assert again.scope.epochs == [] and again.settled_marks == []


# One write per statement kind and table: each must mark exactly the epochs it touched, and the
# next incremental run must re-read exactly those.
_WRITES = {
    "update price": (
        "UPDATE operator_share_prices SET share_price_perq = share_price_perq + 1 "
        "WHERE epoch = 30 AND operator_id = (SELECT min(operator_id) FROM operator_share_prices "
        "WHERE epoch = 30)",
        [30],
    ),
    "delete state": (
        "DELETE FROM operator_shares WHERE epoch = 31 AND operator_id = "
        "(SELECT max(operator_id) FROM operator_shares WHERE epoch = 31)",
        [31],
    ),
    "insert state": (
        "INSERT INTO operator_shares (operator_id, epoch, stake_raw, shares_raw, status) "
        "VALUES (999999, 32, 5, 5, 'registered')",
        [32],
    ),
    "update chain price": (
        "UPDATE operator_chain_share_prices SET shares_per_stake_perq = shares_per_stake_perq + 1 "
        "WHERE domain_epoch = 50 AND operator_id = (SELECT min(operator_id) "
        "FROM operator_chain_share_prices WHERE domain_epoch = 50)",
        [50],
    ),
    "update position": (
        "UPDATE nominator_positions SET deposit_on_hold = deposit_on_hold + 1 "
        "WHERE (operator_id, account, from_epoch) = (SELECT operator_id, account, from_epoch "
        "FROM nominator_positions WHERE deposit_on_hold IS NOT NULL AND from_epoch = 60 "
        "ORDER BY operator_id, account LIMIT 1)",
        [60],
    ),
    "delete withdrawal": (
        "DELETE FROM nominator_withdrawals WHERE (operator_id, account, from_epoch) = "
        "(SELECT operator_id, account, from_epoch FROM nominator_withdrawals "
        "ORDER BY from_epoch, operator_id, account LIMIT 1) RETURNING from_epoch",
        None,
    ),
    "update many rows of many epochs": (
        "UPDATE operator_shares SET rewards_raw = coalesce(rewards_raw, 0) + 1 "
        "WHERE epoch BETWEEN 60 AND 69",
        list(range(60, 70)),
    ),
    "move a row out of the normalized epochs": (
        "UPDATE operator_share_prices SET epoch = 80 WHERE epoch = 79 AND operator_id = "
        "(SELECT max(operator_id) FROM operator_share_prices WHERE epoch = 79)",
        [79, 80],
    ),
    "epoch_normalizations": (
        "UPDATE epoch_normalizations SET operator_count = operator_count + 1 WHERE epoch = 12",
        [12],
    ),
    "epoch_positions": (
        "UPDATE epoch_positions SET head_domain_number = head_domain_number + 1 "
        "WHERE epoch = (SELECT max(epoch) FROM epoch_positions)",
        None,
    ),
}


@pytest.mark.parametrize("name", list(_WRITES))
def test_each_kind_of_write_marks_its_epochs_and_they_are_reread(small, name):
    _verified(small)
    statement, expected = _WRITES[name]
    with small.begin() as conn:
        result = conn.execute(text(statement))
        assert result.rowcount >= 1
        if expected is None:  # the statement says which epoch it wrote
            if result.returns_rows:
                expected = [int(result.scalar_one())]
            else:
                expected = [
                    int(conn.execute(text("SELECT max(epoch) FROM epoch_positions")).scalar_one())
                ]
        assert _marks(conn) == expected
    # Epoch 80 is not normalized (the small profile has 0-79): nothing of it to re-read or
    # verify, so its mark stays until a run settles every epoch.
    normalized = [e for e in expected if e < 80]
    run = checks.run_checks(small)
    assert run.scope.mode == "incremental" and run.scope.epochs == normalized
    assert checks.save_run(small, run).saved
    with small.connect() as conn:
        assert _marks(conn) == [e for e in expected if e >= 80]


def test_a_rewrite_of_the_same_rows_is_marked_but_not_reread(small):
    """A re-backfill that writes exactly the rows there were: the marked epochs' digests are
    recomputed, equal their verified digests, and nothing is re-read."""
    _verified(small)
    with small.begin() as conn:
        conn.execute(
            text(
                "UPDATE operator_share_prices SET share_price_perq = share_price_perq "
                "WHERE epoch BETWEEN 20 AND 24"
            )
        )
        assert _marks(conn) == [20, 21, 22, 23, 24]
    run = checks.run_checks(small)
    assert run.scope.epochs == [] and run.settled_marks == [20, 21, 22, 23, 24]
    assert checks.save_run(small, run).saved
    with small.connect() as conn:
        assert _marks(conn) == []


def test_truncate_and_a_fresh_backfill_leave_every_digest_as_it_was(small):
    before = _verified(small)
    with small.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE operator_share_prices, operator_shares, operator_chain_share_prices, "
                "nominator_positions, nominator_withdrawals, epoch_positions, "
                "epoch_normalizations, operators_metadata"
            )
        )
        assert _marks(conn) == [None]  # a TRUNCATE cannot say which epochs: all of them
    summary = backfill.run_backfill(small, backfill.Options(workers=2, batch_size=7))
    assert summary.status == "succeeded" and summary.epochs_done == 80, summary
    # Same rows, written by other batches and workers: every digest is recomputed (the
    # wildcard) and equals its verification, so nothing is re-read.
    run = checks.run_checks(small)
    assert run.scope.epochs == [] and run.settles_everything
    assert sorted(v.epoch for v in before.verified) == list(range(80))
    assert checks.save_run(small, run).saved
    with small.connect() as conn:
        assert _marks(conn) == []


def test_a_write_during_a_run_keeps_its_mark(small):
    """A change committed after the run took its snapshot was not in its digests: saving the
    run must not forget its mark."""
    _verified(small)
    with small.begin() as conn:
        conn.execute(text("UPDATE operator_shares SET rewards_raw = rewards_raw WHERE epoch = 10"))
    run = checks.run_checks(small)  # snapshot: sees the mark of epoch 10 only
    assert run.settled_marks == [10]
    with small.begin() as conn:  # committed after the run's snapshot
        conn.execute(text("UPDATE operator_shares SET rewards_raw = rewards_raw WHERE epoch = 10"))
        conn.execute(text("UPDATE operator_shares SET rewards_raw = rewards_raw WHERE epoch = 11"))
    assert checks.save_run(small, run).saved
    with small.connect() as conn:
        assert _marks(conn) == [10, 11]


def test_marks_of_epochs_a_run_could_not_verify_are_kept(small):
    """A run of some raw checks only records no verification: the changed epoch's mark must
    survive its save, or the next run would take its old verification for current."""
    _verified(small)
    with small.begin() as conn:
        conn.execute(
            text(
                "UPDATE operator_shares SET rewards_raw = coalesce(rewards_raw, 0) + 1 "
                "WHERE epoch = 33"
            )
        )
    partial = checks.run_checks(small, only=["prices_match_raw"])
    assert partial.scope.epochs == [33] and partial.settled_marks == []
    assert checks.save_run(small, partial).saved
    assert checks.run_checks(small).scope.epochs == [33]


def test_a_write_behind_the_triggers_is_caught_by_a_full_run(small):
    _verified(small)
    with small.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))  # no triggers
        planted = conn.execute(
            text(
                "UPDATE operator_share_prices SET share_price_perq = share_price_perq + 1 "
                "WHERE epoch = 44 AND operator_id = (SELECT min(operator_id) "
                "FROM operator_share_prices WHERE epoch = 44) RETURNING operator_id"
            )
        ).scalar_one()
        assert _marks(conn) == []

    # No mark, so an incremental run does not re-read epoch 44 ...
    assert checks.run_checks(small).scope.epochs == []
    # ... a full run does: the digests' own check names the epoch, the raw check the value.
    run = checks.run_checks(small, full=True)
    results = {r.name: r for r in run.results}
    hold = results["verified_digests_hold"]
    assert (hold.status, hold.count) == ("fail", 1)
    assert [e["epoch"] for e in hold.examples] == [44]
    prices = results["prices_match_raw"]
    assert [(e["epoch"], e["operator_id"]) for e in prices.examples] == [(44, planted)]
    assert checks.save_run(small, run).saved
    # Saved, 44 lost its verification (at fault): every later run re-reads it until fixed.
    assert checks.run_checks(small).scope.epochs == [44]


def test_an_incremental_run_does_not_compare_the_digests(small):
    result = checks.run_checks(small, only=["verified_digests_hold"]).results[0]
    assert result.status == "pass" and "not compared in an incremental run" in result.note


def test_many_epochs_take_one_pass_over_every_row_with_the_same_digests(small, monkeypatch):
    from shareprice.checks import changes

    wanted = [2, 5, 11, 40, 41, 42, 79]
    with small.connect() as conn:
        by_list = changes.read(conn)
        by_list.compute_digests(conn, wanted)
        monkeypatch.setattr(changes, "DIGESTS_BY_LIST_MAX", 3)
        one_pass = changes.read(conn)
        one_pass.compute_digests(conn, wanted)
    assert by_list.digests == one_pass.digests and sorted(by_list.digests) == wanted
