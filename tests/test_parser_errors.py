"""Broken documents: one clear ParseError each (epoch, entry, reason), nothing else escapes."""

from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shareprice.chain import codec
from shareprice.chain.parser import ParseError, _operator_row_strict, operator_rows, parse_document
from shareprice.chain.records import PERQ

FORTY_DIGITS = "1234567890123456789012345678901234567890"


def _payload(**overrides) -> dict:
    payload = {
        "signingKey": "0x" + "5a" * 32,
        "currentDomainId": 0,
        "nextDomainId": 0,
        "minimumNominatorStake": codec.encode_u128(5 * PERQ),
        "nominationTax": 5,
        "currentTotalStake": codec.encode_u128(3 * PERQ),
        "currentTotalShares": codec.encode_u128(2 * PERQ),
        "partialStatus": {"registered": None},
        "depositsInEpoch": 0,
        "withdrawalsInEpoch": 0,
        "totalStorageFeeDeposit": codec.encode_u128(PERQ),
    }
    payload.update(overrides)
    return payload


def _value(operator_id: int, payload: dict | str) -> str:
    text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    return codec.encode_operator_key(operator_id) + "," + text


def _dump(epoch: int = 7, second: dict | str | None = None) -> dict:
    """A valid storage dump with two operators; `second` replaces operator 1's payload."""
    values = [_value(0, _payload()), _value(1, second if second is not None else _payload())]
    return {
        "epoch": epoch,
        "endBlock": 100,
        "endHash": "0x" + "00" * 32,
        "timestamp": 1,
        "domainStakingSummary": {
            "currentTotalStake": "6,000,000,000,000,000,000",
            "currentEpochRewards": {"0": "1,000", "1": "2,000"},
        },
        "operators": {
            "count": 2,
            "entries": [{"key": [str(i)], "value": v} for i, v in enumerate(values)],
        },
        "operatorEpochSharePrice": {
            "count": 1,
            "entries": [
                {
                    "key": ["0"],
                    "value": codec.encode_chain_price_key(0, 0, 6) + ",666666666666666666",
                }
            ],
        },
    }


def _flat(**overrides) -> dict:
    doc = {
        "domainId": 0,
        "epoch": 12,
        "endBlock": 5,
        "endHash": "0x00",
        "totalStake": "300",
        "operatorStakes": {"0": "100", "1": "200"},
        "rewards": {"0": "1"},
        "operatorSharePrices": {"0": str(PERQ), "1": str(PERQ + 5)},
    }
    doc.update(overrides)
    return doc


