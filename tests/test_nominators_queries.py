"""Nominator queries on rows written by sql/042's rule (hole, closing row, a position missing at
a second full-rows epoch), checked against an independent scan of the rule, and on the real
sample once the backfill writes positions (values derived here from the raw JSON)."""

from __future__ import annotations

import time

import pytest
from helpers import nominator_rows as nr

from shareprice import queries
from shareprice.queries import AddressError

PERQ = 10**18


@pytest.fixture()
def scenario(engine):
    nr.load_scenario(engine)
    return engine


# --- addresses -----------------------------------------------------------------------------------


def test_address_forms_resolve_to_one_account():
    a = queries.resolve_address("suftE5YTB8cS3TnDT5mV1CvTvxforaPLudwkLqZH6HrX8nqBp")
    b = queries.resolve_address("  0x" + nr.ALICE.hex().upper() + " ")
    assert a == b and a.account == nr.ALICE
    assert a.ss58 == "suftE5YTB8cS3TnDT5mV1CvTvxforaPLudwkLqZH6HrX8nqBp"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "give an SS58 address"),
        ("0x1234", "64 hex digits"),
        ("0x" + "zz" * 32, "64 hex digits"),
        ("suftE5YTB8cS3TnDT5mV1CvTvxforaPLudwkLqZH6HrX8nqBq", "checksum"),
        ("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", "network 42"),
        ("1;DROP TABLE nominator_positions", "not an account"),
    ],
)
def test_bad_addresses_name_the_parameter_and_reason(text, reason):
    with pytest.raises(AddressError) as caught:
        queries.resolve_address(text)
    message = str(caught.value)
    assert message.startswith("address: ") and reason in message
    assert isinstance(caught.value, queries.RequestError)  # a ShareError: the API's 400


# --- positions at the latest epoch ---------------------------------------------------------------


def test_latest_positions_follow_the_segment_rule(scenario):
    view = queries.nominator_positions(scenario, "0x" + nr.ALICE.hex())
    assert view.known and view.epoch == 20 and view.head_domain_number == nr.HEAD
    by_op = {p.operator_id: p for p in view.positions}
    assert set(by_op) == {0, 1}
    # operator 0: the deposit closed at 19, only the unlocking withdrawal remains
    gone = by_op[0]
    assert gone.effective_shares is None and gone.value is None and gone.deposit_on_hold is None
    (unlocking,) = gone.withdrawals
    assert (unlocking.kind, unlocking.unlock_block, unlocking.amount) == (
        "unlocking",
        nr.UNLOCK_LIST,
        31 * nr.AI3,
    )
    assert unlocking.unlockable is True and unlocking.blocks_left == 0
    # operator 1: gone at the full-rows epoch 15 (no row), back from 18 with a pending deposit
    # of epoch 20 that has not ended yet: still pending, effective 0
    back = by_op[1]
    assert back.since_epoch == 18 and back.pending_epoch == 20 and not back.pending_converted
    assert back.effective_shares == 0 and back.value == 0
    assert back.pending_amount == 5 * nr.AI3 and back.deposit_on_hold == 5 * nr.AI3
    assert back.gain == -5 * nr.AI3
    assert back.storage_fee == nr.AI3 // 10
    assert back.share_price_perq == nr.price(1, 20)


def test_value_share_and_gain_are_exact(scenario):
    view = queries.nominator_positions(scenario, nr.BOB)
    (bob,) = view.positions
    shares, price = 500 * nr.AI3, nr.price(0, 20)
    assert bob.value == shares * price // PERQ
    assert bob.gain == shares * price // PERQ - 490 * nr.AI3
    assert bob.share_of_pool_perq == shares * PERQ // nr.operator_shares(0)
    assert bob.storage_fee == nr.FEE


def test_unknown_account_and_no_positions_data(engine, scenario):
    view = queries.nominator_positions(scenario, bytes(32))
    assert not view.known and view.positions == ()


def test_empty_database_has_no_positions_epoch(engine):
    assert queries.latest_positions_epoch(engine) is None
    view = queries.nominator_positions(engine, nr.ALICE)
    assert view.epoch is None and view.positions == () and not view.known
    assert queries.nominator_history(engine, nr.ALICE).height == 0
    assert queries.operator_holders(engine, 0).count == 0


# --- history -------------------------------------------------------------------------------------


def test_history_equals_the_rule_at_every_epoch(scenario):
    frame = queries.nominator_history(scenario, nr.ALICE)
    got = {(r["operator_id"], r["epoch"]): r for r in frame.iter_rows(named=True)}
    expected = {}
    for op in (0, 1):
        for epoch in nr.EPOCHS:
            state = nr.oracle_state(nr.POSITIONS, op, nr.ALICE, epoch)
            if state is None or state.effective_shares is None:
                continue
            expected[(op, epoch)] = (
                state.effective_shares,
                state.effective_shares * nr.price(op, epoch) // PERQ,
                state.deposit_on_hold,
            )
    assert {
        k: (r["effective_shares"], r["value"], r["deposit_on_hold"]) for k, r in got.items()
    } == (expected)
    # the edge cases, spelled out
    assert (0, nr.HOLE) not in got and (1, nr.HOLE) not in got  # a hole stays a hole
    assert got[(0, 13)]["effective_shares"] == nr.CONVERTED_0  # converted without a raw change
    assert got[(0, 12)]["effective_shares"] == 100 * nr.AI3  # pending of the current epoch
    assert {e for o, e in got if o == 0} == {10, 11, 12, 13, 15, 16, 17, 18}  # closed at 19
    assert {e for o, e in got if o == 1} == {11, 12, 13, 18, 19, 20}  # none at 15 (full rows)
    keys = list(zip(frame["operator_id"], frame["epoch"], strict=True))
    assert keys == sorted(keys)  # by operator, then epoch: what the chart draws


