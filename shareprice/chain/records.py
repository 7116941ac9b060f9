"""Typed, exact records of one epoch's document: what the parser returns and everyone consumes.

All stake, share and price values are Python ints (no floats anywhere): u128 values exceed 2^64
and prices are integers at 1e18 scale ("perq").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PERQ = 10**18  # 1.0 at Perquintill scale

Format = Literal["storage_dump", "flat_export"]


def stake_per_share_perq(stake: int, shares: int) -> int:
    """The product's share price: floor(stake * 1e18 / shares). shares must be > 0."""
    return stake * PERQ // shares


@dataclass(frozen=True, slots=True)
class OperatorState:
    """One operator's state as given by one epoch's document."""

    operator_id: int
    stake: int
    # None for Format B (flat export), which gives prices but not shares or fees.
    shares: int | None
    storage_fee: int | None
    nomination_tax: int | None
    # registered / deregistered / slashed / pendingSlash / invalidBundle / deactivated / None
    status: str | None
    # Stake per share at 1e18 scale: computed (Format A) or as given (Format B).
    share_price_perq: int
    # This epoch's rewards for the operator (domainStakingSummary.currentEpochRewards / rewards).
    rewards: int | None


@dataclass(frozen=True, slots=True)
class ChainSharePrice:
    """One operatorEpochSharePrice entry, in the chain's own convention: SHARES PER STAKE."""

    operator_id: int
    domain_id: int
    domain_epoch: int
    shares_per_stake_perq: int


@dataclass(frozen=True, slots=True)
class EpochRecord:
    epoch: int
    format: Format
    end_block: int | None
    end_hash: str | None
    # Format A `timestamp`: when the indexer ran (ms since 1970), not the block time.
    indexed_at_ms: int | None
    total_stake: int | None
    # Sorted by operator_id; ids decoded from storage keys, never from array positions.
    operators: tuple[OperatorState, ...]
    chain_prices: tuple[ChainSharePrice, ...]