def test_the_valid_baselines_parse():
    record = parse_document(_dump())
    assert [o.share_price_perq for o in record.operators] == [3 * PERQ // 2] * 2
    assert len(record.chain_prices) == 1
    assert [o.stake for o in parse_document(_flat()).operators] == [100, 200]


def _with(doc: dict, path: list, value) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()

CORPUS = {
    "bad hex": (
        _dump(second=_payload(currentTotalStake="0xzz")),
        (7, "operators.entries[1]", "bad hex '0xzz' in currentTotalStake"),
    ),
    "missing operators": (
        _with(_dump(), ["operators"], _DELETE),
        (7, "operators", "missing field 'operators'"),
    ),
    "shares zero": (
        _dump(second=_payload(currentTotalShares=0)),
        (7, "operators.entries[1]", "zero currentTotalShares with stake"),
    ),
    "non-object data": (b"[1, 2, 3]", (None, None, "expected one document, got a list of 3")),
    "a number as document": (b"42", (None, None, "document is not a JSON object but a number")),
    "truncated JSON": (orjson.dumps(_dump())[:-40], (None, None, "invalid JSON")),
    "a 40-digit number in a payload": (
        _dump(second=f'{{"currentTotalStake":{FORTY_DIGITS}}}'),
        (7, "operators.entries[1]", "is not an exact integer (a fraction, or beyond 64 bits"),
    ),
    "a 40-digit number at top level": (
        orjson.dumps(_dump()).replace(b'"endBlock":100', b'"endBlock":' + FORTY_DIGITS.encode()),
        (7, "endBlock", "expected a non-negative integer"),
    ),
    "a 40-digit comma-grouped stake": (
        _with(_dump(), ["domainStakingSummary", "currentTotalStake"], f"{int(FORTY_DIGITS):,}"),
        (7, "domainStakingSummary.currentTotalStake", "exceeds u128"),
    ),
    "a 40-digit flat export stake": (
        _flat(operatorStakes={"0": FORTY_DIGITS}),
        (12, "operatorStakes['0']", "exceeds u128"),
    ),
    "negative stake (number)": (
        _dump(second=_payload(currentTotalStake=-5)),
        (7, "operators.entries[1]", "negative number -5 in currentTotalStake"),
    ),
    "negative stake (hex)": (
        _dump(second=_payload(currentTotalStake="-0x05")),
        (7, "operators.entries[1]", "bad hex '-0x05' in currentTotalStake"),
    ),
    "negative stake (flat export)": (
        _flat(operatorStakes={"0": "-100"}),
        (12, "operatorStakes['0']", "bad decimal '-100'"),
    ),
    "wrong item prefix in operators": (
        _with(
            _dump(),
            ["operators", "entries", 1, "value"],
            _value(1, _payload()).replace(codec.OPERATORS_ITEM, codec.DEPOSITS_ITEM),
        ),
        (7, "operators.entries[1]", "not an Operators storage key"),
    ),
    "wrong pallet prefix": (
        _with(
            _dump(),
            ["operators", "entries", 0, "value"],
            _value(0, _payload()).replace(codec.DOMAINS_PALLET, "ff" * 16),
        ),
        (7, "operators.entries[0]", "not an Operators storage key"),
    ),
    "missing payload field": (
        _dump(second={k: v for k, v in _payload().items() if k != "currentTotalShares"}),
        (7, "operators.entries[1]", "missing field 'currentTotalShares'"),
    ),
    "float stake": (
        _dump(second=_payload(currentTotalStake=1.5e21)),
        (7, "operators.entries[1]", "number 1.5e+21 is not an exact integer"),
    ),
    "tax out of range": (
        _dump(second=_payload(nominationTax=150)),
        (7, "operators.entries[1]", "nominationTax 150 is not a percentage"),
    ),
    "two statuses": (
        _dump(second=_payload(partialStatus={"registered": None, "slashed": None})),
        (7, "operators.entries[1]", "partialStatus"),
    ),
    "payload not JSON": (
        _dump(second="{not json"),
        (7, "operators.entries[1]", "invalid JSON"),
    ),
    "entry not an object": (
        _with(_dump(), ["operators", "entries", 1], "0x00"),
        (7, "operators.entries[1]", "entry is a string, not an object"),
    ),
    "entries not a list": (
        _with(_dump(), ["operators", "entries"], {"0": 1}),
        (7, "operators", "'entries' is not a list"),
    ),
    "count disagrees": (
        _with(_dump(), ["operators", "count"], 3),
        (7, "operators", "count 3 but 2 entries"),
    ),
    "operator twice": (
        _with(_dump(), ["operators", "entries", 1, "value"], _value(0, _payload())),
        (7, "operators", "operator 0 appears twice"),
    ),
    "bad reward grouping": (
        _with(_dump(), ["domainStakingSummary", "currentEpochRewards", "1"], "2,00"),
        (7, "domainStakingSummary.currentEpochRewards['1']", "bad comma-grouped number '2,00'"),
    ),
    "zero chain price": (
        _with(
            _dump(),
            ["operatorEpochSharePrice", "entries", 0, "value"],
            codec.encode_chain_price_key(0, 0, 6) + ",0",
        ),
        (7, "operatorEpochSharePrice.entries[0]", "zero shares-per-stake price"),
    ),
    "bad chain key": (
        _with(
            _dump(),
            ["operatorEpochSharePrice", "entries", 0, "value"],
            codec.encode_operator_key(0) + ",5",
        ),
        (7, "operatorEpochSharePrice.entries[0]", "not an OperatorEpochSharePrice storage key"),
    ),
    "missing epoch": (_with(_dump(), ["epoch"], _DELETE), (None, "epoch", "missing field")),
    "epoch not an integer": (_dump(epoch="7"), (None, "epoch", "is not a non-negative integer")),
    "unknown format": ({"epoch": 3, "foo": 1}, (3, None, "unrecognized document")),
    "flat: stake without price": (
        _flat(operatorSharePrices={"0": str(PERQ)}),
        (12, "operatorStakes['1']", "no price"),
    ),
    "flat: zero price": (
        _flat(operatorSharePrices={"0": "0", "1": str(PERQ)}),
        (12, "operatorSharePrices['0']", "zero share price"),
    ),
    "flat: stakes not an object": (
        _flat(operatorStakes=["100"]),
        (12, "operatorStakes", "expected an object, got an array"),
    ),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_broken_document_gives_one_clear_parse_error(name):
    doc, (epoch, entry, reason) = CORPUS[name]
    with pytest.raises(ParseError) as info:
        parse_document(doc)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.epoch == epoch
    assert err.entry == entry
    assert reason in err.reason
    # The message names epoch, entry and reason in that order.
    expected_prefix = ", ".join(
        part for part in (f"epoch {epoch}" if epoch is not None else None, entry) if part
    )
    assert str(err).startswith(expected_prefix)
    assert str(err).endswith(err.reason)


def test_message_format_matches_the_contract():
    err = ParseError("bad hex '0xzz' in currentTotalStake", 2647, "operators.entries[3]")
    assert str(err) == "epoch 2647, operators.entries[3]: bad hex '0xzz' in currentTotalStake"
    assert str(ParseError("invalid JSON: x")) == "invalid JSON: x"


def test_parse_error_pickles_with_its_attributes():
    import pickle

    err = pickle.loads(pickle.dumps(ParseError("why", 5, "operators")))
    assert (err.reason, err.epoch, err.entry, str(err)) == (
        "why",
        5,
        "operators",
        "epoch 5, operators: why",
    )


# --- the fast path accepts exactly what the strict path accepts ----------------------------------


def _strict_u128_text(value: int, form: str) -> str:
    if form == "padded":
        return f'"0x{value:032x}"'
    if form == "short":
        return f'"0x{value:x}"'
    return str(value)


@settings(max_examples=300, deadline=None)
@given(
    stake=st.integers(0, codec.U128_MAX),
    shares=st.integers(0, codec.U128_MAX),
    fee=st.integers(0, codec.U128_MAX),
    forms=st.tuples(*[st.sampled_from(["padded", "short", "number"])] * 3),
    mutation=st.one_of(
        st.none(),
        st.tuples(st.integers(0, 400), st.sampled_from(list('_ -+\\\tzZxX0٣,"{}'))),
    ),
)
def test_fast_path_agrees_with_the_strict_codec(stake, shares, fee, forms, mutation):
    payload = (
        '{"signingKey":"0xab","currentDomainId":0,"nextDomainId":0,"minimumNominatorStake":0,'
        f'"nominationTax":7,"currentTotalStake":{_strict_u128_text(stake, forms[0])},'
        f'"currentTotalShares":{_strict_u128_text(shares, forms[1])},'
        '"partialStatus":{"registered":null},"depositsInEpoch":0,"withdrawalsInEpoch":0,'
        f'"totalStorageFeeDeposit":{_strict_u128_text(fee, forms[2])}}}'
    )
    value = _value(42, payload)
    if mutation is not None:
        position, char = mutation
        position = min(position, len(value))
        value = value[:position] + char + value[position:]
    try:
        strict = _operator_row_strict(value, 0, 1)
    except ParseError as err:
        strict = err
    try:
        rows = operator_rows([value], {42: 9}, epoch=1)
    except ParseError as err:
        assert isinstance(strict, ParseError), f"fast path rejected what strict accepts: {err}"
        assert str(err) == str(strict)
        return
    assert not isinstance(strict, ParseError), f"fast path accepted: {strict}"
    assert rows == ([] if strict is None else [(*strict, 9)])
    if mutation is None:
        expected = (
            []
            if shares == 0
            else [(42, stake, shares, fee, 7, "registered", stake * PERQ // shares, 9)]
        )
        assert rows == expected
