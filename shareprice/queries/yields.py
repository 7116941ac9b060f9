"""Yield and APY from share price growth, exactly as DOMAIN.md defines them.

    yield = price_now / price_then - 1
    APY   = (1 + yield) ** (365 / days) - 1

Prices are exact integers (stake per share at 1e18 scale). The yield is formed as an exact
fraction of those integers and becomes a float only at the end; APY is then computed as
expm1(365 / days * log1p(yield)), which is the same formula without the cancellation that
`(1 + y) ** k - 1` suffers when y is ~1e-8 (a day of Auto EVM growth): float(1 + 1e-8) keeps only
eight significant digits of y, log1p keeps all sixteen.

Epochs per day: the chain does not say, so it is derived from the data, best evidence first:

1. End blocks (`epochs.end_block`, both formats carry `endBlock`): these are consensus block
   numbers, and the consensus chain makes one block per 6 s (14,400 a day; the real samples give
   ~120.3 blocks per 12-minute epoch). epochs/day = 14,400 * epochs spanned / blocks spanned.
2. Format A `timestamp` (`epochs.indexed_at`): when the INDEXER ran, not block time. A bulk
   re-index stamps thousands of epochs within minutes, so timestamps are only used when there
   are no end blocks AND they look like live indexing (increasing, implying 12-1,200 epochs a
   day, i.e. within 10x of the nominal rate).
3. Otherwise the nominal 120 (100 domain blocks of ~6 s each, ~12 minutes per epoch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

NOMINAL_EPOCHS_PER_DAY = 120.0
CONSENSUS_BLOCKS_PER_DAY = 86_400 // 6
#: The yield windows the product shows, in days.
WINDOWS_DAYS = (1, 7, 30)
#: A yield whose real span (the two prices' epochs apart) is off its window by more than this
#: share is not shown (n/a): across a hole a "1d" yield could otherwise span three days.
SPAN_TOLERANCE = 0.2

RateSource = Literal["end_blocks", "timestamps", "nominal"]


@dataclass(frozen=True, slots=True)
class EpochRate:
    epochs_per_day: float
    source: RateSource

    def epochs_for_days(self, days: float) -> int:
        """How many epochs back a window of `days` reaches (at least one)."""
        return max(1, round(days * self.epochs_per_day))


def rate_from_end_blocks(first: tuple[int, int], last: tuple[int, int]) -> float | None:
    """Epochs per day from two (epoch, end_block) points, or None when they cannot tell."""
    (epoch_a, block_a), (epoch_b, block_b) = first, last
    if epoch_b <= epoch_a or block_b <= block_a:
        return None
    return CONSENSUS_BLOCKS_PER_DAY * (epoch_b - epoch_a) / (block_b - block_a)


def rate_from_timestamps(first: tuple[int, float], last: tuple[int, float]) -> float | None:
    """Epochs per day from two (epoch, unix seconds) points when they look like live indexing."""
    (epoch_a, time_a), (epoch_b, time_b) = first, last
    if epoch_b <= epoch_a or time_b <= time_a:
        return None
    rate = (epoch_b - epoch_a) * 86_400 / (time_b - time_a)
    if not NOMINAL_EPOCHS_PER_DAY / 10 <= rate <= NOMINAL_EPOCHS_PER_DAY * 10:
        return None
    return rate


def span_fits(span_days: float, window_days: float) -> bool:
    """Whether a yield over `span_days` may be shown as the `window_days` yield."""
    return abs(span_days - window_days) <= SPAN_TOLERANCE * window_days


def choose_rate(end_block_rate: float | None, timestamp_rate: float | None) -> EpochRate:
    if end_block_rate is not None:
        return EpochRate(end_block_rate, "end_blocks")
    if timestamp_rate is not None:
        return EpochRate(timestamp_rate, "timestamps")
    return EpochRate(NOMINAL_EPOCHS_PER_DAY, "nominal")


def growth(price_now_perq: int, price_then_perq: int) -> Fraction:
    """The exact yield price_now / price_then - 1."""
    if price_then_perq <= 0:
        raise ValueError(f"price_then must be positive, got {price_then_perq}")
    return Fraction(price_now_perq - price_then_perq, price_then_perq)


def yield_float(price_now_perq: int, price_then_perq: int) -> float:
    return float(growth(price_now_perq, price_then_perq))


def apy(price_now_perq: int, price_then_perq: int, days: float) -> float:
    """(1 + yield) ** (365 / days) - 1 for the exact yield, evaluated without cancellation.

    Returns inf when the annualized value overflows a float (a huge jump over a short span).
    """
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    y = growth(price_now_perq, price_then_perq)
    # log1p of the exact fraction: for |y| < 0.5 float(y) is accurate to the last bit and
    # log1p keeps it; otherwise 1 + y is safely representable as a float.
    log_growth = math.log1p(float(y)) if abs(y) < Fraction(1, 2) else math.log(float(1 + y))
    exponent = 365.0 / days * log_growth
    try:
        return math.expm1(exponent)
    except OverflowError:
        return math.inf
