"""Nominator positions decoded from the real epoch-2647 dump, checked against the raw JSON.

Every expected number is computed here from the raw JSON with plain int(x, 16) and string
slicing, independently of shareprice.chain; the facts the issue states about the sample (177
deposits, 105 and 72 per operator, rounding differences of 19 and 15, the example account's
address and value) then hold for those computations too.
"""

from __future__ import annotations

import json

import pytest
from helpers.requirements import require_shared_data

from shareprice.chain import nominators, parser, ss58
from shareprice.chain.parser import ParseError

PREFIX_LEN = 2 + 32 + 32
EXAMPLE = "suftE5YTB8cS3TnDT5mV1CvTvxforaPLudwkLqZH6HrX8nqBp"


@pytest.fixture(scope="module")
def dump() -> dict:
    return json.loads((require_shared_data() / "storage-dump-epoch-2647.json").read_text())[0]


def _amount(raw) -> int:
    return int(raw, 16) if isinstance(raw, str) else raw


def _raw_deposits(dump: dict) -> list[tuple[int, str, dict]]:
    out = []
    for entry in dump["deposits"]["entries"]:
        key, payload = entry["value"].split(",", 1)
        operator = int.from_bytes(bytes.fromhex(key[PREFIX_LEN : PREFIX_LEN + 16]), "little")
        out.append((operator, key[PREFIX_LEN + 16 :], json.loads(payload)))
    return out


def _raw_chain_prices(dump: dict) -> dict[tuple[int, int], int]:
    prices = {}
    for entry in dump["operatorEpochSharePrice"]["entries"]:
        key, price = entry["value"].split(",", 1)
        raw = bytes.fromhex(key[PREFIX_LEN:])
        prices[(int.from_bytes(raw[:8], "little"), int.from_bytes(raw[12:16], "little"))] = int(
            price
        )
    return prices


def _raw_effective(dump: dict) -> dict[tuple[int, str], int]:
    prices = _raw_chain_prices(dump)
    effective = {}
    for operator, account, obj in _raw_deposits(dump):
        shares = _amount(obj["known"]["shares"])
        pending = obj["pending"]
        if pending and pending["effectiveDomainEpoch"][1] < dump["epoch"]:
            price = prices[(operator, pending["effectiveDomainEpoch"][1])]
            shares += price * _amount(pending["amount"]) // 10**18
        effective[(operator, account)] = shares
    return effective


def test_items_decode_with_their_counts(dump):
    positions = nominators.parse_positions(dump, dump["epoch"])
    raw = _raw_deposits(dump)
    assert len(positions.deposits) == len(raw) == 177
    per_operator = {op: sum(1 for o, _, _ in raw if o == op) for op in (0, 1)}
    assert per_operator == {0: 105, 1: 72}
    assert len(positions.withdrawals) == dump["withdrawals"]["count"] == 25
    assert len(positions.holds) == dump["depositOnHold"]["count"] == 177
    assert positions.head_domain_number == int(dump["headDomainNumber"])
    zero_known = sum(1 for d in positions.deposits if d.known_shares == 0)
    assert zero_known == sum(1 for _, _, o in raw if _amount(o["known"]["shares"]) == 0) == 138


def test_key_sets_hold_equals_deposits_and_withdrawals_are_a_subset(dump):
    positions = nominators.parse_positions(dump, dump["epoch"])
    deposit_keys = {(d.operator_id, d.account) for d in positions.deposits}
    assert {(h.operator_id, h.account) for h in positions.holds} == deposit_keys
    assert {(w.operator_id, w.account) for w in positions.withdrawals} <= deposit_keys


def test_effective_shares_and_the_rounding_against_total_shares(dump):
    epoch = dump["epoch"]
    positions = nominators.parse_positions(dump, epoch)
    record = parser.parse_document(dump)
    prices = {(c.operator_id, c.domain_epoch): c.shares_per_stake_perq for c in record.chain_prices}
    expected = _raw_effective(dump)
    got = {
        (d.operator_id, d.account.hex()): nominators.effective_shares(d, prices, epoch)
        for d in positions.deposits
    }
    assert got == expected
    for operator, difference in ((0, 19), (1, 15)):
        total = next(o.shares for o in record.operators if o.operator_id == operator)
        held = sum(v for (op, _), v in expected.items() if op == operator)
        count = sum(1 for op, _ in expected if op == operator)
        assert total - held == difference and 0 <= difference <= count


