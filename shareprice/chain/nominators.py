"""Nominator positions in a storage dump: `deposits`, `withdrawals` and `depositOnHold`, decoded.

A share price exists so that a nominator knows what a stake is worth; these items say what each
nominator holds with each operator. Keys are the Identity-hashed `(operator id, account)` of
`Domains.Deposits`, `Domains.Withdrawals` and `Domains.DepositOnHold`; values are JSON (deposits,
withdrawals) or a decimal balance (on hold). Amounts are 0x-hex u128 strings or small numbers.

The chain converts a pending deposit lazily: until the nominator acts again, `known.shares`
stays as it was (often 0) and the deposit sits in `pending` with the domain epoch it became
effective in. Its shares are fixed once that epoch has ended, at that epoch's chain price P
(shares per stake, Perquintill): `known + floor(P * amount / 10**18)`. A pending deposit of the
current epoch is still pending. Exact integers throughout; strict like the rest of the parser:
a malformed entry is a ParseError naming the epoch, the item and the entry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shareprice.chain.codec import (
    DOMAINS_PALLET,
    KEY_PREFIX_LEN,
    decode_decimal,
    decode_grouped,
    decode_u128,
)
from shareprice.chain.parser import ParseError, load_json
from shareprice.chain.records import PERQ

DEPOSITS_ITEM = "74a614db8021c6bd0a028aafdf29dd08"
WITHDRAWALS_ITEM = "5eb75f5fdeadda8841398b656c7e353d"
DEPOSIT_ON_HOLD_ITEM = "1ca7f84f7c82084ab74e8cf7f7e0149a"
#: Key: prefix + operator id (u64 LE, 16 hex) + account (32 bytes, 64 hex).
POSITION_KEY_LEN = KEY_PREFIX_LEN + 16 + 64


@dataclass(frozen=True, slots=True)
class PendingDeposit:
    domain_id: int
    domain_epoch: int  # the epoch the deposit takes effect in; converted once it has ended
    amount: int
    storage_fee_deposit: int


@dataclass(frozen=True, slots=True)
class Deposit:
    operator_id: int
    account: bytes
    known_shares: int
    known_storage_fee_deposit: int
    pending: PendingDeposit | None

    @property
    def storage_fee_deposit(self) -> int:
        """All storage fees this deposit holds (known and pending)."""
        return self.known_storage_fee_deposit + (
            self.pending.storage_fee_deposit if self.pending else 0
        )


@dataclass(frozen=True, slots=True)
class WithdrawalInShares:
    domain_id: int
    domain_epoch: int
    unlock_block: int
    shares: int
    storage_fee_refund: int


@dataclass(frozen=True, slots=True)
class Unlocking:
    unlock_block: int
    amount: int
    storage_fee_refund: int


@dataclass(frozen=True, slots=True)
class Withdrawal:
    operator_id: int
    account: bytes
    total_amount: int
    total_storage_fee: int
    unlocking: tuple[Unlocking, ...]
    in_shares: WithdrawalInShares | None


@dataclass(frozen=True, slots=True)
class DepositOnHold:
    operator_id: int
    account: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Positions:
    epoch: int
    head_domain_number: int | None
    deposits: tuple[Deposit, ...]
    withdrawals: tuple[Withdrawal, ...]
    holds: tuple[DepositOnHold, ...]


def _key(value: str, item: str) -> tuple[int, bytes, str]:
    operator_id, account, payload = position_key(value, item)
    return operator_id, bytes.fromhex(account), payload


def position_key(value: str, item: str) -> tuple[int, str, str]:
    """(operator id, account as 64 lowercase hex digits, payload text) of an entry value
    '0x<prefix><operator u64 LE><account>,<payload>'; ValueError when it is not one."""
    prefix = "0x" + DOMAINS_PALLET + item
    if len(value) < POSITION_KEY_LEN + 1 or not value.startswith(prefix):
        raise ValueError("not a storage key of this item")
    if value[POSITION_KEY_LEN] != ",":
        raise ValueError("entry value has no payload after the storage key")
    hex_key = value[KEY_PREFIX_LEN:POSITION_KEY_LEN]
    if not hex_key.isascii() or not hex_key.isalnum():  # fromhex would skip whitespace
        raise ValueError("storage key is not hex")
    raw = bytes.fromhex(hex_key)
    return int.from_bytes(raw[:8], "little"), raw[8:].hex(), value[POSITION_KEY_LEN + 1 :]


def _epoch_pair(raw: Any) -> tuple[int, int]:
    if type(raw) is not list or len(raw) != 2 or not all(type(v) is int and v >= 0 for v in raw):
        raise ValueError(f"expected [domain, epoch], got {raw!r}"[:100])
    return raw[0], raw[1]


def _block(raw: Any) -> int:
    if type(raw) is not int or raw < 0:
        raise ValueError(f"expected a block number, got {raw!r}"[:100])
    return raw


def _entries(doc: Mapping[str, Any], name: str, epoch: int) -> list[Any]:
    dump = doc.get(name)
    if dump is None:
        return []
    if not isinstance(dump, Mapping) or type(dump.get("entries")) is not list:
        raise ParseError("expected a storage dump object with 'entries'", epoch, name)
    entries = dump["entries"]
    if dump.get("count") is not None and dump["count"] != len(entries):
        raise ParseError(f"count {dump['count']!r} but {len(entries)} entries", epoch, name)
    return entries


def _values(doc: Mapping[str, Any], name: str, item: str, epoch: int):
    for index, entry in enumerate(_entries(doc, name, epoch)):
        with _entry(name, index, epoch):
            value = entry["value"]
            if type(value) is not str:
                raise ValueError("entry value is not a string")
            operator_id, account, payload = _key(value, item)
        yield index, operator_id, account, payload


@contextmanager
def _entry(name: str, index: int, epoch: int) -> Iterator[None]:
    """Any decoding failure inside becomes a ParseError naming epoch, item and entry."""
    try:
        yield
    except ParseError as exc:
        if exc.epoch is None:  # e.g. invalid JSON from load_json: say where
            raise ParseError(exc.reason, epoch, f"{name}.entries[{index}]") from None
        raise
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
        raise ParseError(reason, epoch, f"{name}.entries[{index}]") from None


def _object(text: str) -> Mapping[str, Any]:
    obj = load_json(text)
    if not isinstance(obj, Mapping):
        raise ValueError("payload is not a JSON object")
    return obj


#: A Deposits payload decoded: (known shares, known storage fee, pending domain, pending epoch,
#: pending amount, pending storage fee); the pending four are None when nothing is pending.
DepositFields = tuple[int, int, int | None, int | None, int | None, int | None]
#: An unlocking withdrawal: (unlock block, amount, storage fee refund).
UnlockingFields = tuple[int, int, int]
#: A Withdrawals payload decoded: (total amount, total storage fee, in-shares domain, epoch,
#: unlock block, shares, storage fee refund (those five None without withdrawalInShares),
#: the unlocking list).
WithdrawalFields = tuple[
    int,
    int,
    int | None,
    int | None,
    int | None,
    int | None,
    int | None,
    tuple[UnlockingFields, ...],
]


def deposit_fields(payload: str) -> DepositFields:
    """One Deposits payload, strictly (KeyError, TypeError, ValueError or ParseError when
    malformed): plain ints, no dataclass, for the backfill's per-entry path."""
    obj = _object(payload)
    known, pending = obj["known"], obj["pending"]
    shares, fee = decode_u128(known["shares"]), decode_u128(known["storageFeeDeposit"])
    if pending is None:
        return shares, fee, None, None, None, None
    domain_id, domain_epoch = _epoch_pair(pending["effectiveDomainEpoch"])
    return (
        shares,
        fee,
        domain_id,
        domain_epoch,
        decode_u128(pending["amount"]),
        decode_u128(pending["storageFeeDeposit"]),
    )