def test_unknown_effective_shares_are_not_drawn(scenario):
    assert queries.nominator_history(scenario, nr.CAROL).height == 0
    holders = queries.operator_holders(scenario, 0)
    carol = holders.rows.filter(holders.rows["account"] == "0x" + nr.CAROL.hex())
    assert carol["effective_shares"].to_list() == [None] and carol["value"].to_list() == [None]


def test_events_mark_deposits_withdrawals_and_closing(scenario):
    events = queries.nominator_events(scenario, nr.ALICE)
    got = sorted((r["operator_id"], r["epoch"], r["kind"]) for r in events.iter_rows(named=True))
    assert got == [
        (0, 12, "deposit"),  # a pending deposit appeared
        (0, 17, "withdrawal"),  # effective shares down ...
        (0, 17, "withdrawal"),  # ... and a withdrawal in shares appeared
        (0, 19, "withdrawal"),  # the deposit closed (closing row) ...
        (0, 19, "withdrawal"),  # ... and its stake is unlocking
        (1, 11, "deposit"),  # opened (not at a full-rows epoch)
        (1, 15, "withdrawal"),  # no row at the full-rows epoch 15: gone there
        (1, 18, "deposit"),  # back
    ]
    # not events: first seen at a full-rows epoch (10), restated (15), converted (13)
    assert queries.nominator_events(scenario, nr.BOB).height == 0


# --- per operator --------------------------------------------------------------------------------


def test_counts_over_epochs(scenario):
    counts = dict(queries.nominator_counts(scenario, 0).iter_rows())
    expected = {}
    for epoch in nr.EPOCHS:
        if epoch == nr.HOLE:
            continue
        expected[epoch] = sum(
            nr.oracle_state(nr.POSITIONS, 0, who, epoch) is not None
            for who in (nr.ALICE, nr.BOB, nr.CAROL)
        )
    assert counts == expected
    assert counts[18] == 3 and counts[19] == 2 and nr.HOLE not in counts
    ones = dict(queries.nominator_counts(scenario, 1).iter_rows())
    assert ones == {11: 1, 12: 1, 13: 1, 15: 0, 16: 0, 17: 0, 18: 1, 19: 1, 20: 1}


def test_holders_and_concentration(scenario):
    holders = queries.operator_holders(scenario, 0, limit=1)
    assert holders.epoch == 20 and holders.count == 2  # BOB and CAROL; ALICE closed at 19
    assert holders.rows.height == 1
    top = holders.rows.row(0, named=True)
    assert top["ss58"] == queries.resolve_address("0x" + nr.BOB.hex()).ss58
    assert top["value"] == 500 * nr.AI3 * nr.price(0, 20) // PERQ
    assert holders.total_effective_shares == 500 * nr.AI3  # CAROL's are unknown
    assert holders.top_share_perq == PERQ
    with pytest.raises(queries.RequestError, match="limit"):
        queries.operator_holders(scenario, 0, limit=0)


def test_history_statement_is_fast_and_uses_the_account_index(scenario):
    from shareprice.queries.connection import connect
    from shareprice.queries.nominators import history_plan

    plan = history_plan(nr.ALICE)
    with connect(scenario) as conn:
        text = plan.query.as_string(conn)
        lines = [r[0] for r in conn.execute("EXPLAIN " + text, plan.params).fetchall()]
    assert any("nominator_positions_account" in line for line in lines), lines
    started = time.perf_counter()
    queries.nominator_history(scenario, nr.ALICE)
    assert time.perf_counter() - started < 1.0


# --- the real sample (backfilled by `shareprice backfill`) -------------------------------------

EXAMPLE_ACCOUNT = "d4e54c36839df60aa2ea9c75144714d0f5c9a4a59124419a6f8d4432b3c29e0b"
EXAMPLE_SS58 = "suftE5YTB8cS3TnDT5mV1CvTvxforaPLudwkLqZH6HrX8nqBp"


