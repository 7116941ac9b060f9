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
    prefix = "0x" + DOMAINS_PALLET + item
    if len(value) < POSITION_KEY_LEN + 1 or not value.startswith(prefix):
        raise ValueError("not a storage key of this item")
    if value[POSITION_KEY_LEN] != ",":
        raise ValueError("entry value has no payload after the storage key")
    raw = bytes.fromhex(value[KEY_PREFIX_LEN:POSITION_KEY_LEN])
    return int.from_bytes(raw[:8], "little"), raw[8:], value[POSITION_KEY_LEN + 1 :]


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
    except ParseError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
        raise ParseError(reason, epoch, f"{name}.entries[{index}]") from None


def _payload(name: str, index: int, epoch: int, text: str) -> Mapping[str, Any]:
    obj = load_json(text)
    if not isinstance(obj, Mapping):
        raise ParseError("payload is not a JSON object", epoch, f"{name}.entries[{index}]")
    return obj


def _head_domain_number(raw: Any, epoch: int) -> int | None:
    """The domain's head block (a decimal string or number; comma-grouped from toHuman): what
    unlock blocks are compared with. None when the dump lacks it."""
    if raw is None:
        return None
    try:
        return decode_grouped(raw) if type(raw) is str and "," in raw else decode_decimal(raw)
    except ValueError as exc:
        raise ParseError(str(exc), epoch, "headDomainNumber") from None


def parse_positions(doc: Mapping[str, Any], epoch: int) -> Positions:
    """Every nominator position of a Format A document (`epoch` is the document's, already
    validated by the main parser). Items the dump lacks give no positions."""
    deposits: list[Deposit] = []
    for index, operator_id, account, text in _values(doc, "deposits", DEPOSITS_ITEM, epoch):
        with _entry("deposits", index, epoch):
            obj = _payload("deposits", index, epoch, text)
            known, pending = obj["known"], obj["pending"]
            converting = None
            if pending is not None:
                domain_id, domain_epoch = _epoch_pair(pending["effectiveDomainEpoch"])
                converting = PendingDeposit(
                    domain_id,
                    domain_epoch,
                    decode_u128(pending["amount"]),
                    decode_u128(pending["storageFeeDeposit"]),
                )
            deposits.append(
                Deposit(
                    operator_id,
                    account,
                    decode_u128(known["shares"]),
                    decode_u128(known["storageFeeDeposit"]),
                    converting,
                )
            )
    withdrawals: list[Withdrawal] = []
    for index, operator_id, account, text in _values(doc, "withdrawals", WITHDRAWALS_ITEM, epoch):
        with _entry("withdrawals", index, epoch):
            obj = _payload("withdrawals", index, epoch, text)
            in_shares = obj["withdrawalInShares"]
            shares = None
            if in_shares is not None:
                domain_id, domain_epoch = _epoch_pair(in_shares["domainEpoch"])
                shares = WithdrawalInShares(
                    domain_id,
                    domain_epoch,
                    _block(in_shares["unlockAtConfirmedDomainBlockNumber"]),
                    decode_u128(in_shares["shares"]),
                    decode_u128(in_shares["storageFeeRefund"]),
                )
            if type(obj["withdrawals"]) is not list:
                raise ValueError("'withdrawals' is not a list")
            unlocking = tuple(
                Unlocking(
                    _block(w["unlockAtConfirmedDomainBlockNumber"]),
                    decode_u128(w["amountToUnlock"]),
                    decode_u128(w["storageFeeRefund"]),
                )
                for w in obj["withdrawals"]
            )
            withdrawals.append(
                Withdrawal(
                    operator_id,
                    account,
                    decode_u128(obj["totalWithdrawalAmount"]),
                    decode_u128(obj["totalStorageFeeWithdrawal"]),
                    unlocking,
                    shares,
                )
            )
    holds: list[DepositOnHold] = []
    for index, operator_id, account, text in _values(
        doc, "depositOnHold", DEPOSIT_ON_HOLD_ITEM, epoch
    ):
        with _entry("depositOnHold", index, epoch):
            holds.append(DepositOnHold(operator_id, account, decode_decimal(text)))
    return Positions(
        epoch,
        _head_domain_number(doc.get("headDomainNumber"), epoch),
        tuple(sorted(deposits, key=lambda d: (d.operator_id, d.account))),
        tuple(sorted(withdrawals, key=lambda w: (w.operator_id, w.account))),
        tuple(sorted(holds, key=lambda h: (h.operator_id, h.account))),
    )


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
