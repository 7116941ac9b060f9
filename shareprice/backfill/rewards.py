"""`currentEpochRewards` of a storage dump, decoded as parse_rewards does, faster.

Why: each seed-scale dump carries ~975 rewards, keys (operator ids) and amounts both
comma-grouped, and parse_rewards decodes every one of them with decode_grouped (a canonical
round trip through f"{value:,}"): ~1 ms per epoch. The keys are the same ~1,000 strings epoch
after epoch, so they are decoded by decode_grouped once per process and remembered; an amount
in canonical grouping (one leading group of 1-3 digits without a leading zero, then groups of
three: exactly the strings whose round trip succeeds, besides plain unsigned digit strings,
which are left to the parser) is decoded by one expression and one int().

Exactness: a key's id is decode_grouped's own result; for an amount the expression matches,
int() of its digits is decode_grouped's value and the round trip holds by construction; the
u128 bound is checked here. Anything else (not an object, a key decode_grouped refuses, an
amount that is not a string in canonical grouping, a value above u128) hands the whole map to
parse_rewards, so what is accepted and every error are the parser's own.
"""

from __future__ import annotations

import re
from typing import Any, Final

from shareprice.chain.codec import U128_MAX, decode_grouped
from shareprice.chain.parser import parse_rewards

#: An amount in canonical grouping: "0", or a leading group of 1-3 digits not starting with 0
#: followed by groups of three ("12", "1,234", "12,345,678").
_GROUPED: Final = re.compile(r"0|[1-9][0-9]{0,2}(?:,[0-9]{3})*")

#: Reward keys as decode_grouped decodes them; bounded (past the bound, new keys are decoded
#: every time).
_KEYS: dict[str, int] = {}
_KEYS_MAX: Final = 100_000


def rewards_of(raw: Any, epoch: int) -> dict[int, int]:
    """parse_rewards(raw, epoch=epoch), decoding the usual text faster (see the module
    docstring)."""
    if type(raw) is not dict:
        return parse_rewards(raw, epoch=epoch)
    out: dict[int, int] = {}
    keys = _KEYS
    grouped = _GROUPED.fullmatch
    for key, value in raw.items():
        operator_id = keys.get(key)
        if operator_id is None:
            try:
                operator_id = decode_grouped(key)
            except (ValueError, TypeError):
                return parse_rewards(raw, epoch=epoch)
            if len(keys) < _KEYS_MAX:
                keys[key] = operator_id
        if type(value) is not str or grouped(value) is None:
            return parse_rewards(raw, epoch=epoch)
        amount = int(value.replace(",", ""))
        if amount > U128_MAX:
            return parse_rewards(raw, epoch=epoch)
        out[operator_id] = amount
    return out
