"""Persistent nominators for the generator: who holds what with each operator, epoch by epoch.

Why a model and not random entries: the positions readers (the backfill's nominator_positions,
the checks, the Nominators page) rely on rules the chain keeps, and those rules only mean
something on data that obeys them. Each operator has a pool of nominators (its owner first, from
registration); nominators join, deposit again, withdraw part or all, and claim unlocked stake.
Everything is exact integers, following the chain:

- A deposit of `amount` (the staked part) puts `amount // 4` more into the storage fund (the
  chain's 20% of the whole payment), on the deposit's `storageFeeDeposit` and immediately on the
  operator's `totalStorageFeeDeposit`. It is `pending` with effectiveDomainEpoch [0, E] and
  converts at the end of E at that epoch's chain price P (shares per stake): floor(P * amount /
  10**18) shares. Lazily: `known` only absorbs it when the nominator acts again, so many entries
  keep `known.shares = 0` with an old pending, as on the chain.
- A withdrawal of s shares first converts the nominator's ended pending deposit and ended
  withdrawal, then takes s from `known.shares`, refunds the same fraction of `known`'s storage fee
  (leaving the operator's total at once) and of the principal on hold, and queues
  `withdrawalInShares` (epoch E, unlock block). Its stake, floor(s * 10**18 / (P + 1)) at E's
  price, moves into the unlocking `withdrawals` list when the nominator acts again; a claim once
  the unlock block <= headDomainNumber removes unlocked entries, and the entry when none is left.
  Withdrawing everything leaves the Deposits and DepositOnHold entries in place at 0 shares (as
  the chain's do_withdraw_stake does) until the last withdrawal is claimed (do_unlock_funds then
  removes all three), so Withdrawals keys stay a subset of Deposits keys.
- The operator converts the epoch's deposits in one sum, floor(P * sum / 10**18), which can
  exceed the sum of each deposit's floor by less than the number of deposits: the rounding dust
  that makes `currentTotalShares - sum(effective shares)` a small non-negative number on the real
  chain (19 and 15 on the epoch-2647 sample). On the chain dust accumulates forever; here it is
  kept at most the number of Deposits entries (a conversion adds less dust, and a nominator
  leaving takes the excess with it), so the documented rounding bound holds in every document.
- Withdrawn shares leave `known` at once but the operator's `currentTotalShares` only at the end
  of the epoch (`withdrawalsInEpoch`): within the epoch of a withdrawal the difference above also
  holds those shares.
- The operator's nomination tax is staked for its owner: the owner's `known.shares` grows by the
  shares the tax buys, exactly what the operator's total grows by.

Chain prices stay available: a pool keeps P of every epoch some pending deposit or withdrawal
still references (`refs`), so the generator keeps those operatorEpochSharePrice entries in the
documents beyond its history window.

Rendering is cached per nominator and per pool (most pools change in few epochs), and each storage
dump is written as one pre-serialised JSON fragment: position entries are most of a document.
"""

from __future__ import annotations

from bisect import insort

import numpy as np
import orjson

from shareprice.chain import codec
from shareprice.chain.nominators import DEPOSIT_ON_HOLD_ITEM
from shareprice.chain.records import PERQ

__all__ = [
    "Nominator",
    "Pool",
    "dump_fragment",
    "entry_text",
    "head_domain_number",
    "nominator_targets",
    "u128_json",
]

#: Storage fee = staked amount // STORAGE_FEE_DIVISOR (20% of the whole payment, as the chain).
STORAGE_FEE_DIVISOR = 4
#: Domain blocks per epoch in the generated headDomainNumber (epoch * 100 + 99).
BLOCKS_PER_EPOCH = 100


def u128_json(value: int) -> str:
    """The JSON text polkadot.js writes for a u128 (number up to 52 bits, else padded hex)."""
    return f'"0x{value:032x}"' if value.bit_length() > 52 else str(value)


def head_domain_number(epoch: int) -> int:
    """The generated domain head block in the document of `epoch` (what unlocks compare with)."""
    return epoch * BLOCKS_PER_EPOCH + BLOCKS_PER_EPOCH - 1


