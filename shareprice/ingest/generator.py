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

Operators register over time (first visible price exactly 1e18: their first deposit converts at
1.0), some deregister (shown as deregistered until unlock, then gone), about 1% are slashed (stake
cut, shown once as slashed, then gone). Numbers are encoded like polkadot.js: u128 up to 52 bits as
JSON numbers, larger as 0x hex padded to 32 digits; the summary in toHuman comma groups.

Deterministic for a seed: every random draw comes from one numpy Generator in a fixed order.
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

__all__ = [
    "PROFILES",
    "GeneratedDocument",
    "GenerateSummary",
    "Profile",
    "generate",
    "iter_documents",
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
    #: repeats all of it; a window keeps documents bounded, ~1 MB at seed scale).
    chain_window: int = 32
    #: Epochs a deregistered operator stays in storage (status deregistered) before removal.
    unlock_epochs: int = 4


PROFILES: dict[str, Profile] = {
    # What `make run` loads: ~30 operators active over 3,734 epochs (31 days, so 30-day yields
    # have data), ~130 MB of JSON.
    # Calibrated on the shared Auto EVM samples (tests/test_generator_calibration.py): total
    # stake grows (real: 0.30 M AI3 at epoch 218 to 2.14 M at 2647) and prices grow ~1e-8 per
    # epoch, each within 10x of the samples.
    "demo": Profile(
        "demo",
        epochs=3734,
        operators=36,
        early_epochs=40,
        chain_window=40,
        withdrawal_max=0.03,
        growth_median=2e-8,
    ),
    # The old system's scale: 3,734 epochs, ~940 operators active on average; grows like demo.
    "seed-scale": Profile(
        "seed-scale", epochs=3734, operators=1065, withdrawal_max=0.03, growth_median=2e-8
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


def _u128_json(value: int) -> str:
    """The JSON text polkadot.js writes for a u128 (number up to 52 bits, else padded hex)."""
    return f'"0x{value:032x}"' if value.bit_length() > 52 else str(value)


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


class _Simulation:
    def __init__(self, profile: Profile, seed: int) -> None:
        self.profile = profile
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.plan = _Plan(profile, self.rng)
        n = profile.operators
        self.stake = [0] * n
        self.shares = [0] * n
        self.fee = [0] * n
        # pending (registered this epoch), registered, deregistered, slashed
        self.status: list[str | None] = [None] * n
        self.status_json = [_REGISTERED] * n
        self.remove_at: dict[int, int] = {}
        self.present: list[int] = []  # ids in storage, in storage-key order
        self.operator_key = [codec.encode_operator_key(i) + "," for i in range(n)]
        self.reg_by_epoch: dict[int, list[int]] = {}
        for i, r in enumerate(self.plan.registered_at):
            self.reg_by_epoch.setdefault(r, []).append(i)
        # (domain epoch, [(storage key, value text)]) for the repeated chain history.
        self.chain_history: deque[tuple[int, list[tuple[str, str]]]] = deque()
        self.end_block = _GENESIS_BLOCK
        self.static = _static_parts()

    def run(self) -> Iterator[GeneratedDocument]:
        profile, rng, plan = self.profile, self.rng, self.plan
        n = profile.operators
        sigma = 1.0
        for epoch in range(profile.epochs):
            # Storage changes at the start of the epoch: registrations and removals.
            changed = False
            for i in self.reg_by_epoch.get(epoch, ()):
                self.status[i] = "pending"
                self.present.append(i)
                changed = True
            gone = [i for i, at in self.remove_at.items() if at == epoch]
            for i in gone:
                del self.remove_at[i]
                self.present.remove(i)
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

            stake, shares = self.stake, self.shares
            rewards: dict[int, int] = {}
            deposits: dict[int, int] = {}
            withdrawals: dict[int, int] = {}
            for i in self.present:
                if self.status[i] != "registered":
                    continue
                reward = stake[i] * rate_int[i] // _RATE_SCALE
                if reward:
                    rewards[i] = reward
                if deposit[i]:
                    deposits[i] = max(
                        plan.min_nominator_stake[i], stake[i] * deposit_ppb[i] // 10**9
                    )
                elif withdraw[i]:
                    withdrawals[i] = shares[i] * withdraw_ppb[i] // 10**9
            for i in self.reg_by_epoch.get(epoch, ()):
                deposits[i] = plan.initial_stake[i]

            self.end_block += block_len
            timestamp = _GENESIS_MS + (self.end_block - _GENESIS_BLOCK) * _BLOCK_MS
            timestamp += indexer_delay_ms
            data, states, chain_count = self._document(
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
            )
            self._finalize(epoch, rewards, deposits, withdrawals)

    def _finalize(
        self,
        epoch: int,
        rewards: dict[int, int],
        deposits: dict[int, int],
        withdrawals: dict[int, int],
    ) -> None:
        """The chain's epoch transition: rewards, the recorded price, then the queue."""
        plan = self.plan
        stake, shares, fee = self.stake, self.shares, self.fee
        recorded: list[tuple[str, str]] = []
        for i in self.present:
            status = self.status[i]
            if status == "registered":
                reward = rewards.get(i, 0)
                if reward:
                    tax = reward * plan.tax[i] // 100
                    stake[i] += reward - tax  # nominators' part raises the price
                    if tax:  # the operator's tax is staked for it at the new price
                        shares[i] += tax * shares[i] // stake[i]
                        stake[i] += tax
                if i in deposits or i in withdrawals:
                    recorded.append(self._record_price(i, epoch))
                    amount = deposits.get(i)
                    if amount:
                        shares[i] += amount * shares[i] // stake[i]
                        stake[i] += amount
                        fee[i] += amount // 4
                    withdrawn = withdrawals.get(i)
                    if withdrawn:
                        fee[i] -= fee[i] * withdrawn // shares[i]
                        stake[i] -= withdrawn * stake[i] // shares[i]
                        shares[i] -= withdrawn
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
                    stake[i] -= stake[i] * cut // 1000
                    fee[i] -= fee[i] * cut // 1000
                    self.remove_at[i] = epoch + 2
            elif status == "pending":  # the first deposit converts at exactly 1.0
                amount = deposits[i]
                stake[i] = shares[i] = amount
                fee[i] = amount // 4
                self.status[i] = "registered"
                recorded.append(self._record_price(i, epoch))
        if recorded:
            self.chain_history.append((epoch, recorded))
        while self.chain_history and self.chain_history[0][0] <= epoch - self.profile.chain_window:
            self.chain_history.popleft()

    def _record_price(self, i: int, epoch: int) -> tuple[str, str]:
        value = self.shares[i] * PERQ // self.stake[i]  # the chain's SHARES per stake
        return codec.encode_chain_price_key(i, 0, epoch), str(value)

    def _document(
        self,
        epoch: int,
        end_hash: str,
        timestamp: int,
        rewards: dict[int, int],
        deposits: dict[int, int],
        withdrawals: dict[int, int],
    ) -> tuple[bytes, int, int]:
        plan = self.plan
        stake, shares, fee, status = self.stake, self.shares, self.fee, self.status
        operator_entries = []
        current: dict[str, str] = {}
        next_operators = []
        slots: list[dict] = []
        states = 0
        slot_base = (timestamp // 1000) - 1_731_000_000
        for position, i in enumerate(self.present):
            s, sh = stake[i], shares[i]
            payload = (
                f'{{"signingKey":"{plan.signing_key[i]}","currentDomainId":0,"nextDomainId":0,'
                f'"minimumNominatorStake":{_u128_json(plan.min_nominator_stake[i])},'
                f'"nominationTax":{plan.tax[i]},'
                f'"currentTotalStake":{_u128_json(s)},'
                f'"currentTotalShares":{_u128_json(sh)},'
                f'"partialStatus":{self.status_json[i]},'
                f'"depositsInEpoch":{_u128_json(deposits.get(i, 0))},'
                f'"withdrawalsInEpoch":{_u128_json(withdrawals.get(i, 0))},'
                f'"totalStorageFeeDeposit":{_u128_json(fee[i])}}}'
            )
            operator_entries.append(
                {"key": [str(position)], "value": self.operator_key[i] + payload}
            )
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
        chain = sorted(kv for _, recorded in self.chain_history for kv in recorded)
        chain_entries = [
            {"key": [str(k)], "value": f"{key},{value}"} for k, (key, value) in enumerate(chain)
        ]
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
            "deposits": _dump(self._deposit_entries(epoch, deposits)),
            "withdrawals": _dump(self._withdrawal_entries(epoch, withdrawals)),
            "depositOnHold": _dump([]),
            "successfulBundles": self.static["successfulBundles"],
            "operatorEpochSharePrice": {"count": len(chain_entries), "entries": chain_entries},
            "operatorHighestSlot": {"count": len(slots), "entries": slots},
            "operatorBundleSlot": _dump([]),
            "pendingStakingOperationCount": str(len(deposits) + len(withdrawals)),
            "pendingSlashes": _dump([]),
            "lastEpochStakingDistribution": _dump([]),
            "invalidBundleAuthors": self.static["invalidBundleAuthors"],
            "headDomainNumber": str(epoch * 100 + 99),
            "headReceiptNumber": str(epoch * 100 + 98),
            "newAddedHeadReceipt": "",
            "consensusBlockHash": "",
            "latestConfirmedDomainExecutionReceipt": _dump([]),
            "domainGenesisBlockExecutionReceipt": _dump([]),
            "latestSubmittedER": _dump([]),
            "operators": {"count": len(operator_entries), "entries": operator_entries},
        }
        return orjson.dumps(doc), states, len(chain_entries)

    def _deposit_entries(self, epoch: int, deposits: dict[int, int]) -> list[dict]:
        entries: list[dict] = []
        for i, amount in sorted(deposits.items()):
            nominator = ((i * 0x9E3779B97F4A7C15 + epoch) % 2**256).to_bytes(32, "big").hex()
            key = codec.storage_key(codec.DEPOSITS_ITEM, codec.encode_le(i, 8), nominator)
            payload = (
                '{"known":{"shares":0,"storageFeeDeposit":0},'
                f'"pending":{{"effectiveDomainEpoch":[0,{epoch}],"amount":{_u128_json(amount)},'
                f'"storageFeeDeposit":{_u128_json(amount // 4)}}}}}'
            )
            entries.append({"key": [str(len(entries))], "value": f"{key},{payload}"})
        return entries

    def _withdrawal_entries(self, epoch: int, withdrawals: dict[int, int]) -> list[dict]:
        entries: list[dict] = []
        for i, withdrawn in sorted(withdrawals.items()):
            nominator = ((i * 0xC2B2AE3D27D4EB4F + epoch) % 2**256).to_bytes(32, "big").hex()
            key = codec.storage_key(codec.WITHDRAWALS_ITEM, codec.encode_le(i, 8), nominator)
            refund = self.fee[i] * withdrawn // max(self.shares[i], 1)
            payload = (
                f'{{"totalWithdrawalAmount":0,"totalStorageFeeWithdrawal":{_u128_json(refund)},'
                f'"withdrawals":[],"withdrawalInShares":{{"domainEpoch":[0,{epoch}],'
                f'"unlockAtConfirmedDomainBlockNumber":{self.end_block + 14_400},'
                f'"shares":{_u128_json(withdrawn)},"storageFeeRefund":{_u128_json(refund)}}}}}'
            )
            entries.append({"key": [str(len(entries))], "value": f"{key},{payload}"})
        return entries


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
    json_bytes = states = chain_entries = 0
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
        deregistered=tuple(sorted(plan.deregister_at)),
        slashed=tuple(sorted(plan.slash_at)),
        registered_at=dict(enumerate(plan.registered_at)),
    )
