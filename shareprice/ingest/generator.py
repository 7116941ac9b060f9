"""Realistic Format A documents, written into `epochs` exactly as the indexer would.

Why a simulation rather than random numbers: the product's checks (prices start at exactly 1.0,
only rise except at a slash, deposits do not move them, the chain's inverted record agrees with the
computed price) are only meaningful on data that obeys the staking rules. So each operator carries
exact integer stake and shares through the chain's epoch transition:

    during epoch E   rewards accrue (doc E lists them in currentEpochRewards), nominators queue
                     deposits / withdrawals (depositsInEpoch, withdrawalsInEpoch)
    end of epoch E   stake += rewards - tax; the tax is staked for the operator at the new price;
                     if anything was queued, the chain records operatorEpochSharePrice(E) =
                     shares per stake, and then converts the queue at that price
    doc E+1          shows this state (the dump of epoch E is the state after E-1, DOMAIN.md)

Nominators are persistent (shareprice.ingest.nominators_model): each operator has a pool, its
owner first; the stake and share moves above are their deposits, withdrawals and the tax staked
for the owner, and every document carries their Deposits, DepositOnHold and Withdrawals entries,
consistent with the operator's totals exactly (see that module for the rules).

Operators register over time (first visible price exactly 1e18: their first deposit converts at
1.0), some deregister (shown as deregistered until unlock, then gone), about 1% are slashed (stake
cut, shown once as slashed, then gone). Numbers are encoded like polkadot.js: u128 up to 52 bits as
JSON numbers, larger as 0x hex padded to 32 digits; the summary in toHuman comma groups.

Deterministic for a seed: every random draw comes from numpy Generators in a fixed order: one for
the operators (the same draws as before nominators were modelled) and one for the nominators.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import orjson
from sqlalchemy.engine import Engine

from shareprice.chain import codec
from shareprice.chain.records import PERQ
from shareprice.errors import ShareError
from shareprice.ingest.nominators_model import (
    BLOCKS_PER_EPOCH,
    Nominator,
    Pool,
    dump_fragment,
    entry_text,
    head_domain_number,
    nominator_targets,
)
from shareprice.ingest.nominators_model import u128_json as _u128_json

__all__ = [
    "PROFILES",
    "GeneratedDocument",
    "GenerateSummary",
    "Profile",
    "generate",
    "iter_documents",
    "nominator_targets_for",
    "resolve_profile",
]

AI3 = PERQ  # 1 AI3 = 1e18 Shannons
_RATE_SCALE = 10**15  # per-epoch reward rates as integers of 1e-15


@dataclass(frozen=True)
class Profile:
    name: str
    epochs: int
    #: Operators ever registered (ids 0..operators-1, in registration order, as on chain).
    operators: int
    #: Share of operators registering in the first `early_epochs`; the rest register later.
    early_fraction: float = 0.85
    early_epochs: int = 60
    deregister_fraction: float = 0.08
    slash_fraction: float = 0.01
    #: Per operator and epoch.
    deposit_probability: float = 0.03
    withdrawal_probability: float = 0.02
    #: A withdrawal takes uniform(0.001, withdrawal_max) of the nominator's shares. Deposits
    #: (3% of epochs, median 1% of stake) add ~0.05% of stake per epoch; withdrawals of up to
    #: 30% take ~0.3%, so stake decays to zero over a long run. The chain profiles use 3%
    #: (~0.03%): net deposits are positive and total stake grows, as on the real chain.
    withdrawal_max: float = 0.3
    #: Median reward per epoch as a fraction of stake, heavy-tailed around it. 1e-6 (~5% a year
    #: at 120 epochs a day) shows growth on short test runs; the chain profiles use 2e-8, which
    #: gives a median per-epoch price growth of ~3e-8 (the real samples: ~1.5e-8).
    growth_median: float = 1e-6
    #: Epochs of operatorEpochSharePrice history repeated in each document (the real chain
    #: repeats all of it; a window keeps documents bounded). Entries a pending deposit or
    #: withdrawal still needs stay beyond the window (lazy conversions keep old ones alive).
    chain_window: int = 32
    #: Epochs a deregistered operator stays in storage (status deregistered) before removal.
    unlock_epochs: int = 4
    #: Nominators per operator (its owner included): each operator tends to a target drawn as
    #: low + (high - low) * u**skew (see nominator_targets): skew 1 uniform, large skew heavy
    #: tailed (most operators small, a few large). Joins refill a pool towards its target with
    #: probability join_rate per missing nominator and epoch.
    nominators_low: int = 2
    nominators_high: int = 10
    nominators_skew: float = 1.0
    nominator_join_rate: float = 0.05
    #: A withdrawal by a nominator other than the owner takes all of its shares this often when
    #: they are at most twice the drawn amount (and whenever that amount is 90% of them).
    withdrawal_full_probability: float = 0.3
    #: Epochs from a withdrawal to its unlock block (the chain: ~144; shorter keeps documents
    #: small and shows unlocks), and the chance per epoch that an unlockable one is claimed.
    withdrawal_unlock_epochs: int = 14
    claim_probability: float = 0.3


PROFILES: dict[str, Profile] = {
    # What `make run` loads: ~30 operators active over 3,734 epochs (31 days, so 30-day yields
    # have data), ~0.5 GB of JSON (~135 KB per document: ~175 positions; ~130 MB before
    # nominators were modelled). 20-150 nominators on every operator made it 2.5 GB (~0.57 MB
    # per document), minutes of `make run` on a fresh machine for a demo.
    # Calibrated on the shared Auto EVM samples (tests/test_generator_calibration.py): total
    # stake grows (real: 0.30 M AI3 at epoch 218 to 2.14 M at 2647) and prices grow ~1e-8 per
    # epoch, each within 10x of the samples.
    # Nominators heavy tailed, 2-120 per operator: a few pools of 50-120 (the real chain's two
    # operators hold 105 and 72), most of a handful.
    "demo": Profile(
        "demo",
        epochs=3734,
        operators=36,
        early_epochs=40,
        chain_window=40,
        withdrawal_max=0.03,
        growth_median=2e-8,
        nominators_low=2,
        nominators_high=120,
        nominators_skew=40.0,
        nominator_join_rate=0.01,
    ),
    # The old system's scale: 3,734 epochs, ~940 operators active on average; grows like demo.
    # Nominators heavy tailed, 1-150 per operator (mean 3.3, median 1, 21 operators with 50 or
    # more), so that a document holds ~3,000 positions, ~3.1 MB per document (~0.9 MB without
    # positions), ~11.7 GB of JSON in all; ~100 per operator would be ~45 MB per document.
    "seed-scale": Profile(
        "seed-scale",
        epochs=3734,
        operators=1065,
        withdrawal_max=0.03,
        growth_median=2e-8,
        nominators_low=1,
        nominators_high=150,
        nominators_skew=65.0,
        nominator_join_rate=0.01,
    ),
    # The tests' shared data set (raw_small_url): small, with every kind of event.
    "small": Profile(
        "small",
        epochs=80,
        operators=12,
        early_epochs=8,
        deregister_fraction=0.1,
        deposit_probability=0.06,
        withdrawal_probability=0.04,
        chain_window=20,
        unlock_epochs=3,
        withdrawal_unlock_epochs=3,
    ),
}


def resolve_profile(
    profile: str | Profile, epochs: int | None = None, operators: int | None = None
) -> Profile:
    base = PROFILES[profile] if isinstance(profile, str) else profile
    changes: dict[str, int] = {}
    if epochs is not None:
        changes["epochs"] = epochs
    if operators is not None:
        changes["operators"] = operators
    resolved = dataclasses.replace(base, **changes)  # type: ignore[arg-type]
    if resolved.epochs < 1 or resolved.operators < 1:
        raise ValueError("epochs and operators must be at least 1")
    return resolved


@dataclass(frozen=True)
class GeneratedDocument:
    epoch: int
    end_block: int
    end_hash: str
    indexed_at: dt.datetime
    data: bytes  # the document's JSON (one object)
    operator_states: int  # operators with a price in it (what the parser returns)
    chain_entries: int
    positions: int = 0  # Deposits entries (= DepositOnHold entries)
    withdrawal_entries: int = 0


@dataclass(frozen=True)
class GenerateSummary:
    profile: str
    seed: int
    epochs: int
    operators: int
    operator_states: int
    chain_entries: int
    json_bytes: int
    seconds: float
    #: Deposits entries (positions) and Withdrawals entries summed over all documents.
    positions: int
    withdrawal_entries: int
    deregistered: tuple[int, ...]
    slashed: tuple[int, ...]
    #: Operator -> registration epoch (its first price is in the next epoch's document).
    registered_at: dict[int, int]

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["registered_at"] = len(self.registered_at)
        out["json_mb"] = round(self.json_bytes / 1e6, 1)
        out["seconds"] = round(self.seconds, 2)
        return out


# --- the simulation -------------------------------------------------------------------------------

_GENESIS_BLOCK = 3_850_887  # Auto EVM's domain was created at this consensus block
_GENESIS_MS = 1_755_123_700_000  # ~ when that block was produced
_BLOCK_MS = 6_000


class _Plan:
    """Everything decided up front for each operator: when it registers and how it ends."""

    def __init__(self, profile: Profile, rng: np.random.Generator) -> None:
        n, epochs = profile.operators, profile.epochs
        early = rng.random(n) < profile.early_fraction
        late_start = min(profile.early_epochs, max(epochs - 1, 0))
        reg = np.where(
            early,
            rng.integers(0, max(1, min(profile.early_epochs, epochs)), n),
            rng.integers(late_start, max(late_start + 1, epochs - 2), n),
        )
        # Ids are handed out in registration order, as the chain does.
        self.registered_at = sorted(int(r) for r in reg)
        self.tax = rng.integers(0, 21, n).tolist()
        # Heavy-tailed initial stake: median ~20,000 AI3, a few operators far larger.
        initial = np.exp(rng.normal(np.log(20_000), 1.3, n)).clip(10, 5_000_000)
        self.initial_stake = [int(v) * AI3 + int(rng.integers(0, AI3)) for v in initial]
        self.min_nominator_stake = [
            int(v) * AI3 for v in rng.choice([1, 5, 10, 100], size=n).tolist()
        ]
        self.signing_key = ["0x" + rng.bytes(32).hex() for _ in range(n)]
        # Operators differ in how well they earn (uptime, bundles): a per-operator multiplier.
        self.skill = np.exp(rng.normal(0.0, 0.4, n))
        self.deregister_at: dict[int, int] = {}
        self.slash_at: dict[int, int] = {}
        wanted_slash = _event_count(profile.slash_fraction, n)
        wanted_dereg = _event_count(profile.deregister_fraction, n)
        # Only operators with a few visible epochs before the run ends can visibly end.
        candidates = [i for i in range(n) if self.registered_at[i] + 4 <= epochs - 3]
        order = rng.permutation(len(candidates)).tolist()
        chosen = [candidates[k] for k in order]
        for i in chosen[:wanted_slash]:
            self.slash_at[i] = int(rng.integers(self.registered_at[i] + 2, epochs - 2))
        for i in chosen[wanted_slash : wanted_slash + wanted_dereg]:
            self.deregister_at[i] = int(rng.integers(self.registered_at[i] + 2, epochs - 2))


def _event_count(fraction: float, n: int) -> int:
    if fraction <= 0:
        return 0
    return max(1, round(fraction * n)) if n >= 10 else 0


_REGISTERED = '{"registered":null}'
_SLASHED = '{"slashed":null}'


def iter_documents(
    profile: str | Profile = "demo",
    seed: int = 0,
    epochs: int | None = None,
    operators: int | None = None,
) -> Iterator[GeneratedDocument]:
    """The documents of a run, one epoch at a time (never all in memory)."""
    yield from _Simulation(resolve_profile(profile, epochs, operators), seed).run()


def _nominator_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 14])


def _targets(profile: Profile, rng: np.random.Generator) -> list[int]:
    return nominator_targets(
        rng,
        profile.operators,
        profile.nominators_low,
        profile.nominators_high,
        profile.nominators_skew,
    )


def nominator_targets_for(profile: str | Profile, seed: int = 0) -> list[int]:
    """How many nominators each operator of a run tends to (ids in order): the first draws of
    the run's nominator stream, so tests and reports can see the distribution without a run."""
    return _targets(resolve_profile(profile), _nominator_rng(seed))