class Nominator:
    """One account's Deposits, DepositOnHold and Withdrawals entries with one operator."""

    __slots__ = (
        "account",
        "deposit_text",
        "has_deposit",
        "hold",
        "kept",
        "hold_text",
        "known_fee",
        "known_shares",
        "pending_amount",
        "pending_epoch",
        "pending_fee",
        "unlocking",
        "w_epoch",
        "w_refund",
        "w_shares",
        "w_unlock",
        "withdrawal_text",
    )

    def __init__(self, account: str) -> None:
        self.account = account  # 64 hex digits (AccountId32)
        self.has_deposit = False
        #: Withdrew all: the Deposits entry stays, at 0 shares, until the withdrawals are claimed
        #: (the chain's do_withdraw_stake keeps it; do_unlock_funds removes it with the last one).
        self.kept = False
        self.known_shares = self.known_fee = self.hold = 0
        self.pending_epoch = -1  # -1: no pending deposit
        self.pending_amount = self.pending_fee = 0
        self.w_epoch = -1  # -1: no withdrawalInShares
        self.w_unlock = self.w_shares = self.w_refund = 0
        self.unlocking: list[tuple[int, int, int]] = []  # (unlock block, amount, fee refund)
        self.deposit_text: str | None = None
        self.hold_text: str | None = None
        self.withdrawal_text: str | None = None

    @property
    def has_withdrawal(self) -> bool:
        return self.w_epoch >= 0 or bool(self.unlocking)


def _escaped(value: str) -> str:
    """An entry's value as the inside of a JSON string, closing the entry object. Values hold
    only hex, digits, punctuation and quotes, so quotes are all that needs escaping."""
    return value.replace('"', '\\"') + '"}'


