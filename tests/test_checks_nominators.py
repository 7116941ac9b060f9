"""The nominator checks on the real epoch-2647 sample: every check passes on the backfilled
sample, and each fails on a fault planted by hand in the positions tables (and an incremental
run after a verification still catches a fault planted later).

Expectations come from the raw JSON, decoded here with json, int(x, 16) and string slicing
(independently of shareprice.chain): the per-operator rounding differences (19 and 15 on the
sample) decide the boundary the shares-sum check must hold exactly.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from shareprice import backfill, checks

PALLET = "0b41d0c7f7b4485bd7be1d66066b00ad"
DEPOSITS = "74a614db8021c6bd0a028aafdf29dd08"
CHAIN = "f16a4d4929cfe61f4f6bf4153bb44d9d"
OPERATORS = "34a0a3fbf14e6c92456ca7bd91d59a57"
NOMINATOR_CHECKS = [n for n in checks.check_names() if n.startswith("nominator_")]


def _u(value) -> int:
    return value if isinstance(value, int) else int(value, 16)


def _op(value: str) -> int:
    return int.from_bytes(bytes.fromhex(value[66:82]), "little")


def raw_expectations(doc: dict) -> dict[int, tuple[int, int]]:
    """operator id -> (total shares - sum of effective shares, number of deposits), from the
    raw JSON alone."""
    epoch = doc["epoch"]
    chain = {}
    for e in doc["operatorEpochSharePrice"]["entries"]:
        key, payload = e["value"].split(",", 1)
        assert key[2:66] == PALLET + CHAIN
        chain[(_op(key), int.from_bytes(bytes.fromhex(key[90:98]), "little"))] = int(payload)
    shares = {}
    for e in doc["operators"]["entries"]:
        key, payload = e["value"].split(",", 1)
        if key[2:66] == PALLET + OPERATORS:
            shares[_op(key)] = _u(json.loads(payload)["currentTotalShares"])
    effective: Counter[int] = Counter()
    deposits: Counter[int] = Counter()
    for e in doc["deposits"]["entries"]:
        key, payload = e["value"].split(",", 1)
        assert key[2:66] == PALLET + DEPOSITS
        d = json.loads(payload)
        op, eff = _op(key), _u(d["known"]["shares"])
        pending = d["pending"]
        if pending is not None and pending["effectiveDomainEpoch"][1] < epoch:
            price = chain[(op, pending["effectiveDomainEpoch"][1])]
            eff += price * _u(pending["amount"]) // 10**18
        effective[op] += eff
        deposits[op] += 1
    return {op: (shares[op] - effective[op], deposits[op]) for op in shares}


@pytest.fixture()
def sample(engine: Engine, shared_data) -> Engine:
    """The real dump as epoch 2647 and, unchanged but for its number, as epoch 2648 (positions
    carried over by a change-rows epoch with no rows), backfilled by the real backfill."""
    doc = json.loads((shared_data / "storage-dump-epoch-2647.json").read_text())[0]
    successor = dict(doc, epoch=2648)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO epochs (epoch, data) VALUES (:e, CAST(:d AS jsonb))"),
            [{"e": 2647, "d": json.dumps(doc)}, {"e": 2648, "d": json.dumps(successor)}],
        )
    summary = backfill.run_backfill(engine, backfill.Options(workers=1))
    assert summary.status == "succeeded" and summary.epochs_failed == 0, summary
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT epoch, base_revision IS NULL FROM epoch_positions ORDER BY epoch")
        ).all()
    assert [tuple(r) for r in rows] == [(2647, True), (2648, False)]
    return engine


def _sample_doc(shared_data) -> dict:
    return json.loads((shared_data / "storage-dump-epoch-2647.json").read_text())[0]


def _results(run: checks.CheckRun) -> dict[str, checks.CheckResult]:
    return {r.name: r for r in run.results}


def _exec(engine: Engine, sql: str, **params) -> None:
    with engine.begin() as conn:
        result = conn.execute(text(sql), params)
        assert result.rowcount == 1, sql


def test_raw_sample_rounding_differences_are_those_of_domain_md(shared_data):
    assert raw_expectations(_sample_doc(shared_data)) == {0: (19, 105), 1: (15, 72)}


def test_real_sample_passes_every_check(sample):
    run = checks.run_checks(sample, full=True)
    results = _results(run)
    assert run.status == "pass", checks.format_table(run)
    for name in NOMINATOR_CHECKS:
        assert results[name].status == "pass", results[name]
    assert "2 epoch(s) with positions judged" in results["nominator_shares_sum"].note
    assert "2 epoch(s) with positions compared" in results["nominator_positions_match_raw"].note


# A deposit of operator 0 whose pending deposit has converted, and one with no pending part.
_CONVERTED = (
    "SELECT encode(account, 'hex') FROM nominator_positions WHERE from_epoch = 2647 "
    "AND operator_id = 0 AND pending_epoch IS NOT NULL ORDER BY account LIMIT 1"
)


def _converted_account(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(text(_CONVERTED)).scalar_one()


def _bump(engine: Engine, column: str, by: int, account: str) -> None:
    _exec(
        engine,
        f"UPDATE nominator_positions SET {column} = {column} + :by "  # noqa: S608
        "WHERE operator_id = 0 AND from_epoch = 2647 AND account = decode(:a, 'hex')",
        by=by,
        a=account,
    )


def test_shares_sum_holds_its_bound_exactly(sample, shared_data):
    """Raising one position by the sample's rounding difference leaves the sum at the bound
    (total shares - sum = 0): passes; one share more is over the total: fails."""
    difference, _ = raw_expectations(_sample_doc(shared_data))[0]
    account = _converted_account(sample)
    _bump(sample, "effective_shares", difference, account)
    assert _results(checks.run_checks(sample, full=True))["nominator_shares_sum"].status == "pass"
    _bump(sample, "effective_shares", 1, account)
    result = _results(checks.run_checks(sample, full=True))["nominator_shares_sum"]
    assert result.status == "fail" and result.count == 2  # epochs 2647 and 2648
    assert {e["epoch"] for e in result.examples} == {2647, 2648}
    assert result.examples[0]["difference"] == "-1"


def _fault_effective_shares(engine: Engine) -> None:
    _bump(engine, "effective_shares", 10**20, _converted_account(engine))


def _fault_storage_fee(engine: Engine) -> None:
    _bump(engine, "known_storage_fee", 1, _converted_account(engine))


def _fault_hold_dropped(engine: Engine) -> None:
    _exec(
        engine,
        "UPDATE nominator_positions SET deposit_on_hold = NULL WHERE operator_id = 0 "
        "AND from_epoch = 2647 AND account = decode(:a, 'hex')",
        a=_converted_account(engine),
    )


def _fault_stray_withdrawal(engine: Engine) -> None:
    _exec(
        engine,
        "INSERT INTO nominator_withdrawals (operator_id, account, from_epoch, total_amount, "
        "total_storage_fee, unlocking) VALUES (1, decode(repeat('ab', 32), 'hex'), 2647, 5, 0, "
        "'[]'::jsonb)",
    )


def _fault_chain_price_gone(engine: Engine) -> None:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT pending_domain_id AS d, pending_epoch AS e FROM nominator_positions "
                "WHERE from_epoch = 2647 AND operator_id = 0 AND account = decode(:a, 'hex')"
            ),
            {"a": _converted_account(engine)},
        ).one()
    _exec(
        engine,
        "DELETE FROM operator_chain_share_prices WHERE operator_id = 0 AND domain_id = :d "
        "AND domain_epoch = :e",
        d=row.d,
        e=row.e,
    )


def _fault_hold_inflated(engine: Engine) -> None:
    _bump(engine, "deposit_on_hold", 10**24, _converted_account(engine))


def _fault_head_block(engine: Engine) -> None:
    _exec(
        engine,
        "UPDATE epoch_positions SET head_domain_number = head_domain_number + 1 WHERE epoch = 2648",
    )


FAULTS = [
    (
        _fault_effective_shares,
        {
            "nominator_shares_sum",
            "nominator_value_bound",
            "nominator_pending_prices",
            "nominator_positions_match_raw",
        },
    ),
    (_fault_storage_fee, {"nominator_storage_fees", "nominator_positions_match_raw"}),
    (_fault_hold_dropped, {"nominator_key_sets", "nominator_positions_match_raw"}),
    (_fault_stray_withdrawal, {"nominator_key_sets", "nominator_positions_match_raw"}),
    (_fault_chain_price_gone, {"nominator_pending_prices"}),
    (_fault_hold_inflated, {"nominator_gain", "nominator_positions_match_raw"}),
    (_fault_head_block, {"nominator_positions_match_raw"}),
]


def test_every_nominator_check_has_a_planted_fault():
    assert set().union(*(expected for _, expected in FAULTS)) == set(NOMINATOR_CHECKS)


@pytest.mark.parametrize(("fault", "expected"), FAULTS, ids=lambda v: getattr(v, "__name__", ""))
def test_planted_fault_fails_its_checks(sample, fault, expected):
    fault(sample)
    run = checks.run_checks(sample, full=True)
    results = _results(run)
    for name in expected:
        assert results[name].status == "fail", (name, checks.format_table(run))
        assert results[name].count > 0 and results[name].examples, results[name]
    assert run.failed


def test_fault_planted_after_verification_fails_every_later_incremental_run(sample):
    first = checks.run_checks(sample, full=True)
    assert first.status == "pass"
    assert checks.save_run(sample, first).saved and len(first.verified) == 2
    quiet = checks.run_checks(sample)
    assert quiet.scope.epochs == [] and quiet.status == "pass"

    _fault_effective_shares(sample)
    for _ in range(2):  # the fault stays visible until it is fixed
        run = checks.run_checks(sample)
        assert run.scope.mode == "incremental" and run.scope.epochs == [2647]
        results = _results(run)
        assert results["nominator_shares_sum"].status == "fail"
        assert results["nominator_positions_match_raw"].status == "fail"
        assert {e["epoch"] for e in results["nominator_shares_sum"].examples} == {2647, 2648}
        assert 2647 not in {v.epoch for v in run.verified}
        assert checks.save_run(sample, run).saved


def test_generated_history_walk_and_incremental_jump(normalized_small_copy):
    """On the generated 80-epoch history (change rows in many epochs), a full run passes; a
    fault planted in a change row of a middle epoch is caught by the next incremental run,
    which reaches that epoch by one jump from the segment start (latest row per position)."""
    engine = normalized_small_copy
    first = checks.run_checks(engine, full=True)
    results = _results(first)
    assert all(results[n].status == "pass" for n in NOMINATOR_CHECKS), checks.format_table(first)
    assert checks.save_run(engine, first).saved
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT operator_id, account, from_epoch FROM nominator_positions "
                "WHERE from_epoch BETWEEN 30 AND 60 AND effective_shares > 0 "
                "AND from_epoch > (SELECT min(epoch) FROM epoch_positions) "
                "ORDER BY from_epoch, operator_id, account LIMIT 1"
            )
        ).one()
    _exec(
        engine,
        "UPDATE nominator_positions SET effective_shares = effective_shares + 10 ^ 20 "
        "WHERE operator_id = :o AND account = :a AND from_epoch = :e",
        o=row.operator_id,
        a=row.account,
        e=row.from_epoch,
    )
    run = checks.run_checks(engine)
    assert run.scope.epochs == [row.from_epoch]
    results = _results(run)
    assert results["nominator_shares_sum"].status == "fail"
    assert results["nominator_shares_sum"].examples[0]["epoch"] == row.from_epoch
    assert results["nominator_positions_match_raw"].status == "fail"
    assert results["nominator_positions_match_raw"].examples[0]["epoch"] == row.from_epoch


def _item_states(row, x, memo):
    """(head, states, withdrawals) of one epoch decoded from its item texts alone, as
    nominator_positions_match_raw's first epoch of a chunk is (no epoch before it)."""
    from shareprice.checks import nominator_checks as nc

    raw = nc._RawPositions()
    head = raw.advance(row, x, memo, from_previous=False)[0]
    return head, dict(raw.states), dict(raw.withdrawals)


