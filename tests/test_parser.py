"""The parser on the real samples, and on documents the generator's encoders build."""

from __future__ import annotations

import orjson
import pytest

from shareprice.chain import codec
from shareprice.chain.parser import parse_document
from shareprice.chain.records import PERQ, stake_per_share_perq


@pytest.fixture(scope="module")
def dump_bytes(shared_data) -> bytes:
    return (shared_data / "storage-dump-epoch-2647.json").read_bytes()


@pytest.fixture(scope="module")
def flat_docs(shared_data) -> list:
    return orjson.loads((shared_data / "flat-export-220-epochs.json").read_bytes())


def test_real_storage_dump_yields_operators_0_and_1_with_exact_prices(dump_bytes):
    record = parse_document(dump_bytes)
    assert record.format == "storage_dump"
    assert record.epoch == 2647
    assert record.end_block == 4169635
    assert record.end_hash == "0x2c24289c25e120edc3eb9dd7356b9e8e788d23ed0956860720828c71d82a1881"
    assert record.indexed_at_ms == 1757034855847
    assert record.total_stake == 2_142_367_189_913_035_523_387_990
    assert [o.operator_id for o in record.operators] == [0, 1]
    assert [o.share_price_perq for o in record.operators] == [
        1000036353676459997,
        1000041958130096238,
    ]
    zero, one = record.operators
    assert zero.stake == 0x0000_0000_0000_EEDC_90F0_3C55_DA77_8354
    assert zero.shares == 0x0000_0000_0000_EEDA_57E0_A12D_4D10_CA6B
    assert zero.storage_fee == 0x0000_0000_0000_3BB7_0ECD_2735_51D8_7D45
    assert (zero.nomination_tax, zero.status) == (5, "registered")
    assert zero.rewards == 1_749_328_622_063_959
    assert one.rewards == 1_209_852_088_042_639
    # The summary's per-operator stake agrees with the storage item.
    assert zero.stake == 1_127_991_950_533_066_969_547_604


def test_real_storage_dump_chain_prices_are_kept_in_the_chain_convention(dump_bytes):
    record = parse_document(dump_bytes)
    chain = record.chain_prices
    assert len(chain) == 2878
    assert {c.operator_id for c in chain} == {0, 1}
    assert {c.domain_id for c in chain} == {0}
    assert all(0 < c.shares_per_stake_perq <= PERQ for c in chain)
    last = {c.operator_id: c for c in chain if c.domain_epoch == 2646}
    # The state in the dump of epoch E is the state after E-1: the inverted chain value of E-1
    # agrees with the computed stake-per-share price within one unit.
    for state in record.operators:
        inverted = 10**36 // last[state.operator_id].shares_per_stake_perq
        assert abs(inverted - state.share_price_perq) <= 1


def test_real_storage_dump_as_dict_list_and_str_parse_the_same(dump_bytes):
    as_list = orjson.loads(dump_bytes)
    assert isinstance(as_list, list) and len(as_list) == 1
    expected = parse_document(dump_bytes)
    assert parse_document(as_list) == expected
    assert parse_document(as_list[0]) == expected
    assert parse_document(dump_bytes.decode()) == expected


def test_operator_id_comes_from_the_storage_key_not_the_array_position(dump_bytes):
    doc = orjson.loads(dump_bytes)[0]
    entries = doc["operators"]["entries"]
    # Swap the positions: ids must follow the storage keys, not the `key` array positions.
    entries[0]["value"], entries[1]["value"] = entries[1]["value"], entries[0]["value"]
    record = parse_document(doc)
    assert [o.operator_id for o in record.operators] == [0, 1]
    assert record.operators[0].share_price_perq == 1000036353676459997


def test_real_flat_export_parses_every_entry(flat_docs):
    records = [parse_document(doc) for doc in flat_docs]
    assert len(records) == 220
    assert all(r.format == "flat_export" for r in records)
    assert sorted(r.epoch for r in records) == [*range(219), 2619]
    by_epoch = {r.epoch: r for r in records}
    assert by_epoch[0].operators == ()  # early epochs: `{}` and no operatorSharePrices
    e218 = by_epoch[218]
    assert [(o.operator_id, o.share_price_perq) for o in e218.operators] == [
        (0, 1000000030344440529),
        (1, 1000000014921707779),
    ]
    assert e218.operators[0].stake == 194248425660459543997145
    assert e218.operators[0].rewards == 34289477705700
    assert e218.operators[1].rewards is None  # not given in the export
    assert all(o.shares is None and o.status is None for o in e218.operators)
    # Epoch 1 prices operator 1 before it has any stake: it is not an operator state yet.
    assert [o.operator_id for o in by_epoch[1].operators] == [0]


def _operator_entry(position: int, operator_id: int, stake: int, shares: int) -> dict:
    payload = {
        "signingKey": "0x" + "ab" * 32,
        "currentDomainId": 0,
        "nextDomainId": 0,
        "minimumNominatorStake": codec.encode_u128(10 * PERQ),
        "nominationTax": 3,
        "currentTotalStake": codec.encode_u128(stake),
        "currentTotalShares": codec.encode_u128(shares),
        "partialStatus": {"deregistered": {"domainEpoch": [0, 7]}},
        "depositsInEpoch": 0,
        "withdrawalsInEpoch": 0,
        "totalStorageFeeDeposit": codec.encode_u128(stake // 4),
    }
    value = codec.encode_operator_key(operator_id) + "," + orjson.dumps(payload).decode()
    return {"key": [str(position)], "value": value}


def test_large_operator_ids_small_json_numbers_and_grouped_reward_keys():
    doc = {
        "epoch": 9,
        "domainStakingSummary": {
            "currentTotalStake": "3,000,000",
            "currentEpochRewards": {"1,234": "1,000", "70,000": "5"},
        },
        "operators": {
            "count": 3,
            "entries": [
                _operator_entry(0, 70_000, 2 * PERQ, PERQ),
                _operator_entry(1, 1_234, 1_000_000, 1_000_000),  # small values: JSON numbers
                _operator_entry(2, 5, 0, 0),  # registered this epoch: no price yet, skipped
            ],
        },
    }
    record = parse_document(doc)
    assert [o.operator_id for o in record.operators] == [1_234, 70_000]
    assert [o.share_price_perq for o in record.operators] == [PERQ, 2 * PERQ]
    assert [o.rewards for o in record.operators] == [1_000, 5]
    assert record.operators[0].status == "deregistered"
    assert record.chain_prices == ()
    assert stake_per_share_perq(2 * PERQ, PERQ) == record.operators[1].share_price_perq