def withdrawal_fields(payload: str) -> WithdrawalFields:
    """One Withdrawals payload, strictly (see deposit_fields)."""
    obj = _object(payload)
    in_shares = obj["withdrawalInShares"]
    if in_shares is not None:
        domain_id, domain_epoch = _epoch_pair(in_shares["domainEpoch"])
        shares: tuple[int | None, ...] = (
            domain_id,
            domain_epoch,
            _block(in_shares["unlockAtConfirmedDomainBlockNumber"]),
            decode_u128(in_shares["shares"]),
            decode_u128(in_shares["storageFeeRefund"]),
        )
    else:
        shares = (None, None, None, None, None)
    if type(obj["withdrawals"]) is not list:
        raise ValueError("'withdrawals' is not a list")
    unlocking = tuple(
        (
            _block(w["unlockAtConfirmedDomainBlockNumber"]),
            decode_u128(w["amountToUnlock"]),
            decode_u128(w["storageFeeRefund"]),
        )
        for w in obj["withdrawals"]
    )
    return (
        decode_u128(obj["totalWithdrawalAmount"]),
        decode_u128(obj["totalStorageFeeWithdrawal"]),
        *shares,
        unlocking,
    )  # type: ignore[return-value]


def hold_amount(payload: str) -> int:
    """One DepositOnHold payload: a decimal balance."""
    return decode_decimal(payload)


