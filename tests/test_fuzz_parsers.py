"""Fuzzing both parsers with random mutations of the real samples.

Whatever the mutation (dropped keys, wrong types, truncated hex, huge and negative numbers,
non-ASCII, deeply nested junk, broken JSON bytes), the parser either returns a correct parse or
raises the one documented ParseError naming the epoch and a reason; never another exception,
never a hang (hypothesis' deadline).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest
from helpers.requirements import SHARED_DATA, require_shared_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shareprice.chain.parser import ParseError, parse_document
from shareprice.chain.records import PERQ, EpochRecord

SAMPLES = SHARED_DATA
FUZZ = settings(
    max_examples=int(os.environ.get("SHAREPRICE_FUZZ_EXAMPLES", "250")),
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _load_samples() -> tuple[dict, list[dict]]:
    require_shared_data(module=True)
    dump = json.loads((SAMPLES / "storage-dump-epoch-2647.json").read_text())[0]
    # Keep every kind of entry but few of the 2,878 repeated history rows, so one example
    # parses in microseconds and hypothesis can try hundreds.
    for name in ("operatorEpochSharePrice", "deposits", "withdrawals", "depositOnHold"):
        dump[name]["entries"] = dump[name]["entries"][:12]
        dump[name]["count"] = len(dump[name]["entries"])
    flat = json.loads((SAMPLES / "flat-export-220-epochs.json").read_text())
    return dump, [flat[0], flat[150], flat[-1]]


DUMP, FLATS = _load_samples()

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**45), max_value=10**45),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["0x", "0xzz", "0x" + "f" * 40, "-1", "1,2,3", "١٢٣", "💥", "0x-1", ""]),
    st.recursive(
        st.none() | st.integers() | st.text(max_size=3),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
        max_leaves=30,
    ),
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found


DUMP_PATHS = _paths(DUMP)[1:]
FLAT_PATHS = [_paths(doc)[1:] for doc in FLATS]


def _mutate(doc: Any, path: tuple, how: str, junk: Any, cut: int) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    value = parent[last]
    if how == "drop":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    elif how == "junk":
        parent[last] = junk
    elif how == "truncate" and isinstance(value, str):
        parent[last] = value[: cut % (len(value) + 1)]
    elif how == "nest":
        nested: Any = value
        for _ in range(200):
            nested = [nested]
        parent[last] = nested
    elif how == "non_ascii" and isinstance(value, str):
        parent[last] = (
            value[: cut % (len(value) + 1)] + "é😀\u202e" + value[cut % (len(value) + 1) :]
        )
    elif how == "huge":
        parent[last] = 10**41 if cut % 2 else "0x" + "f" * 33
    elif how == "negative":
        parent[last] = -abs(value) - 1 if isinstance(value, int) else "-" + str(value)
    else:
        parent[last] = junk
    return doc


MUTATIONS = st.sampled_from(["drop", "junk", "truncate", "nest", "non_ascii", "huge", "negative"])


def _assert_parse_or_parse_error(doc: Any, original_epoch: int, epoch_intact: bool) -> None:
    try:
        record = parse_document(doc)
    except ParseError as err:
        assert err.reason, "a ParseError must say why"
        if epoch_intact:
            assert err.epoch == original_epoch, str(err)
        return
    _assert_correct(record)


def _assert_correct(record: EpochRecord) -> None:
    """A parse that succeeded must still obey the domain's rules."""
    ids = [op.operator_id for op in record.operators]
    assert ids == sorted(set(ids)) and all(0 <= i < 2**64 for i in ids)
    for op in record.operators:
        assert op.share_price_perq > 0 and op.stake >= 0
        if op.shares is not None:
            assert op.share_price_perq == op.stake * PERQ // op.shares
        for value in (op.stake, op.shares, op.storage_fee, op.rewards):
            assert value is None or (type(value) is int and 0 <= value < 2**128)
    for price in record.chain_prices:
        assert price.shares_per_stake_perq > 0 and price.operator_id in range(2**64)


@FUZZ
@given(path=st.sampled_from(DUMP_PATHS), how=MUTATIONS, junk=JUNK, cut=st.integers(0, 10_000))
def test_mutated_storage_dump(path, how, junk, cut):
    doc = _mutate(DUMP, path, how, junk, cut)
    _assert_parse_or_parse_error(doc, 2647, epoch_intact=path[0] != "epoch")


@FUZZ
@given(
    which=st.integers(0, len(FLATS) - 1),
    data=st.data(),
    how=MUTATIONS,
    junk=JUNK,
    cut=st.integers(0, 10_000),
)
def test_mutated_flat_export(which, data, how, junk, cut):
    path = data.draw(st.sampled_from(FLAT_PATHS[which]))
    doc = _mutate(FLATS[which], path, how, junk, cut)
    _assert_parse_or_parse_error(doc, FLATS[which]["epoch"], epoch_intact=path[0] != "epoch")


@FUZZ
@given(
    which=st.sampled_from(["dump", "flat"]),
    cut=st.integers(0, 10**6),
    flip=st.integers(0, 255),
    mode=st.sampled_from(["truncate", "flip", "insert"]),
)
def test_mutated_json_bytes(which, cut, flip, mode):
    raw = json.dumps(DUMP if which == "dump" else FLATS[1]).encode()
    at = cut % len(raw)
    if mode == "truncate":
        raw = raw[:at]
    elif mode == "flip":
        raw = raw[:at] + bytes([flip]) + raw[at + 1 :]
    else:
        raw = raw[:at] + "\u00e9\u0000\ud7ff".encode("utf-8", "surrogatepass") + raw[at:]
    try:
        record = parse_document(raw)
    except ParseError as err:
        assert err.reason
        return
    _assert_correct(record)


def test_unmutated_samples_parse_as_the_domain_says():
    record = parse_document(DUMP)
    assert [op.operator_id for op in record.operators] == [0, 1]
    assert [op.share_price_perq for op in record.operators] == [
        1000036353676459997,
        1000041958130096238,
    ]
    for flat in FLATS:
        parse_document(flat)


def test_deep_nesting_is_an_error_not_a_crash():
    doc = copy.deepcopy(DUMP)
    nested: Any = {}
    for _ in range(5000):
        nested = {"x": nested}
    doc["operators"] = nested
    with pytest.raises(ParseError):
        parse_document(doc)
    with pytest.raises(ParseError):
        parse_document(b"[" * 100_000)
