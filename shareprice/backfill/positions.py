"""Nominator positions of one epoch, compared with the previous epoch's: the change rows of
sql/042 (a row only where a position's state differs from its state at E-1).

Why text first: a seed-scale dump repeats every position of every nominator, and nearly all of
them are unchanged from the previous epoch. An entry whose whole value text (storage key and
payload) equals the previous epoch's has the same decoded fields, and it is valid because that
previous entry was decoded and checked when its own epoch was built; so such an entry costs a
dict lookup and a string compare, and only its effective shares are recomputed when it holds a
pending deposit whose epoch has ended (the conversion, or a chain price that changed). Every
other entry is decoded strictly (shareprice.chain.nominators' per-entry decoders, the same ones
parse_positions uses). A position's state is a plain tuple, compared as a whole.

Why a regular expression first: at seed scale ~900 entries per epoch do change (an operator
owner's shares move every epoch), and the strict decoders (JSON parse, four checked hex fields,
the key's checks) cost ~20 us each: most of a document's Python time. The chain's own encoder
writes one canonical text, which `_DEPOSIT_RE` / `_HOLD_RE` match in one C-level pass: the
prefix, the key in lower-case hex, the payload's exact keys in order, amounts as hex of at most
32 digits (always a u128) or JSON integers of at most 15 digits (exact to orjson), the pending
epoch pair as integers of at most 9 digits (within the columns), a balance of at most 38
digits. Every text they match is one the strict decoders accept, with the same fields;
anything else (other key order, whitespace, longer hex or numbers, a missing field) is
decoded strictly, so what is accepted and every error are exactly the strict path's.

Errors: anything wrong raises (ValueError, KeyError, ParseError, ...); the reader then parses
the whole document with parse_positions, whose ParseError names epoch, item and entry.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Final

from shareprice.chain.codec import DOMAINS_PALLET, KEY_PREFIX_LEN
from shareprice.chain.nominators import (
    DEPOSIT_ON_HOLD_ITEM,
    DEPOSITS_ITEM,
    POSITION_KEY_LEN,
    WITHDRAWALS_ITEM,
    UnlockingFields,
    deposit_fields,
    hold_amount,
    position_key,
    withdrawal_fields,
)
from shareprice.chain.parser import ParseError
from shareprice.chain.records import PERQ

#: (operator_id, account hex, known_shares, known_storage_fee, pending_domain_id, pending_epoch,
#: pending_amount, pending_storage_fee, effective_shares, deposit_on_hold): nominator_positions'
#: columns after the key's epoch. Operator and account are fixed by the dict key, so comparing
#: whole tuples compares the state columns.
PositionState = tuple[
    int, str, int | None, int | None, int | None, int | None, int | None, int | None,
    int | None, int | None,
]  # fmt: skip
#: (operator_id, account hex, total_amount, total_storage_fee, in_shares_domain_id,
#: in_shares_epoch, in_shares_unlock_block, in_shares, in_shares_storage_fee_refund, unlocking).
WithdrawalState = tuple[
    int, str, int, int, int | None, int | None, int | None, int | None, int | None,
    tuple[UnlockingFields, ...],
]  # fmt: skip
#: Chain prices of a document: (operator, domain, domain epoch) -> shares per stake (Perquintill).
ChainPrices = Mapping[tuple[int, int, int], int]

_PENDING_EPOCH: Final = 5
_EFFECTIVE: Final = 8

#: A u128 as the chain writes it: 0x-hex of at most 32 digits, or a JSON integer of at most 15
#: digits (polkadot.js writes values of up to 52 bits as numbers; orjson reads them exactly).
_U128_HEX = r'("0x[0-9a-f]{1,32}"|0|[1-9][0-9]{0,14})'
_SMALL_INT = r"(0|[1-9][0-9]{0,8})"
_KEY = r"([0-9a-f]{16})([0-9a-f]{64}),"
#: A Deposits entry as the chain writes it (see the module docstring); groups: operator (u64
#: LE hex), account, known shares, known fee, then pending domain, epoch, amount, fee or None.
_DEPOSIT_RE: Final = re.compile(
    "0x" + DOMAINS_PALLET + DEPOSITS_ITEM + _KEY
    + r'\{"known":\{"shares":' + _U128_HEX + r',"storageFeeDeposit":' + _U128_HEX
    + r'\},"pending":(?:null|\{"effectiveDomainEpoch":\[' + _SMALL_INT + "," + _SMALL_INT
    + r'\],"amount":' + _U128_HEX + r',"storageFeeDeposit":' + _U128_HEX + r"\})\}"
)  # fmt: skip
#: A DepositOnHold entry: the key, then a decimal balance of at most 38 digits (< 2^128).
_HOLD_RE: Final = re.compile(
    "0x" + DOMAINS_PALLET + DEPOSIT_ON_HOLD_ITEM + _KEY + r"(0|[1-9][0-9]{0,37})"
)  # fmt: skip


@dataclass(slots=True)
class EpochItems:
    """One epoch's position items, checked: by key (operator and account), the entry texts
    and the decoded state (what the next epoch is compared with)."""

    epoch: int
    revision: int
    head_domain_number: int | None
    #: key -> the decoded state of the position.
    entries: dict[str, PositionState]
    #: key -> (Withdrawals entry value, state).
    withdrawal_entries: dict[str, tuple[str, WithdrawalState]]
    #: key -> the Deposits / DepositOnHold entry value (what the next epoch's texts are
    #: compared with, as whole (key, text) pairs).
    deposits: dict[str, str]
    holds: dict[str, str]
    #: Keys whose state has a pending deposit (its effective shares can change while its text
    #: stays the same: the conversion at the end of its epoch, or a chain price that changed).
    pending: set[str]
    #: Of those, the ones whose pending epoch had ended at `epoch`, with the chain price key
    #: their effective shares were computed from: while their texts stay the same, only a
    #: change of that one price can change them.
    settled: dict[str, tuple[int, int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PositionChanges:
    """What an epoch writes: its epoch_positions row and its change rows (state None: a closing
    row, the key held a position at E-1 and holds none at E)."""

    epoch: int
    base_revision: int | None
    head_domain_number: int | None
    positions: int
    withdrawals: int
    rows: list[tuple[int, str, PositionState | None]]
    withdrawal_rows: list[tuple[int, str, WithdrawalState | None]]


def _by_key(values: Sequence[str] | None, name: str, epoch: int, lower: bool) -> dict[str, str]:
    """Entry values by key: the storage key's operator and account part (the item prefix
    differs between the three items); a key twice raises. With `lower` (the whole-document
    path) keys are canonicalized to lower case; the parts path leaves them as they are and
    _decode refuses a key that is not lower case, sending the document to the whole path."""
    if not values:
        return {}
    p, k = KEY_PREFIX_LEN, POSITION_KEY_LEN
    out = {v[p:k].lower(): v for v in values} if lower else {v[p:k]: v for v in values}
    if len(out) != len(values):
        raise ParseError("the key of an operator and account appears twice", epoch, name)
    return out


def build(
    epoch: int,
    revision: int,
    head_domain_number: int | None,
    deposit_values: Sequence[str] | None,
    withdrawal_values: Sequence[str] | None,
    hold_values: Sequence[str] | None,
    prices: ChainPrices,
    base: EpochItems | None,
    *,
    lower: bool = False,
    changed_prices: AbstractSet[tuple[int, int, int]] | None = None,
) -> tuple[EpochItems, PositionChanges]:
    """The items of `epoch` (its document's entry values, in any order) and its change rows
    against `base` (the items of epoch - 1, or None: full rows). `prices`: this document's
    chain prices, for effective shares. `changed_prices`: every price key whose value in
    `prices` may differ from the map `base` was built with (None: any may)."""
    deposits = _by_key(deposit_values, "deposits", epoch, lower)
    holds = _by_key(hold_values, "depositOnHold", epoch, lower)
    withdrawals = _by_key(withdrawal_values, "withdrawals", epoch, lower)
    if base is not None and base.epoch != epoch - 1:
        raise ValueError(f"base epoch {base.epoch} is not epoch {epoch} - 1")
    rows: list[tuple[int, str, PositionState | None]] = []
    pending: set[str]
    settled: dict[str, tuple[int, int, int]]
    if base is None:
        entries: dict[str, PositionState] = {}
        changed: set[str] = deposits.keys() | holds.keys()
        pending = set()
        settled = {}
    else:
        # One C-level pass finds the keys whose deposit or hold text differs from E-1's (or
        # appeared, or vanished); every other key keeps E-1's state object as it is.
        entries = base.entries.copy()
        changed = {k for k, _ in deposits.items() ^ base.deposits.items()}
        changed.update(k for k, _ in holds.items() ^ base.holds.items())
        pending = base.pending - changed
        settled = base.settled.copy()
        for key in changed:
            settled.pop(key, None)
        # Same texts, pending deposit: the same fields; only the effective shares can move:
        # at the end of the pending epoch, or when the one chain price they use changed. A
        # seed-scale epoch holds ~2,200 such keys whose epoch ended long ago, and prices of
        # ended epochs do not change: only the others are looked at, unless one of those
        # prices did change (or the caller cannot say which changed).
        check: Collection[str] = pending
        if changed_prices is not None and changed_prices.isdisjoint(settled.values()):
            check = pending.difference(settled)
        prices_get = prices.get
        for key in check:
            before = entries[key]
            pending_epoch = before[_PENDING_EPOCH]
            if pending_epoch is None or pending_epoch >= epoch:
                continue
            # known + floor(P * pending amount / 10^18); None without P (inlined: hot).
            price_key = (before[0], before[4], pending_epoch)
            settled[key] = price_key  # type: ignore[assignment]
            price = prices_get(price_key)  # type: ignore[arg-type]
            effective = None if price is None else before[2] + price * before[6] // PERQ  # type: ignore[operator]
            if effective != before[_EFFECTIVE]:
                state = (*before[:_EFFECTIVE], effective, before[9])
                entries[key] = state
                rows.append((state[0], state[1], state))
    prices_get = prices.get
    deposits_get = deposits.get
    holds_get = holds.get
    base_deposits_get = base.deposits.get if base is not None else deposits_get
    base_holds_get = base.holds.get if base is not None else holds_get
    for key in changed:
        d = deposits_get(key)
        h = holds_get(key)
        before_state = entries.get(key)
        if d is None and h is None:  # held at E-1, gone at E: a closing row
            if before_state is not None:
                del entries[key]
                rows.append((before_state[0], before_state[1], None))
            continue
        # A text equal to E-1's decodes to E-1's fields (checked when E-1 was built): only
        # the other item's text is decoded (~900 changed deposits per seed epoch, ~50 holds).
        keep_d = keep_h = False
        if before_state is not None:
            keep_d = d is not None and base_deposits_get(key) == d
            keep_h = h is not None and base_holds_get(key) == h
        new_state = _decode_position(
            key, d, h, epoch, prices_get, before_state if keep_d or keep_h else None, keep_d, keep_h
        )
        if d is not None and new_state[_PENDING_EPOCH] is not None:
            pending.add(key)
            if new_state[_PENDING_EPOCH] < epoch:
                settled[key] = (new_state[0], new_state[4], new_state[5])  # type: ignore[assignment]
        if before_state is not None and new_state == before_state:
            continue  # another spelling of the same state: E-1's state stays
        entries[key] = new_state
        rows.append((new_state[0], new_state[1], new_state))
    w_entries: dict[str, tuple[str, WithdrawalState]] = {}
    w_rows: list[tuple[int, str, WithdrawalState | None]] = []
    b_w_entries: dict[str, tuple[str, WithdrawalState]] = (
        base.withdrawal_entries if base is not None else {}
    )
    bw_get = b_w_entries.get
    for key, value in withdrawals.items():
        bw = bw_get(key)
        if bw is not None and value == bw[0]:
            w_entries[key] = bw
            continue
        operator_id, account, payload = position_key(value, WITHDRAWALS_ITEM)
        _check_case(key, operator_id, account)
        w_state: WithdrawalState = (operator_id, account, *withdrawal_fields(payload))
        w_entries[key] = (value, w_state)
        if bw is None or w_state != bw[1]:
            w_rows.append((operator_id, account, w_state))
    if base is not None:
        for key in base.withdrawal_entries.keys() - w_entries.keys():
            w_before = base.withdrawal_entries[key][1]
            w_rows.append((w_before[0], w_before[1], None))
    items = EpochItems(
        epoch, revision, head_domain_number, entries, w_entries, deposits, holds, pending, settled
    )
    changes = PositionChanges(
        epoch,
        None if base is None else base.revision,
        head_domain_number,
        len(entries),
        len(w_entries),
        rows,
        w_rows,
    )
    return items, changes


def _check_case(key: str, operator_id: int, account: str) -> None:
    """A key as the dict holds it must be the canonical (lower-case) text of what it decodes
    to, or two spellings of one key could both be stored."""
    if key != operator_id.to_bytes(8, "little").hex() + account:
        raise ValueError("storage key not in lower-case hex")


def _u128(token: str) -> int:
    """A `_U128_HEX` match: '"0x<hex>"' or decimal digits."""
    return int(token[3:-1], 16) if token[0] == '"' else int(token)


def _decode_position(
    key: str,
    deposit: str | None,
    hold: str | None,
    epoch: int,
    prices_get,
    before: PositionState | None = None,
    keep_deposit: bool = False,
    keep_hold: bool = False,
) -> PositionState:
    """The state of `key` from its texts. `keep_deposit` / `keep_hold`: that text equals E-1's,
    whose decoded fields `before` holds (its effective shares are recomputed all the same)."""
    operator_id = account = None
    fields: tuple[int | None, ...] = (None, None, None, None, None, None)
    effective: int | None = None
    on_hold: int | None = None
    # Every text decoded here matched the canonical expressions (whose key is lower-case hex,
    # the very slice the dicts are keyed by): then the case check holds by construction.
    canonical = True
    if deposit is not None:
        if keep_deposit:
            assert before is not None
            operator_id, account = before[0], before[1]
            fields = before[2:8]
        else:
            m = _DEPOSIT_RE.fullmatch(deposit)
            if m is not None:  # the canonical text: the same fields as deposit_fields gives
                op_hex, account, shares, fee, domain, pending, amount, pending_fee = m.groups()
                operator_id = int.from_bytes(bytes.fromhex(op_hex), "little")
                fields = (
                    (_u128(shares), _u128(fee), None, None, None, None)
                    if domain is None
                    else (
                        _u128(shares),
                        _u128(fee),
                        int(domain),
                        int(pending),
                        _u128(amount),
                        _u128(pending_fee),
                    )
                )
            else:
                operator_id, account, payload = position_key(deposit, DEPOSITS_ITEM)
                fields = deposit_fields(payload)
                canonical = False
        known, _, domain_id, pending_epoch, amount_v, _ = fields
        if pending_epoch is None or pending_epoch >= epoch:
            effective = known
        else:
            price = prices_get((operator_id, domain_id, pending_epoch))
            effective = None if price is None else known + price * amount_v // PERQ
    if hold is not None:
        if keep_hold:
            assert before is not None
            operator_id, account = before[0], before[1]
            on_hold = before[9]
        else:
            h = _HOLD_RE.fullmatch(hold)
            if h is not None:
                op_hex, account, balance = h.groups()
                operator_id = int.from_bytes(bytes.fromhex(op_hex), "little")
                on_hold = int(balance)
            else:
                operator_id, account, payload = position_key(hold, DEPOSIT_ON_HOLD_ITEM)
                on_hold = hold_amount(payload)
                canonical = False
    assert operator_id is not None and account is not None
    if not canonical:
        _check_case(key, operator_id, account)
    return (operator_id, account, *fields, effective, on_hold)  # type: ignore[return-value]