class Pool:
    """The nominators of one operator, and what their actions did to it this epoch."""

    def __init__(
        self, operator_id: int, owner: str, target: int, released: list[tuple[int, int]]
    ) -> None:
        self.operator_id = operator_id
        self.operator_le = codec.encode_le(operator_id, 8)
        self.owner = owner
        #: How many nominators this operator tends to (joins refill it up to here).
        self.target = target
        self.members: dict[str, Nominator] = {}
        self.order: list[str] = []  # member accounts in storage-key order
        self.deposit_keys = 0  # members with a Deposits entry
        #: currentTotalShares - withdrawalsInEpoch - sum(effective shares): conversion dust.
        self.dust = 0
        #: The operator's totalStorageFeeDeposit: sum of every deposit's fees (known + pending).
        self.fee = 0
        #: epoch -> pending deposits and withdrawalInShares referencing this operator's price then.
        self.refs: dict[int, int] = {}
        #: epoch -> chain price (shares per stake) for every referenced, ended epoch.
        self.prices: dict[int, int] = {}
        #: (operator, epoch) no longer referenced, shared by all pools: the generator drops
        #: the chain entries it kept for them.
        self.released = released
        #: Members with a Withdrawals entry (insertion-ordered: deterministic iteration).
        self.withdrawing: dict[str, Nominator] = {}
        # This epoch's queue.
        self.deposits_in_epoch = 0
        self.withdrawals_in_epoch = 0
        self._epoch_depositors: list[Nominator] = []
        self._epoch_withdrawers: dict[str, Nominator] = {}
        self._texts: tuple[list[str], list[str], list[str]] | None = None
        # The tax changes the owner's entry nearly every epoch: patched in place, not re-listed.
        self._owner_index = -1
        self._owner_dirty = False

    # --- membership ---------------------------------------------------------------------------

    def join(self, account: str) -> Nominator:
        nominator = Nominator(account)
        self.members[account] = nominator
        insort(self.order, account)
        self._texts = None
        return nominator

    def _leave_if_empty(self, nominator: Nominator) -> None:
        if not nominator.has_deposit and not nominator.has_withdrawal:
            del self.members[nominator.account]
            self.order.remove(nominator.account)

    def depositors(self) -> list[Nominator]:
        """Members with a Deposits entry, in storage order."""
        members = self.members
        return [members[a] for a in self.order if members[a].has_deposit]

    # --- price references ---------------------------------------------------------------------

    def _ref(self, epoch: int) -> None:
        self.refs[epoch] = self.refs.get(epoch, 0) + 1

    def _deref(self, epoch: int) -> None:
        left = self.refs[epoch] - 1
        if left:
            self.refs[epoch] = left
        else:
            del self.refs[epoch]
            self.prices.pop(epoch, None)
            self.released.append((self.operator_id, epoch))

    def effective_shares(self, nominator: Nominator, epoch: int) -> int:
        """known + the pending deposit converted at its epoch's price once that epoch ended."""
        pe = nominator.pending_epoch
        if 0 <= pe < epoch:
            return nominator.known_shares + self.prices[pe] * nominator.pending_amount // PERQ
        return nominator.known_shares

    def _convert(self, nominator: Nominator, epoch: int) -> None:
        """What the chain does when a nominator acts: ended pending deposit into `known`, ended
        withdrawalInShares into the unlocking list at its epoch's price."""
        pe = nominator.pending_epoch
        if 0 <= pe < epoch:
            nominator.known_shares += self.prices[pe] * nominator.pending_amount // PERQ
            nominator.known_fee += nominator.pending_fee
            nominator.pending_epoch = -1
            nominator.pending_amount = nominator.pending_fee = 0
            nominator.deposit_text = None
            self._deref(pe)
        we = nominator.w_epoch
        if 0 <= we < epoch:
            amount = nominator.w_shares * PERQ // (self.prices[we] + 1)
            nominator.unlocking.append((nominator.w_unlock, amount, nominator.w_refund))
            nominator.w_epoch = -1
            nominator.w_shares = nominator.w_refund = nominator.w_unlock = 0
            nominator.withdrawal_text = None
            self._deref(we)

    # --- actions during an epoch ----------------------------------------------------------------

    def deposit(self, nominator: Nominator, amount: int, epoch: int) -> None:
        self._convert(nominator, epoch)
        fee = amount // STORAGE_FEE_DIVISOR
        if nominator.pending_epoch == epoch:
            nominator.pending_amount += amount
            nominator.pending_fee += fee
        else:
            nominator.pending_epoch = epoch
            nominator.pending_amount, nominator.pending_fee = amount, fee
            self._ref(epoch)
            self._epoch_depositors.append(nominator)
        if not nominator.has_deposit:
            nominator.has_deposit = True
            nominator.kept = False
            self.deposit_keys += 1
        nominator.hold += amount
        nominator.deposit_text = nominator.hold_text = None
        self.fee += fee
        self.deposits_in_epoch += amount
        self._texts = None

    def withdraw(self, nominator: Nominator, shares: int, epoch: int, unlock_block: int) -> int:
        """Withdraw `shares` (at most the nominator's converted shares; all of them: leaves the
        operator). Not with a pending deposit of this epoch (the chain would refuse). Returns the
        shares queued (a leaving nominator may also take rounding dust, see the module doc)."""
        self._convert(nominator, epoch)
        held = nominator.known_shares
        if not 0 < shares <= held or nominator.pending_epoch == epoch:
            raise ValueError(
                f"operator {self.operator_id} epoch {epoch}: cannot withdraw {shares} of {held} "
                "shares"
            )
        refund = nominator.known_fee * shares // held
        released = nominator.hold * shares // held
        nominator.known_shares -= shares
        nominator.known_fee -= refund
        nominator.hold -= released
        self.fee -= refund
        if nominator.known_shares == 0:  # all of it: out of the pool; its entries stay at 0
            nominator.has_deposit = False
            nominator.kept = True
            self.deposit_keys -= 1
            nominator.known_fee = nominator.hold = 0  # (already 0: the whole fraction)
            if self.dust > self.deposit_keys:
                extra = self.dust - self.deposit_keys
                shares += extra
                self.dust -= extra
        if nominator.w_epoch == epoch:
            nominator.w_shares += shares
            nominator.w_refund += refund
        else:
            nominator.w_epoch = epoch
            nominator.w_unlock = unlock_block
            nominator.w_shares, nominator.w_refund = shares, refund
            self._ref(epoch)
        self._epoch_withdrawers[nominator.account] = nominator
        self.withdrawing[nominator.account] = nominator
        nominator.deposit_text = nominator.hold_text = nominator.withdrawal_text = None
        self.withdrawals_in_epoch += shares
        self._texts = None
        return shares

    def claim(self, nominator: Nominator, epoch: int, head: int) -> bool:
        """Unlock what is unlockable at `head`; True when something was claimed."""
        self._convert(nominator, epoch)
        keep = [u for u in nominator.unlocking if u[0] > head]
        if len(keep) == len(nominator.unlocking):
            return False
        nominator.unlocking = keep
        nominator.withdrawal_text = None
        if not nominator.has_withdrawal:
            del self.withdrawing[nominator.account]
            nominator.kept = False  # the last withdrawal claimed: the 0-share entries go too
            self._leave_if_empty(nominator)
        self._texts = None
        return True

    def credit_owner(self, shares: int) -> None:
        """The nomination tax, staked for the owner: its shares join the owner's known shares."""
        owner = self.members[self.owner]
        owner.known_shares += shares
        owner.deposit_text = None
        self._owner_dirty = True

    # --- the end of the epoch -----------------------------------------------------------------

    def finalize(self, epoch: int, price: int) -> tuple[int, int, int]:
        """Convert the epoch's queue at chain price `price` (shares per stake), recorded for
        `epoch`. Returns (shares added for deposits, shares withdrawn, stake owed for them)."""
        if self.refs.get(epoch):
            self.prices[epoch] = price
        total = self.deposits_in_epoch
        each = sum(price * n.pending_amount // PERQ for n in self._epoch_depositors)
        dust = min(price * total // PERQ - each, max(0, self.deposit_keys - self.dust))
        self.dust += dust
        owed = sum(n.w_shares * PERQ // (price + 1) for n in self._epoch_withdrawers.values())
        withdrawn = self.withdrawals_in_epoch
        self.deposits_in_epoch = self.withdrawals_in_epoch = 0
        self._epoch_depositors = []
        self._epoch_withdrawers = {}
        return each + dust, withdrawn, owed

    # --- rendering ----------------------------------------------------------------------------

    def texts(self) -> tuple[list[str], list[str], list[str]]:
        """(deposits, depositOnHold, withdrawals) entry values in storage order, escaped for
        `dump_fragment`; cached until something in the pool changes."""
        if self._texts is not None:
            if self._owner_dirty:
                owner = self.members[self.owner]
                owner.deposit_text = _escaped(_deposit_value(self.operator_le, owner))
                self._texts[0][self._owner_index] = owner.deposit_text
                self._owner_dirty = False
            return self._texts
        deposits: list[str] = []
        holds: list[str] = []
        withdrawals: list[str] = []
        members, op = self.members, self.operator_le
        for account in self.order:
            n = members[account]
            if n.has_deposit or n.kept:
                if n.deposit_text is None:
                    n.deposit_text = _escaped(_deposit_value(op, n))
                if n.hold_text is None:
                    n.hold_text = _escaped(
                        codec.storage_key(DEPOSIT_ON_HOLD_ITEM, op, account) + f",{n.hold}"
                    )
                if account == self.owner:
                    self._owner_index = len(deposits)
                deposits.append(n.deposit_text)
                holds.append(n.hold_text)
            if n.w_epoch >= 0 or n.unlocking:
                if n.withdrawal_text is None:
                    n.withdrawal_text = _escaped(_withdrawal_value(op, n))
                withdrawals.append(n.withdrawal_text)
        self._texts = (deposits, holds, withdrawals)
        self._owner_dirty = False
        return self._texts


def _deposit_value(operator_le: str, n: Nominator) -> str:
    key = codec.storage_key(codec.DEPOSITS_ITEM, operator_le, n.account)
    if n.pending_epoch >= 0:
        pending = (
            f'{{"effectiveDomainEpoch":[0,{n.pending_epoch}],'
            f'"amount":{u128_json(n.pending_amount)},'
            f'"storageFeeDeposit":{u128_json(n.pending_fee)}}}'
        )
    else:
        pending = "null"
    return (
        f'{key},{{"known":{{"shares":{u128_json(n.known_shares)},'
        f'"storageFeeDeposit":{u128_json(n.known_fee)}}},"pending":{pending}}}'
    )


def _withdrawal_value(operator_le: str, n: Nominator) -> str:
    key = codec.storage_key(codec.WITHDRAWALS_ITEM, operator_le, n.account)
    unlocking = ",".join(
        f'{{"unlockAtConfirmedDomainBlockNumber":{block},"amountToUnlock":{u128_json(amount)},'
        f'"storageFeeRefund":{u128_json(refund)}}}'
        for block, amount, refund in n.unlocking
    )
    total_amount = sum(u[1] for u in n.unlocking)
    total_fee = sum(u[2] for u in n.unlocking)
    if n.w_epoch >= 0:
        total_fee += n.w_refund
        in_shares = (
            f'{{"domainEpoch":[0,{n.w_epoch}],"unlockAtConfirmedDomainBlockNumber":{n.w_unlock},'
            f'"shares":{u128_json(n.w_shares)},"storageFeeRefund":{u128_json(n.w_refund)}}}'
        )
    else:
        in_shares = "null"
    return (
        f'{key},{{"totalWithdrawalAmount":{u128_json(total_amount)},'
        f'"totalStorageFeeWithdrawal":{u128_json(total_fee)},"withdrawals":[{unlocking}],'
        f'"withdrawalInShares":{in_shares}}}'
    )


_ENTRY_PREFIXES: list[str] = []


def entry_text(value: str) -> str:
    """An entry value ready for `dump_fragment`."""
    return _escaped(value)


def dump_fragment(values: list[str]) -> orjson.Fragment:
    """A storage dump `{"count": n, "entries": [{"key": ["<i>"], "value": "..."}]}` from values
    escaped by `Pool.texts` or `entry_text`, as one JSON fragment (orjson copies it without
    re-encoding)."""
    count = len(values)
    prefixes = _ENTRY_PREFIXES
    while len(prefixes) < count:
        prefixes.append(f'{{"key":["{len(prefixes)}"],"value":"')
    body = ",".join([p + v for p, v in zip(prefixes, values, strict=False)])
    return orjson.Fragment(f'{{"count":{count},"entries":[{body}]}}')


def nominator_targets(
    rng: np.random.Generator, operators: int, low: int, high: int, skew: float
) -> list[int]:
    """How many nominators each operator tends to: low + (high - low) * u**skew, u uniform.
    skew 1 is uniform over [low, high]; a large skew makes most operators small and a few large
    (mean low + (high - low) / (skew + 1)), as real networks look."""
    u = rng.random(operators)
    return [min(high, low + int((high - low + 1) * v)) for v in (u**skew).tolist()]
