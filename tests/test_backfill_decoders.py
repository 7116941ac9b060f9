"""The backfill's own fast decoders agree with the parser's on every input: the same value,
or the same error (type and message). Expected values are the parser's (shareprice.chain),
which the fast paths must never loosen or tighten."""

from __future__ import annotations

import random

import pytest

from shareprice.backfill.rewards import rewards_of
from shareprice.chain.parser import ParseError, parse_rewards

U128_MAX = 2**128 - 1


def _outcome(fn, raw):
    try:
        return ("ok", fn(raw))
    except Exception as exc:  # compared by type and message
        return ("error", type(exc).__name__, str(exc))


AMOUNTS = [
    "0", "00", "01", "7", "999", "1,000", "1,234", "12,345", "123,456,789", "1234", "0123",
    "12,34", ",123", "1,234,", "1,,234", "1_234", " 1", "1 ", "+1", "-1", "1.5", "１２３",
    "0,123", "000,123", f"{U128_MAX:,}", f"{U128_MAX + 1:,}", str(U128_MAX), str(U128_MAX + 1),
    f"{10**40:,}", "", 0, 5, -3, None, 1.5, [], {}, True,
]  # fmt: skip
KEYS = ["0", "1", "1,024", "1024", "01", "abc", "", "1,02", "99,999"]


@pytest.mark.parametrize("amount", AMOUNTS, ids=repr)
def test_rewards_of_gives_parse_rewards_for_each_amount(amount):
    raw = {"0": "1,234", "1,024": amount, "5": "7"}
    assert _outcome(lambda r: rewards_of(r, 42), raw) == _outcome(
        lambda r: parse_rewards(r, epoch=42), raw
    )


@pytest.mark.parametrize("key", KEYS)
def test_rewards_of_gives_parse_rewards_for_each_key(key):
    raw = {key: "1,000", "3": "12"}
    for _ in range(2):  # the second time with the key remembered
        assert _outcome(lambda r: rewards_of(r, 7), raw) == _outcome(
            lambda r: parse_rewards(r, epoch=7), raw
        )


def test_rewards_of_on_random_maps_and_other_shapes():
    rng = random.Random(14)
    alphabet = "0123456789,,,_ -"
    for _ in range(3000):
        raw = {
            "".join(rng.choices(alphabet, k=rng.randint(0, 6))): "".join(
                rng.choices(alphabet, k=rng.randint(0, 14))
            )
            for _ in range(rng.randint(0, 4))
        }
        assert _outcome(lambda r: rewards_of(r, 1), raw) == _outcome(
            lambda r: parse_rewards(r, epoch=1), raw
        ), raw
    for raw in (None, [], "1,234", 5, {"1": {"x": 1}}):
        got = _outcome(lambda r: rewards_of(r, 3), raw)
        assert got == _outcome(lambda r: parse_rewards(r, epoch=3), raw)
        assert got[0] == "error" and got[1] == ParseError.__name__


# --- the chain price diff (reader.ChainDiff) -------------------------------------------------------

PALLET = "0b41d0c7f7b4485bd7be1d66066b00ad"
CHAIN = "f16a4d4929cfe61f4f6bf4153bb44d9d"


def _chain_text(op: int, epoch: int, value: int, *, upper: bool = False) -> str:
    key = op.to_bytes(8, "little").hex() + (0).to_bytes(4, "little").hex()
    key += epoch.to_bytes(4, "little").hex()
    return f"0x{PALLET}{CHAIN}{key.upper() if upper else key},{value}"


def test_chain_diff_hands_the_parser_exactly_the_new_entries_and_refuses_repeated_keys():
    """ChainDiff: each document's rows are the parser's rows of the entries whose text the
    previous document lacked; `prices` is the whole document's map, `changed` the keys whose
    price differs from the previous map; a key twice (a text twice, two new texts, a new text
    beside the previous text of its key) hands all entries to the parser, which refuses them."""
    from shareprice.backfill.reader import ChainDiff
    from shareprice.chain.parser import chain_price_rows

    base = [
        _chain_text(op, ep, 10**18 - op * 1000 - ep) for op in (0, 1, 256) for ep in range(1, 6)
    ]
    docs = [
        base,
        # new: operator 1 epoch 6; changed: operator 0 epoch 3; gone: operator 0 epoch 1
        [*reversed([base[1], *base[3:]]), _chain_text(0, 3, 77), _chain_text(1, 6, 5)],
        # the same document again: nothing new
        None,
        # the gone entry back, and a case-variant key of a new entry
        [_chain_text(0, 1, 1), _chain_text(256, 7, 9, upper=True), *base[5:]],
    ]
    docs[2] = list(docs[1])
    diff = ChainDiff()
    before: dict = {}
    previous_texts: set = set()
    for epoch, values in enumerate(docs, start=10):
        rows = diff.parse(epoch, list(values), len(values))
        new = [v for v in values if v not in previous_texts]
        assert rows == chain_price_rows(new, epoch=epoch)
        prices = {(o, d, e): v for o, d, e, v in chain_price_rows(values, epoch=epoch)}
        assert diff.prices == prices
        if epoch > 10:
            assert diff.changed_from(epoch - 1) == {
                k for k in prices.keys() | before.keys() if prices.get(k) != before.get(k)
            } | {(o, d, e) for o, d, e, _ in rows}
        before, previous_texts = prices, set(values)

    last = list(docs[-1])
    repeated = [
        [*last, last[0]],  # a text twice
        [*last, _chain_text(0, 99, 1), _chain_text(0, 99, 2)],  # two new texts, one key
        [*last, last[1].split(",")[0] + ",12345"],  # a new text beside its key's old text
    ]
    for values in repeated:
        with pytest.raises(ParseError, match="appears twice"):
            diff.parse(20, values, len(values))
        diff.parse(21, last, len(last))  # after a failure: all entries again
        assert diff.changed_from(20) is None
        diff.parse(22, last, len(last))
