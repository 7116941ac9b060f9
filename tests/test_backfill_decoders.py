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