def head_domain_number(raw: Any, epoch: int) -> int | None:
    """The domain's head block (a decimal string or number; comma-grouped from toHuman): what
    unlock blocks are compared with. None when the dump lacks it."""
    if raw is None:
        return None
    try:
        return decode_grouped(raw) if type(raw) is str and "," in raw else decode_decimal(raw)
    except ValueError as exc:
        raise ParseError(str(exc), epoch, "headDomainNumber") from None


def _unique(rows: Sequence[Any], name: str, epoch: int) -> None:
    """Rows sorted by (operator, account): a key twice is a malformed dump (the chain's map
    holds one value per key), and the tables could not hold both."""
    for a, b in zip(rows, rows[1:], strict=False):
        if (a.operator_id, a.account) == (b.operator_id, b.account):
            raise ParseError(
                f"operator {b.operator_id}, account 0x{b.account.hex()} appears twice", epoch, name
            )


def parse_positions(doc: Mapping[str, Any], epoch: int) -> Positions:
    """Every nominator position of a Format A document (`epoch` is the document's, already
    validated by the main parser). Items the dump lacks give no positions."""
    deposits: list[Deposit] = []
    for index, operator_id, account, text in _values(doc, "deposits", DEPOSITS_ITEM, epoch):
        with _entry("deposits", index, epoch):
            shares, fee, domain_id, domain_epoch, amount, pending_fee = deposit_fields(text)
            converting = None
            if domain_id is not None:
                assert domain_epoch is not None and amount is not None and pending_fee is not None
                converting = PendingDeposit(domain_id, domain_epoch, amount, pending_fee)
            deposits.append(Deposit(operator_id, account, shares, fee, converting))
    withdrawals: list[Withdrawal] = []
    for index, operator_id, account, text in _values(doc, "withdrawals", WITHDRAWALS_ITEM, epoch):
        with _entry("withdrawals", index, epoch):
            total, total_fee, w_domain, w_epoch, unlock, w_shares, refund, unlocking = (
                withdrawal_fields(text)
            )
            in_shares = None
            if w_domain is not None:
                assert w_epoch is not None and unlock is not None
                assert w_shares is not None and refund is not None
                in_shares = WithdrawalInShares(w_domain, w_epoch, unlock, w_shares, refund)
            withdrawals.append(
                Withdrawal(
                    operator_id,
                    account,
                    total,
                    total_fee,
                    tuple(Unlocking(*u) for u in unlocking),
                    in_shares,
                )
            )
    holds: list[DepositOnHold] = []
    for index, operator_id, account, text in _values(
        doc, "depositOnHold", DEPOSIT_ON_HOLD_ITEM, epoch
    ):
        with _entry("depositOnHold", index, epoch):
            holds.append(DepositOnHold(operator_id, account, hold_amount(text)))
    result = Positions(
        epoch,
        head_domain_number(doc.get("headDomainNumber"), epoch),
        tuple(sorted(deposits, key=lambda d: (d.operator_id, d.account))),
        tuple(sorted(withdrawals, key=lambda w: (w.operator_id, w.account))),
        tuple(sorted(holds, key=lambda h: (h.operator_id, h.account))),
    )
    _unique(result.deposits, "deposits", epoch)
    _unique(result.withdrawals, "withdrawals", epoch)
    _unique(result.holds, "depositOnHold", epoch)
    return result


def effective_shares(
    deposit: Deposit, chain_prices: Mapping[tuple[int, int], int], current_epoch: int
) -> int | None:
    """The shares a deposit holds at `current_epoch`: known shares plus its pending amount
    converted at the chain price of the pending epoch once that epoch has ended.

    `chain_prices` maps (operator id, domain epoch) to shares per stake (Perquintill). None when
    the pending epoch has ended but its price is not known: a hole, never a guess.
    """
    pending = deposit.pending
    if pending is None or pending.domain_epoch >= current_epoch:
        return deposit.known_shares
    price = chain_prices.get((deposit.operator_id, pending.domain_epoch))
    if price is None:
        return None
    return deposit.known_shares + price * pending.amount // PERQ


def stake_for_shares(shares: int, chain_price: int) -> int:
    """Stake a withdrawal of `shares` is owed at chain price P (shares per stake): the chain
    rounds in its own favour, floor(shares * 10**18 / (P + 1))."""
    return shares * PERQ // (chain_price + 1)


def position_value(shares: int, share_price_perq: int) -> int:
    """What `shares` are worth in Shannons at our stake-per-share price (Perquintill)."""
    return shares * share_price_perq // PERQ


def pending_total(deposits: Sequence[Deposit]) -> int:
    """Stake still pending conversion across `deposits`."""
    return sum(d.pending.amount for d in deposits if d.pending is not None)