def _u128(value) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _sample_expected(doc: dict) -> dict:
    """The example position on operator 0, decoded here from the raw JSON by DOMAIN.md's rules:
    keys = 0x + pallet (32 hex) + item (32 hex) + operator u64 LE + account; P = the chain's
    shares-per-stake of the pending epoch; our price = floor(stake * 10**18 / shares)."""
    import json

    chain = {}
    for entry in doc["operatorEpochSharePrice"]["entries"]:
        key, value = entry["value"].split(",", 1)
        rest = bytes.fromhex(key[66:])
        op, domain, epoch = (
            int.from_bytes(rest[:8], "little"),
            int.from_bytes(rest[8:12], "little"),
            int.from_bytes(rest[12:16], "little"),
        )
        chain[(op, domain, epoch)] = int(value)
    for entry in doc["deposits"]["entries"]:
        key, value = entry["value"].split(",", 1)
        if key[82:] == EXAMPLE_ACCOUNT and int.from_bytes(bytes.fromhex(key[66:82]), "little") == 0:
            deposit = json.loads(value)
    for entry in doc["depositOnHold"]["entries"]:
        key, value = entry["value"].split(",", 1)
        if key[82:] == EXAMPLE_ACCOUNT and int.from_bytes(bytes.fromhex(key[66:82]), "little") == 0:
            hold = int(value)
    for entry in doc["operators"]["entries"]:
        key, value = entry["value"].split(",", 1)
        if int.from_bytes(bytes.fromhex(key[66:82]), "little") == 0:
            state = json.loads(value)
    domain, epoch = deposit["pending"]["effectiveDomainEpoch"]
    assert epoch < doc["epoch"]  # the pending epoch has ended: converted
    effective = _u128(deposit["known"]["shares"]) + (
        chain[(0, domain, epoch)] * _u128(deposit["pending"]["amount"]) // PERQ
    )
    shares = _u128(state["currentTotalShares"])
    price = _u128(state["currentTotalStake"]) * PERQ // shares
    return {
        "effective": effective,
        "value": effective * price // PERQ,
        "hold": hold,
        "pool": shares,
        "deposits_on_0": sum(
            1
            for e in doc["deposits"]["entries"]
            if int.from_bytes(bytes.fromhex(e["value"][66:82]), "little") == 0
        ),
    }


@pytest.fixture(scope="module")
def sample_db(pg_admin_url, template_url, shared_data):
    import sqlalchemy as sa
    from helpers.database import TEMPLATE_DB, drop_database, new_database

    from shareprice import backfill
    from shareprice.ingest.importer import import_paths
    from shareprice.store import db

    url = new_database(pg_admin_url, TEMPLATE_DB)
    engine = sa.create_engine(url)
    try:
        import_paths(engine, [shared_data / "storage-dump-epoch-2647.json"])
        summary = backfill.run_backfill(engine, backfill.Options(workers=1))
        assert summary.ok and summary.epochs_failed == 0, summary
    finally:
        engine.dispose()
    yield db.get_engine(url)
    drop_database(pg_admin_url, url)


def test_real_sample_example_position(sample_db, shared_data):
    import orjson

    doc = orjson.loads((shared_data / "storage-dump-epoch-2647.json").read_bytes())[0]
    expected = _sample_expected(doc)
    # the numbers, now derived (not copied) from the raw document
    assert expected["effective"] == 159994190344594879058715
    assert expected["value"] == 160000006721626145636875
    view = queries.nominator_positions(sample_db, EXAMPLE_SS58)
    assert view.epoch == doc["epoch"] and view.account.hex == "0x" + EXAMPLE_ACCOUNT
    on_0 = next(p for p in view.positions if p.operator_id == 0)
    assert on_0.effective_shares == expected["effective"]
    assert on_0.value == expected["value"]
    assert on_0.deposit_on_hold == expected["hold"]
    assert on_0.gain == expected["value"] - expected["hold"]
    assert on_0.share_of_pool_perq == expected["effective"] * PERQ // expected["pool"]
    assert on_0.pending_converted
    history = queries.nominator_history(sample_db, bytes.fromhex(EXAMPLE_ACCOUNT))
    row = history.filter(history["operator_id"] == 0).row(0, named=True)
    assert (row["epoch"], row["value"]) == (doc["epoch"], expected["value"])
    holders = queries.operator_holders(sample_db, 0, limit=None)
    assert holders.count == expected["deposits_on_0"] == holders.rows.height


def test_real_sample_head_block_and_withdrawal_etas(sample_db, shared_data):
    import orjson

    doc = orjson.loads((shared_data / "storage-dump-epoch-2647.json").read_bytes())[0]
    head = int(str(doc["headDomainNumber"]).replace(",", ""))
    latest = queries.latest_positions_epoch(sample_db)
    assert latest is not None and latest.head_domain_number == head
    entry = doc["withdrawals"]["entries"][0]["value"]
    key, payload = entry.split(",", 1)
    account = bytes.fromhex(key[82:])
    operator_id = int.from_bytes(bytes.fromhex(key[66:82]), "little")
    unlock = orjson.loads(payload)["withdrawalInShares"]["unlockAtConfirmedDomainBlockNumber"]
    view = queries.nominator_positions(sample_db, account)
    (w,) = [w for p in view.positions if p.operator_id == operator_id for w in p.withdrawals][:1]
    assert w.unlock_block == unlock and w.unlockable == (unlock <= head)
    assert w.blocks_left == max(0, unlock - head)
    assert w.eta_epochs == -(-max(0, unlock - head) // 100)
