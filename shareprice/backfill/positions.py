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

Why position by position: the dump lists the same keys in the same order epoch after epoch,
with a few entries added or removed, so `_walk` compares each item's texts with E-1's in order,
in C-level passes between those shifts, and slices a key only where a text differs. Where
nothing was added or removed the key list is E-1's own object and the key -> text map E-1's
copied with the changed texts (seed scale: ~3,000 deposits and ~3,000 holds per epoch, ~900
and ~50 of them changed, ~40 % of epochs with an entry added or removed).

Why a shares-only step: ~94 % of the deposits that change per seed epoch differ from E-1's text
only in the 32 hex digits of `known.shares` (an operator owner's shares move every epoch). When
E-1's text was the chain's canonical one (it matched `_DEPOSIT_RE`) with those digits at fixed
offsets (`_fixed_layout`), and the new text equals it before and after them (its "frame") and
they are lower-case hex, the new text is canonical too and decodes to E-1's fields with the new
shares: two compares with the stored frame and one `int(x, 16)` instead of the expression and
four conversions. Any other change, spelling or key goes through the per-entry decoders.

Errors: anything wrong raises (ValueError, KeyError, ParseError, ...); the reader then parses
the whole document with parse_positions, whose ParseError names epoch, item and entry.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import compress, count, islice
from operator import ne
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


#: Where `known.shares` sits in a canonical deposit text whose shares are 32 hex digits (the
#: chain pads them): '<key>,{"known":{"shares":"0x' then the digits, then '"'.
_SHARES_LEAD: Final = ',{"known":{"shares":"0x'
_SHARES_AT: Final = POSITION_KEY_LEN + len(_SHARES_LEAD)
_SHARES_END: Final = _SHARES_AT + 32
_HEX32: Final = re.compile("[0-9a-f]{32}")


def _fixed_layout(text: str) -> bool:
    """Whether a deposit text that matched _DEPOSIT_RE has its shares as 32 digits at
    _SHARES_AT (the chain's padding; shorter hex or the number 0 do not)."""
    return (
        text.startswith(_SHARES_LEAD, POSITION_KEY_LEN)
        and text[_SHARES_END : _SHARES_END + 1] == '"'
    )


@dataclass(slots=True)
class Item:
    """One item's entry values (Deposits or DepositOnHold): in the document's order, their keys
    (operator and account hex) in the same order, and key -> value. `keys` is E-1's own list
    when the document lists E-1's keys in E-1's order."""

    values: list[str]
    keys: list[str]
    by_key: dict[str, str]
    #: Whether keys were canonicalized to lower case (the whole-document path).
    lower: bool


_NO_ITEM = Item([], [], {}, False)

#: More entries added or removed than this between two epochs: key the item afresh.
_MAX_SHIFTS = 64


def _walk(
    texts: list[str], base: Item, lower: bool
) -> tuple[list[str], list[str], list[int] | None] | None:
    """The keys of `texts`, the keys whose value differs from `base`'s (changed, added or
    removed), and when the keys are E-1's own list (nothing added or removed) the positions of
    the changed values; found by walking both lists in order (see the module docstring).

    Between two shifts, texts[i + t] is compared with base.values[j + t] in one C-level pass
    and only the differing positions are looked at: the same key there is a changed value;
    otherwise a key E-1 lacks was added (i moves on), else E-1's key there is taken as removed
    (j moves on). Every position's key is thus its own text's key (equal text, checked key, or
    read), so the key list is exact whatever the walk guessed; a key taken as removed that is
    in fact elsewhere is only one more changed key, decoded again. None: too many shifts."""
    p, k = KEY_PREFIX_LEN, POSITION_KEY_LEN
    old_values, old_keys, old_by_key = base.values, base.keys, base.by_key
    n, m = len(texts), len(old_values)
    changed: list[str] = []
    at: list[int] = []
    pieces: list[list[str]] = []
    i = j = seg_j = 0
    shifts = 0
    while True:
        for t in compress(count(), map(ne, islice(texts, i, None), islice(old_values, j, None))):
            a, b = i + t, j + t
            key = texts[a][p:k].lower() if lower else texts[a][p:k]
            if key == old_keys[b]:
                changed.append(key)
                at.append(a)
                continue
            shifts += 1
            if shifts > _MAX_SHIFTS:
                return None
            pieces.append(old_keys[seg_j:b])
            changed.append(key)
            if key in old_by_key:  # E-1's key at b is taken as removed
                changed.append(old_keys[b])
                i, j = a, b + 1
            else:  # a key added at a
                pieces.append([key])
                i, j = a + 1, b
            seg_j = j
            break
        else:
            tail = min(n - i, m - j)
            i, j = i + tail, j + tail
            if not pieces and i == n and j == m:
                return old_keys, changed, at  # E-1's keys in E-1's order
            pieces.append(old_keys[seg_j:j])
            added = [v[p:k].lower() if lower else v[p:k] for v in texts[i:]]
            pieces.append(added)
            changed.extend(added)
            changed.extend(old_keys[j:])
            return [key for piece in pieces for key in piece], changed, None


def _keyed(
    values: Sequence[str] | None, name: str, epoch: int, lower: bool, base: Item | None
) -> tuple[Item, Collection[str] | None]:
    """The item of `values`, and the keys whose value differs from `base`'s (added, changed
    or removed; None without a base: all are new). A key twice raises. With `lower` (the
    whole-document path) keys are canonicalized to lower case; the parts path leaves them as
    they are and _decode refuses a key that is not lower case, sending the document to the
    whole path."""
    texts = values if type(values) is list else list(values or ())
    walked = None
    if base is not None and base.lower == lower:
        walked = _walk(texts, base, lower)
    if walked is not None:
        keys, changed, at = walked
        if at is not None:  # E-1's keys in E-1's order: E-1's map with the changed values
            by_key = base.by_key.copy()  # type: ignore[union-attr]
            for key, a in zip(changed, at, strict=True):
                by_key[key] = texts[a]
            return Item(texts, keys, by_key, lower), changed
    else:
        p, k = KEY_PREFIX_LEN, POSITION_KEY_LEN
        keys = [v[p:k].lower() for v in texts] if lower else [v[p:k] for v in texts]
    by_key = dict(zip(keys, texts, strict=True))
    if len(by_key) != len(texts):
        raise ParseError("the key of an operator and account appears twice", epoch, name)
    item = Item(texts, keys, by_key, lower)
    if walked is not None:
        return item, changed
    if base is None:
        return item, None
    return item, [key for key, _ in by_key.items() ^ base.by_key.items()]


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
    #: The Deposits / DepositOnHold entry values by key (what the next epoch's texts are
    #: compared with).
    deposits: Item
    holds: Item
    #: Keys whose state has a pending deposit (its effective shares can change while its text
    #: stays the same: the conversion at the end of its epoch, or a chain price that changed).
    pending: set[str]
    #: Of those, the ones whose pending epoch had ended at `epoch`, with the chain price key
    #: their effective shares were computed from: while their texts stay the same, only a
    #: change of that one price can change them.
    settled: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    #: Keys whose deposit text is canonical with its shares at _SHARES_AT (_fixed_layout):
    #: the text before and after the shares digits, and its length (what the shares-only step
    #: compares the next text with).
    frames: dict[str, tuple[str, str, int]] = field(default_factory=dict)


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
    """Withdrawals entry values by key, like _keyed (a few hundred per seed epoch)."""
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
    if base is not None and base.epoch != epoch - 1:
        raise ValueError(f"base epoch {base.epoch} is not epoch {epoch} - 1")
    base_deposits = base.deposits if base is not None else None
    base_holds = base.holds if base is not None else None
    deposits, changed_deposits = _keyed(deposit_values, "deposits", epoch, lower, base_deposits)
    holds, changed_holds = _keyed(hold_values, "depositOnHold", epoch, lower, base_holds)
    withdrawals = _by_key(withdrawal_values, "withdrawals", epoch, lower)
    rows: list[tuple[int, str, PositionState | None]] = []
    pending: set[str]
    settled: dict[str, tuple[int, int, int]]
    if base is None or changed_deposits is None or changed_holds is None:
        entries: dict[str, PositionState] = {}
        changed: Collection[str] = deposits.by_key.keys() | holds.by_key.keys()
        pending = set()
        settled = {}
        frames: dict[str, tuple[str, str, int]] = {}
        holds_changed: Collection[str] = changed
    else:
        # Only the keys whose deposit or hold text differs from E-1's (or appeared, or
        # vanished) are looked at; every other key keeps E-1's state object as it is.
        entries = base.entries.copy()
        changed = {*changed_deposits, *changed_holds}
        pending = base.pending - changed
        settled = base.settled.copy()
        for key in changed:
            settled.pop(key, None)
        frames = base.frames.copy()
        holds_changed = set(changed_holds)
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
    deposits_get = deposits.by_key.get
    holds_get = holds.by_key.get
    entries_get = entries.get
    base_deposits_get = (base_deposits or _NO_ITEM).by_key.get
    base_holds_get = (base_holds or _NO_ITEM).by_key.get
    frames_get = frames.get
    hex32 = _HEX32.fullmatch
    for key in changed:
        d = deposits_get(key)
        b = entries_get(key)
        if b is not None and d is not None and key not in holds_changed:
            frame = frames_get(key)
            if (
                frame is not None
                and len(d) == frame[2]
                and d.startswith(frame[0])
                and d.endswith(frame[1])
                and hex32(d, _SHARES_AT, _SHARES_END) is not None
            ):
                # The shares-only step (see the module docstring): E-1's fields, new shares;
                # the text keeps E-1's frame.
                known = int(d[_SHARES_AT:_SHARES_END], 16)
                pending_epoch = b[_PENDING_EPOCH]
                if pending_epoch is None or pending_epoch >= epoch:
                    effective = known
                else:
                    price = prices_get((b[0], b[4], pending_epoch))  # type: ignore[arg-type]
                    effective = None if price is None else known + price * b[6] // PERQ  # type: ignore[operator]
                    settled[key] = (b[0], b[4], pending_epoch)  # type: ignore[assignment]
                if pending_epoch is not None:
                    pending.add(key)
                state = (b[0], b[1], known, b[3], b[4], pending_epoch, b[6], b[7], effective, b[9])
                if state != b:
                    entries[key] = state
                    rows.append((b[0], b[1], state))
                continue
        h = holds_get(key)
        if d is None and h is None:  # held at E-1, gone at E: a closing row
            frames.pop(key, None)
            if b is not None:
                del entries[key]
                rows.append((b[0], b[1], None))
            continue
        # A text equal to E-1's decodes to E-1's fields (checked when E-1 was built): only
        # the other item's text is decoded (~50 changed holds per seed epoch).
        keep_d = keep_h = False
        if b is not None:
            keep_d = d is not None and base_deposits_get(key) == d
            keep_h = h is not None and base_holds_get(key) == h
        new_state, canonical = _decode_position(
            key, d, h, epoch, prices_get, b if keep_d or keep_h else None, keep_d, keep_h
        )
        if d is None:
            frames.pop(key, None)
        elif not keep_d:  # (a kept text keeps its frame, or its lack of one)
            if canonical and _fixed_layout(d):
                frames[key] = (d[:_SHARES_AT], d[_SHARES_END:], len(d))
            else:
                frames.pop(key, None)
        if d is not None and new_state[_PENDING_EPOCH] is not None:
            pending.add(key)
            if new_state[_PENDING_EPOCH] < epoch:
                settled[key] = (new_state[0], new_state[4], new_state[5])  # type: ignore[assignment]
        if b is not None and new_state == b:
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
        epoch,
        revision,
        head_domain_number,
        entries,
        w_entries,
        deposits,
        holds,
        pending,
        settled,
        frames,
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
) -> tuple[PositionState, bool]:
    """The state of `key` from its texts, and whether the deposit text was decoded by
    _DEPOSIT_RE. `keep_deposit` / `keep_hold`: that text equals E-1's, whose decoded fields
    `before` holds (its effective shares are recomputed all the same)."""
    operator_id = account = None
    fields: tuple[int | None, ...] = (None, None, None, None, None, None)
    effective: int | None = None
    on_hold: int | None = None
    # Every text decoded here matched the canonical expressions (whose key is lower-case hex,
    # the very slice the dicts are keyed by): then the case check holds by construction.
    canonical = True
    deposit_canonical = False
    if deposit is not None:
        if keep_deposit:
            assert before is not None
            operator_id, account = before[0], before[1]
            fields = before[2:8]
        else:
            m = _DEPOSIT_RE.fullmatch(deposit)
            if m is not None:  # the canonical text: the same fields as deposit_fields gives
                deposit_canonical = True
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
    state = (operator_id, account, *fields, effective, on_hold)
    return state, deposit_canonical  # type: ignore[return-value]
