"""The digests incremental checks rely on (sql/080): kept by triggers as rows are written, equal
to the digest recomputed from the rows after every kind of write, still the digest text epochs
were verified with before sql/080, and a write that bypasses the triggers is caught by the
`rows_digests_maintained` check and repaired by `epoch_rows_digest_rebuild()`."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from shareprice import backfill, checks

# Epochs whose maintained digest differs from the one recomputed from their rows.
_DIFFERING = """
SELECT coalesce(m.epoch, r.epoch) FROM epoch_rows_digests() m
FULL JOIN epoch_rows_digests_recomputed() r ON r.epoch = m.epoch
WHERE m.rows_digest IS DISTINCT FROM r.rows_digest ORDER BY 1
"""

# sql/060's epoch_rows_digests() body, verbatim but for the function wrapper: what every epoch
# verified before sql/080 recorded. sql/080 must give the same text, or each upgrade would make
# the next incremental run re-read everything (and the digest would have changed meaning).
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


def _differing(conn: Connection) -> list[int]:
    return list(conn.execute(text(_DIFFERING)).scalars())


def _digests(conn: Connection) -> dict[int, str]:
    return {int(r[0]): r[2] for r in conn.execute(text("SELECT * FROM epoch_rows_digests()"))}


def _maintained_check(engine: Engine) -> checks.CheckResult:
    run = checks.run_checks(engine, only=["rows_digests_maintained"], full=True)
    (result,) = run.results
    return result


def test_a_backfill_leaves_every_digest_equal_to_sql_060s(small):
    with small.connect() as conn:
        old = {int(r.epoch): r.rows_digest for r in conn.execute(text(_SQL_060))}
        maintained = _digests(conn)
        deltas = conn.execute(text("SELECT count(*) FROM epoch_rows_digest_deltas")).scalar_one()
    assert len(old) == 80 and maintained == old
    assert deltas > 0  # kept by the backfill's own writes, not computed at migration time
    result = _maintained_check(small)
    assert (result.status, result.count) == ("pass", 0)
    assert "80 epochs' digests recomputed" in result.note


# One write per statement kind and table: each must move the maintained digest exactly as the
# recomputed one moves.
_WRITES = {
    "update price": (
        "UPDATE operator_share_prices SET share_price_perq = share_price_perq + 1 "
        "WHERE epoch = 30 AND operator_id = (SELECT min(operator_id) FROM operator_share_prices "
        "WHERE epoch = 30)"
    ),
    "delete state": (
        "DELETE FROM operator_shares WHERE epoch = 31 AND operator_id = "
        "(SELECT max(operator_id) FROM operator_shares WHERE epoch = 31)"
    ),
    "insert state": (
        "INSERT INTO operator_shares (operator_id, epoch, stake_raw, shares_raw, status) "
        "VALUES (999999, 32, 5, 5, 'registered')"
    ),
    "update chain price": (
        "UPDATE operator_chain_share_prices SET shares_per_stake_perq = shares_per_stake_perq + 1 "
        "WHERE (operator_id, domain_id, domain_epoch) = (SELECT operator_id, domain_id, "
        "domain_epoch FROM operator_chain_share_prices ORDER BY domain_epoch DESC LIMIT 1)"
    ),
    "update position": (
        "UPDATE nominator_positions SET deposit_on_hold = deposit_on_hold + 1 "
        "WHERE (operator_id, account, from_epoch) = (SELECT operator_id, account, from_epoch "
        "FROM nominator_positions WHERE deposit_on_hold IS NOT NULL "
        "ORDER BY from_epoch DESC, operator_id, account LIMIT 1)"
    ),
    "delete withdrawal": (
        "DELETE FROM nominator_withdrawals WHERE (operator_id, account, from_epoch) = "
        "(SELECT operator_id, account, from_epoch FROM nominator_withdrawals "
        "ORDER BY from_epoch, operator_id, account LIMIT 1)"
    ),
    "update many rows of many epochs": (
        "UPDATE operator_shares SET rewards_raw = coalesce(rewards_raw, 0) + 1 "
        "WHERE epoch BETWEEN 60 AND 69"
    ),
}


@pytest.mark.parametrize("name", list(_WRITES))
def test_each_kind_of_write_keeps_the_digests(small, name):
    with small.connect() as conn:
        before = _digests(conn)
    with small.begin() as conn:
        assert conn.execute(text(_WRITES[name])).rowcount >= 1
    with small.connect() as conn:
        after = _digests(conn)
        assert _differing(conn) == []
    assert after != before  # the write moved a digest, and the trigger moved it alike


def test_truncate_and_a_fresh_backfill_keep_the_digests(small):
    with small.connect() as conn:
        before = _digests(conn)
    with small.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE operator_share_prices, operator_shares, operator_chain_share_prices, "
                "nominator_positions, nominator_withdrawals, epoch_positions, "
                "epoch_normalizations, operators_metadata"
            )
        )
        left = conn.execute(text("SELECT count(*) FROM epoch_rows_digest_deltas")).scalar_one()
    assert left == 0
    summary = backfill.run_backfill(small, backfill.Options(workers=2, batch_size=7))
    assert summary.status == "succeeded" and summary.epochs_done == 80, summary
    with small.connect() as conn:
        assert _differing(conn) == []
        # Same rows as before, written by other batches and workers: the same digests.
        assert _digests(conn) == before


def test_a_write_behind_the_triggers_is_caught_and_repaired(small):
    # Verified first: the epoch's digest is recorded as what its checks found correct.
    run = checks.run_checks(small, full=True)
    assert checks.save_run(small, run).saved
    with small.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))  # no triggers
        planted = conn.execute(
            text(
                "UPDATE operator_share_prices SET share_price_perq = share_price_perq + 1 "
                "WHERE epoch = 44 AND operator_id = (SELECT min(operator_id) "
                "FROM operator_share_prices WHERE epoch = 44) RETURNING operator_id"
            )
        ).scalar_one()
    with small.connect() as conn:
        assert _differing(conn) == [44]

    # The digest did not move, so an incremental run does not re-read epoch 44 ...
    assert checks.run_checks(small).scope.epochs == []
    # ... but the check of the digests themselves, in every full run, names it.
    result = _maintained_check(small)
    assert (result.status, result.count) == ("fail", 1)
    assert [e["epoch"] for e in result.examples] == [44]
    assert "epoch_rows_digest_rebuild()" in result.note

    with small.begin() as conn:
        conn.execute(text("SELECT epoch_rows_digest_rebuild()"))
    with small.connect() as conn:
        assert _differing(conn) == []
    assert _maintained_check(small).status == "pass"
    # The rebuilt digest no longer matches the verification: the next run re-reads 44 and
    # finds the planted price.
    run = checks.run_checks(small)
    assert run.scope.epochs == [44]
    prices = next(r for r in run.results if r.name == "prices_match_raw")
    assert prices.status == "fail"
    assert [(e["epoch"], e["operator_id"]) for e in prices.examples] == [(44, planted)]


def test_an_incremental_run_does_not_recompute_the_digests(small):
    result = checks.run_checks(small, only=["rows_digests_maintained"]).results[0]
    assert result.status == "pass" and "not compared in an incremental run" in result.note