def test_item_states_equal_the_parsers_on_the_real_sample(sample, shared_data):
    """nominator_positions_match_raw decodes item texts (each distinct text once per chunk);
    on the real dump it yields exactly what parse_positions via _raw_states yields."""
    from shareprice.checks import nominator_checks as nc

    doc = _sample_doc(shared_data)
    _, want_positions, want_withdrawals = nc._raw_states(doc, 2647)
    with sample.connect() as conn:
        (row,) = nc.position_items(conn, [2647])
    memo = nc._Decoded()
    for _ in range(2):  # the second time every text comes from the memo
        head, positions, withdrawals = _item_states(row, 2647, memo)
        assert positions == want_positions and withdrawals == want_withdrawals
        assert head == int(doc["headDomainNumber"])
    assert len(want_positions) > 100 and want_withdrawals
    # The chain's entries in another order (a dump need not list them sorted) change nothing:
    # each value is decoded on its own, never matched to the parser's rows by position.
    import types

    shuffled = types.SimpleNamespace(**{**row._asdict(), "chain": list(reversed(row.chain))})
    assert _item_states(shuffled, 2647, nc._Decoded())[1] == want_positions
    converted = [p for p in want_positions.values() if p[3] is not None and p[3] < 2647]
    assert converted and all(p[6] is not None for p in converted)


def test_undecodable_raw_entry_goes_to_the_parser_and_fails(sample):
    """A deposit entry that does not decode sends the epoch down the whole-document path:
    the check fails with the parser's own reason, naming the entry."""
    with sample.begin() as conn:
        conn.execute(
            text(
                "UPDATE epochs SET data = jsonb_set(data, '{deposits,entries,0,value}', "
                "to_jsonb(left(data #>> '{deposits,entries,0,value}', 150) || ',{\"known\": 1}')) "
                "WHERE epoch = 2648"
            )
        )
    run = checks.run_checks(sample, full=True, only=["nominator_positions_match_raw"])
    result = run.results[0]
    assert result.status == "fail", checks.format_table(run)
    problems = [e["problem"] for e in result.examples if e["epoch"] == 2648]
    assert any("do not parse" in p and "deposits.entries[0]" in p for p in problems), problems