class _Simulation:
    def __init__(self, profile: Profile, seed: int) -> None:
        self.profile = profile
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.plan = _Plan(profile, self.rng)
        n = profile.operators
        # The nominators draw from their own stream, so the operators' draws stay as they were.
        self.nrng = _nominator_rng(seed)
        self.targets = _targets(profile, self.nrng)
        self.owner = [self.nrng.bytes(32).hex() for _ in range(n)]
        self.pools: dict[int, Pool] = {}
        self.released: list[tuple[int, int]] = []  # (operator, epoch) prices no longer needed
        self.stake = [0] * n
        self.shares = [0] * n
        # pending (registered this epoch), registered, deregistered, slashed
        self.status: list[str | None] = [None] * n
        self.status_json = [_REGISTERED] * n
        self.remove_at: dict[int, int] = {}
        self.present: list[int] = []  # ids in storage, in storage-key order
        self.operator_key = [codec.encode_operator_key(i) + "," for i in range(n)]
        self.reg_by_epoch: dict[int, list[int]] = {}
        for i, r in enumerate(self.plan.registered_at):
            self.reg_by_epoch.setdefault(r, []).append(i)
        # (domain epoch, [(operator, entry text)]) for the repeated chain history of the last
        # chain_window epochs, and older entries kept because a pending deposit or withdrawal
        # still needs that price: (operator, epoch) -> entry text. Entry texts are
        # "<storage key>,<value>" ready for dump_fragment; the keys have one length, so sorting
        # the texts sorts by key (storage order).
        self.chain_history: deque[tuple[int, list[tuple[int, str]]]] = deque()
        self.kept: dict[tuple[int, int], str] = {}
        self.end_block = _GENESIS_BLOCK
        self.static = _static_parts()

    def run(self) -> Iterator[GeneratedDocument]:
        profile, rng, plan, nrng = self.profile, self.rng, self.plan, self.nrng
        n = profile.operators
        sigma = 1.0
        for epoch in range(profile.epochs):
            # Storage changes at the start of the epoch: registrations and removals.
            changed = False
            for i in self.reg_by_epoch.get(epoch, ()):
                self.status[i] = "pending"
                self.present.append(i)
                pool = Pool(i, self.owner[i], self.targets[i], self.released)
                self.pools[i] = pool
                # The owner's registration stake: the operator's first deposit.
                pool.deposit(pool.join(self.owner[i]), plan.initial_stake[i], epoch)
                changed = True
            gone = [i for i, at in self.remove_at.items() if at == epoch]
            for i in gone:
                del self.remove_at[i]
                self.present.remove(i)
                for referenced in self.pools.pop(i).refs:
                    self.kept.pop((i, referenced), None)
                changed = True
            if changed:
                self.present.sort(key=self.operator_key.__getitem__)

            # This epoch's draws, for all operators at once (fixed order = deterministic).
            rate = (
                profile.growth_median
                * plan.skill
                * np.exp(rng.normal(0.0, sigma, n))
                * (rng.random(n) >= 0.05)  # ~5% of epochs earn nothing (missed bundles)
            )
            rate_int = np.floor(rate * _RATE_SCALE).astype(np.int64).tolist()
            deposit = (rng.random(n) < profile.deposit_probability).tolist()
            deposit_ppb = np.floor(np.exp(rng.normal(np.log(0.01), 1.0, n)).clip(0, 0.5) * 1e9)
            deposit_ppb = deposit_ppb.astype(np.int64).tolist()
            withdraw = (rng.random(n) < profile.withdrawal_probability).tolist()
            withdraw_ppb = rng.uniform(0.001, profile.withdrawal_max, n) * 1e9
            withdraw_ppb = withdraw_ppb.astype(np.int64).tolist()
            block_len = int(rng.integers(100, 141))
            end_hash = "0x" + rng.bytes(32).hex()
            indexer_delay_ms = int(rng.integers(2_000, 40_000))
            # The nominators' draws: join, who acts, all or part, the size of a joining deposit.
            join_u = nrng.random(n).tolist()
            who_u = nrng.random(n).tolist()
            full_u = nrng.random(n).tolist()
            join_ppb = np.floor(np.exp(nrng.normal(np.log(0.002), 1.0, n)).clip(0, 0.05) * 1e9)
            join_ppb = join_ppb.astype(np.int64).tolist()

            head = head_domain_number(epoch)
            unlock_block = head + profile.withdrawal_unlock_epochs * BLOCKS_PER_EPOCH
            stake, shares, pools = self.stake, self.shares, self.pools
            rewards: dict[int, int] = {}
            deposits: dict[int, int] = {}
            withdrawals: dict[int, int] = {}
            for i in self.present:
                pool = pools[i]
                if pool.withdrawing:
                    self._claims(pool, epoch, head)
                if self.status[i] != "registered":
                    continue
                reward = stake[i] * rate_int[i] // _RATE_SCALE
                if reward:
                    rewards[i] = reward
                missing = pool.target - pool.deposit_keys
                if missing > 0 and join_u[i] < profile.nominator_join_rate * missing:
                    amount = max(plan.min_nominator_stake[i], stake[i] * join_ppb[i] // 10**9)
                    pool.deposit(pool.join(nrng.bytes(32).hex()), amount, epoch)
                if deposit[i]:
                    amount = max(plan.min_nominator_stake[i], stake[i] * deposit_ppb[i] // 10**9)
                    if pool.target > pool.deposit_keys and full_u[i] < 0.5:
                        who = pool.join(nrng.bytes(32).hex())
                    else:
                        depositors = pool.depositors()
                        who = depositors[int(who_u[i] * len(depositors))]
                    pool.deposit(who, amount, epoch)
                elif withdraw[i]:
                    wanted = shares[i] * withdraw_ppb[i] // 10**9
                    if wanted:
                        self._withdraw(pool, epoch, unlock_block, wanted, who_u[i], full_u[i])
                if pool.deposits_in_epoch:
                    deposits[i] = pool.deposits_in_epoch
                if pool.withdrawals_in_epoch:
                    withdrawals[i] = pool.withdrawals_in_epoch
            for i in self.reg_by_epoch.get(epoch, ()):
                deposits[i] = pools[i].deposits_in_epoch

            # Prices nothing references any more leave with this epoch's document.
            for released in self.released:
                self.kept.pop(released, None)
            self.released.clear()

            self.end_block += block_len
            timestamp = _GENESIS_MS + (self.end_block - _GENESIS_BLOCK) * _BLOCK_MS
            timestamp += indexer_delay_ms
            data, states, chain_count, positions, withdrawal_entries = self._document(
                epoch, end_hash, timestamp, rewards, deposits, withdrawals
            )
            yield GeneratedDocument(
                epoch=epoch,
                end_block=self.end_block,
                end_hash=end_hash,
                indexed_at=dt.datetime.fromtimestamp(timestamp / 1000, tz=dt.UTC),
                data=data,
                operator_states=states,
                chain_entries=chain_count,
                positions=positions,
                withdrawal_entries=withdrawal_entries,
            )
            self._finalize(epoch, rewards)

    def _claims(self, pool: Pool, epoch: int, head: int) -> None:
        """Nominators claim unlockable withdrawals, each with claim_probability per epoch."""
        chance = self.profile.claim_probability
        for nominator in list(pool.withdrawing.values()):
            unlocks = [u[0] for u in nominator.unlocking]
            if 0 <= nominator.w_epoch < epoch:
                unlocks.append(nominator.w_unlock)
            if unlocks and min(unlocks) <= head and self.nrng.random() < chance:
                pool.claim(nominator, epoch, head)

    def _withdraw(
        self, pool: Pool, epoch: int, unlock_block: int, wanted: int, who_u: float, full_u: float
    ) -> None:
        """A withdrawal of about `wanted` shares, by a nominator picked in proportion to what it
        holds (large holders move most stake). The owner withdraws at most half of its shares
        (it must keep the operator's minimum stake); another nominator takes all of its shares
        when `wanted` is nearly all of them, or with withdrawal_full_probability when they are
        at most twice `wanted` (so the stake withdrawn stays near the operator-level draw)."""
        candidates: list[tuple[Nominator, int]] = []
        total = 0
        for nominator in pool.depositors():
            if nominator.pending_epoch == epoch:
                continue  # the chain refuses a withdrawal with a deposit pending this epoch
            held = pool.effective_shares(nominator, epoch)
            if held:
                candidates.append((nominator, held))
                total += held
        if not total:
            return
        point = int(who_u * total)
        chosen = 0
        while point >= candidates[chosen][1] and chosen + 1 < len(candidates):
            point -= candidates[chosen][1]
            chosen += 1
        nominator, held = candidates[chosen]
        if nominator.account == pool.owner:
            amount = min(wanted, held // 2)
        elif wanted >= held * 9 // 10 or (
            full_u < self.profile.withdrawal_full_probability and held <= 2 * wanted
        ):
            amount = held
        else:
            amount = wanted
        if amount:
            pool.withdraw(nominator, amount, epoch, unlock_block)

    def _finalize(self, epoch: int, rewards: dict[int, int]) -> None:
        """The chain's epoch transition: rewards, the recorded price, then the queue."""
        plan = self.plan
        stake, shares = self.stake, self.shares
        recorded: list[tuple[int, str]] = []
        for i in self.present:
            status = self.status[i]
            pool = self.pools[i]
            if status == "registered":
                reward = rewards.get(i, 0)
                if reward:
                    tax = reward * plan.tax[i] // 100
                    stake[i] += reward - tax  # nominators' part raises the price
                    if tax:  # the operator's tax is staked for its owner at the new price
                        bought = tax * shares[i] // stake[i]
                        shares[i] += bought
                        stake[i] += tax
                        pool.credit_owner(bought)
                if pool.deposits_in_epoch or pool.withdrawals_in_epoch:
                    price = shares[i] * PERQ // stake[i]  # the chain's SHARES per stake
                    recorded.append((i, _chain_entry(i, epoch, price)))
                    deposited = pool.deposits_in_epoch
                    added, withdrawn, owed = pool.finalize(epoch, price)
                    shares[i] += added - withdrawn
                    stake[i] += deposited - owed
                if plan.deregister_at.get(i) == epoch:
                    self.status[i] = "deregistered"
                    unlock_block = self.end_block + self.profile.unlock_epochs * 100
                    self.status_json[i] = (
                        f'{{"deregistered":{{"domainEpoch":[0,{epoch}],'
                        f'"unlockAtConfirmedDomainBlockNumber":{unlock_block}}}}}'
                    )
                    self.remove_at[i] = epoch + 1 + self.profile.unlock_epochs
                elif plan.slash_at.get(i) == epoch:
                    self.status[i] = "slashed"
                    self.status_json[i] = _SLASHED
                    cut = int(self.rng.integers(100, 600))  # 10-60% of the stake, in permille
                    # The stake is cut; shares and storage fees stay as the positions hold them.
                    stake[i] -= stake[i] * cut // 1000
                    self.remove_at[i] = epoch + 2
            elif status == "pending":  # the first deposit converts at exactly 1.0
                amount = pool.deposits_in_epoch
                added, _, _ = pool.finalize(epoch, PERQ)
                stake[i], shares[i] = amount, added
                self.status[i] = "registered"
                recorded.append((i, _chain_entry(i, epoch, PERQ)))
        if recorded:
            self.chain_history.append((epoch, recorded))
        pools, kept = self.pools, self.kept
        while self.chain_history and self.chain_history[0][0] <= epoch - self.profile.chain_window:
            old, entries = self.chain_history.popleft()
            for i, text in entries:
                pool_or_none = pools.get(i)
                if pool_or_none is not None and old in pool_or_none.refs:
                    kept[(i, old)] = text

    def _document(
        self,
        epoch: int,
        end_hash: str,
        timestamp: int,
        rewards: dict[int, int],
        deposits: dict[int, int],
        withdrawals: dict[int, int],
    ) -> tuple[bytes, int, int, int, int]:
        plan = self.plan
        stake, shares, status, pools = self.stake, self.shares, self.status, self.pools
        operator_entries = []
        current: dict[str, str] = {}
        next_operators = []
        slots: list[dict] = []
        states = 0
        slot_base = (timestamp // 1000) - 1_731_000_000
        deposit_values: list[str] = []
        hold_values: list[str] = []
        withdrawal_values: list[str] = []
        for position, i in enumerate(self.present):
            s, sh = stake[i], shares[i]
            pool = pools[i]
            payload = (
                f'{{"signingKey":"{plan.signing_key[i]}","currentDomainId":0,"nextDomainId":0,'
                f'"minimumNominatorStake":{_u128_json(plan.min_nominator_stake[i])},'
                f'"nominationTax":{plan.tax[i]},'
                f'"currentTotalStake":{_u128_json(s)},'
                f'"currentTotalShares":{_u128_json(sh)},'
                f'"partialStatus":{self.status_json[i]},'
                f'"depositsInEpoch":{_u128_json(deposits.get(i, 0))},'
                f'"withdrawalsInEpoch":{_u128_json(withdrawals.get(i, 0))},'
                f'"totalStorageFeeDeposit":{_u128_json(pool.fee)}}}'
            )
            operator_entries.append(
                {"key": [str(position)], "value": self.operator_key[i] + payload}
            )
            d, h, w = pool.texts()
            deposit_values += d
            hold_values += h
            withdrawal_values += w
            if sh:
                states += 1
            st = status[i]
            if st == "registered" or st == "pending":
                next_operators.append(f"{i:,}")
                if st == "registered":
                    current[f"{i:,}"] = f"{s:,}"
                slots.append(
                    {
                        "key": [str(len(slots))],
                        "value": codec.storage_key(
                            codec.OPERATOR_HIGHEST_SLOT_ITEM, codec.encode_le(i, 8)
                        )
                        + f",{slot_base - (i * 7919) % 13}",
                    }
                )
        total = sum(stake[i] for i in self.present if status[i] == "registered")
        chain = [text for _, recorded in self.chain_history for _, text in recorded]
        chain += self.kept.values()
        chain.sort()
        doc = {
            "epoch": epoch,
            "endBlock": self.end_block,
            "endHash": end_hash,
            "timestamp": timestamp,
            "domainStakingSummary": {
                "currentEpochIndex": f"{epoch:,}",
                "currentTotalStake": f"{total:,}",
                "currentOperators": current,
                "nextOperators": next_operators,
                "currentEpochRewards": {f"{i:,}": f"{r:,}" for i, r in sorted(rewards.items())},
            },
            **self.static["head"],
            "deposits": dump_fragment(deposit_values),
            "withdrawals": dump_fragment(withdrawal_values),
            "depositOnHold": dump_fragment(hold_values),
            "successfulBundles": self.static["successfulBundles"],
            "operatorEpochSharePrice": dump_fragment(chain),
            "operatorHighestSlot": {"count": len(slots), "entries": slots},
            "operatorBundleSlot": _dump([]),
            "pendingStakingOperationCount": str(len(deposits) + len(withdrawals)),
            "pendingSlashes": _dump([]),
            "lastEpochStakingDistribution": _dump([]),
            "invalidBundleAuthors": self.static["invalidBundleAuthors"],
            "headDomainNumber": str(head_domain_number(epoch)),
            "headReceiptNumber": str(head_domain_number(epoch) - 1),
            "newAddedHeadReceipt": "",
            "consensusBlockHash": "",
            "latestConfirmedDomainExecutionReceipt": _dump([]),
            "domainGenesisBlockExecutionReceipt": _dump([]),
            "latestSubmittedER": _dump([]),
            "operators": {"count": len(operator_entries), "entries": operator_entries},
        }
        return (
            orjson.dumps(doc),
            states,
            len(chain),
            len(deposit_values),
            len(withdrawal_values),
        )


def _chain_entry(operator_id: int, epoch: int, shares_per_stake: int) -> str:
    """operatorEpochSharePrice(operator, domain 0, epoch) as an entry text for dump_fragment."""
    return entry_text(f"{codec.encode_chain_price_key(operator_id, 0, epoch)},{shares_per_stake}")


def _dump(entries: list) -> dict:
    return {"count": len(entries), "entries": entries}


def _static_parts() -> dict:
    """Parts of the real dump that do not change between epochs (copied in shape and content)."""
    return {
        "head": {
            "domainRegistry": {
                "ownerAccountId": "sudoTm1WPrUAQpAT1MLEx2yYEmYrWyjuv2Py4U9wFG2FcwmUk",
                "createdAt": f"{_GENESIS_BLOCK:,}",
                "genesisReceiptHash": "0xabab2465fb3dcfa17c1d2672254cd10ca694dc562c9e49fe5cb509d8bdef51da",
                "domainConfig": {
                    "domainName": "auto-evm",
                    "runtimeId": "0",
                    "maxBundleSize": "655,360",
                    "maxBundleWeight": {"refTime": "216,666,666,666", "proofSize": "3,407,872"},
                    "bundleSlotProbability": ["1", "1"],
                    "operatorAllowList": {"Anyone": None},
                    "initialBalances": [],
                },
                "domainRuntimeInfo": {
                    "Evm": {"chainId": "870", "domainRuntimeConfig": {"evmType": "Public"}}
                },
                "domainInstantiationDeposit": "100,000,000,000,000,000,000",
            },
            "accumulatedTreasuryFunds": "6328",
            "domainChainRewards": "0",
            "totalStorageFeeDeposit": "0",
            "totalStake": "0",
            "totalShares": "0",
        },
        "successfulBundles": _dump([]),
        "invalidBundleAuthors": _dump([]),
    }


# --- writing into PostgreSQL ----------------------------------------------------------------------

_COPY = "COPY epochs (epoch, end_block, end_hash, indexed_at, data) FROM STDIN"


class DatabaseNotEmpty(ShareError, RuntimeError):
    """The generator fills an empty `epochs` table only (it never replaces real data)."""


def generate(
    engine: Engine,
    profile: str | Profile = "demo",
    seed: int = 0,
    epochs: int | None = None,
    operators: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> GenerateSummary:
    """Fill an empty `epochs` table with a run's documents, streamed through one COPY.

    One transaction: an interrupted run leaves the table empty, never half-filled.
    `progress(n)` is called with the number of epochs just written.
    """
    resolved = resolve_profile(profile, epochs, operators)
    started = time.perf_counter()
    simulation = _Simulation(resolved, seed)
    json_bytes = states = chain_entries = positions = withdrawal_entries = 0
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE epochs IN EXCLUSIVE MODE")
            cur.execute("SELECT count(*) FROM epochs")
            (existing,) = cur.fetchone()
            if existing:
                raise DatabaseNotEmpty(
                    f"the database already holds {existing} epochs; the generator only fills "
                    "an empty one (use a new database, or `shareprice import` for real data)"
                )
            pending = 0
            with cur.copy(_COPY) as copy:
                for doc in simulation.run():
                    copy.write_row(
                        (doc.epoch, doc.end_block, doc.end_hash, doc.indexed_at, doc.data.decode())
                    )
                    json_bytes += len(doc.data)
                    states += doc.operator_states
                    chain_entries += doc.chain_entries
                    positions += doc.positions
                    withdrawal_entries += doc.withdrawal_entries
                    pending += 1
                    if progress is not None and pending >= 25:
                        progress(pending)
                        pending = 0
            if progress is not None and pending:
                progress(pending)
        conn.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()
    plan = simulation.plan
    return GenerateSummary(
        profile=resolved.name,
        seed=seed,
        epochs=resolved.epochs,
        operators=resolved.operators,
        operator_states=states,
        chain_entries=chain_entries,
        json_bytes=json_bytes,
        seconds=time.perf_counter() - started,
        positions=positions,
        withdrawal_entries=withdrawal_entries,
        deregistered=tuple(sorted(plan.deregister_at)),
        slashed=tuple(sorted(plan.slash_at)),
        registered_at=dict(enumerate(plan.registered_at)),
    )