def test_storage_fees_sum_exactly_to_the_operators_totals(dump):
    positions = nominators.parse_positions(dump, dump["epoch"])
    for entry in dump["operators"]["entries"]:
        key, payload = entry["value"].split(",", 1)
        operator = int.from_bytes(bytes.fromhex(key[PREFIX_LEN:]), "little")
        total = _amount(json.loads(payload)["totalStorageFeeDeposit"])
        fees = sum(d.storage_fee_deposit for d in positions.deposits if d.operator_id == operator)
        assert fees == total


def test_ss58_round_trips_and_names_the_example_account(dump):
    owner = dump["domainRegistry"]["ownerAccountId"]
    assert ss58.encode(ss58.decode(owner)) == owner
    account = bytes.fromhex(next(a for _, a, _ in _raw_deposits(dump) if a.startswith("d4e54c36")))
    assert account.hex().endswith("9e0b")
    assert ss58.encode(account) == EXAMPLE
    assert ss58.parse_account(EXAMPLE) == account == ss58.parse_account("0x" + account.hex())


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (EXAMPLE[:-1] + ("q" if EXAMPLE[-1] != "q" else "r"), "checksum"),
        (
            "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY",
            "network 42, not 6094",
        ),  # generic Substrate
        ("su0OIl", "base58"),
        ("0x1234", "64 hex digits"),
        ("", "not an SS58 address"),
    ],
)
def test_bad_addresses_are_refused_with_a_reason(text, reason):
    with pytest.raises(ValueError, match=reason):
        ss58.parse_account(text)


def test_the_example_positions_value(dump):
    epoch = dump["epoch"]
    positions = nominators.parse_positions(dump, epoch)
    record = parser.parse_document(dump)
    prices = {(c.operator_id, c.domain_epoch): c.shares_per_stake_perq for c in record.chain_prices}
    account = ss58.decode(EXAMPLE)
    deposit = next(d for d in positions.deposits if d.account == account and d.operator_id == 0)
    shares = nominators.effective_shares(deposit, prices, epoch)
    assert shares == _raw_effective(dump)[(0, account.hex())]
    price = next(o.share_price_perq for o in record.operators if o.operator_id == 0)
    value = nominators.position_value(shares, price)
    assert value == shares * price // 10**18
    assert (shares, value) == (159994190344594879058715, 160000006721626145636875)


def test_a_pending_deposit_of_the_current_epoch_stays_pending():
    pending = nominators.PendingDeposit(0, 100, 5, 0)  # 5 Shannons at 2 shares per Shannon
    deposit = nominators.Deposit(3, b"\1" * 32, 7, 0, pending)
    assert nominators.effective_shares(deposit, {(3, 100): 2 * 10**18}, current_epoch=100) == 7
    assert nominators.effective_shares(deposit, {(3, 100): 2 * 10**18}, current_epoch=101) == 17
    assert nominators.effective_shares(deposit, {}, current_epoch=101) is None  # a hole


def test_malformed_entries_name_epoch_item_and_entry(dump):
    broken = json.loads(json.dumps(dump))
    value = broken["deposits"]["entries"][3]["value"]
    broken["deposits"]["entries"][3]["value"] = value.replace('"known"', '"knwn"')
    with pytest.raises(
        ParseError, match=r"epoch 2647, deposits.entries\[3\]: missing field 'known'"
    ):
        nominators.parse_positions(broken, 2647)
    broken = json.loads(json.dumps(dump))
    key, _ = broken["depositOnHold"]["entries"][0]["value"].split(",", 1)
    broken["depositOnHold"]["entries"][0]["value"] = key + ",-5"
    with pytest.raises(ParseError, match=r"depositOnHold.entries\[0\]: bad decimal"):
        nominators.parse_positions(broken, 2647)
