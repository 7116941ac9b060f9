"""Yield and APY: DOMAIN.md's formulas on exact integers, checked against hand computations."""

import datetime as dt
from decimal import Decimal, getcontext
from fractions import Fraction

import pytest
from helpers.normalized_rows import Row, load

from shareprice import queries
from shareprice.queries import yields

PERQ = 10**18


def reference_apy(now: int, then: int, days: Decimal) -> Decimal:
    """(1 + yield) ** (365 / days) - 1 in 60-digit decimal arithmetic: the hand computation."""
    getcontext().prec = 60
    growth = Decimal(now) / Decimal(then)
    return (growth.ln() * Decimal(365) / days).exp() - 1


def test_yield_is_exact_fraction_then_float():
    assert yields.growth(PERQ + 5 * 10**10, PERQ) == Fraction(5 * 10**10, PERQ)
    assert yields.yield_float(PERQ + 5 * 10**10, PERQ) == 5e-8
    # a value floats cannot even represent as a price: 1 + 1e-18
    assert yields.yield_float(PERQ + 1, PERQ) == 1e-18


@pytest.mark.parametrize(
    ("now", "then", "days"),
    [
        (PERQ + 5 * 10**10, PERQ, 1),  # ~5e-8 a day: Auto EVM-like growth
        (1_000_036_353_676_459_997, 1_000_000_000_000_000_000, 30),  # the real sample's price
        (PERQ + 1, PERQ, 1),  # one Perquintill of growth
        (PERQ * 11 // 10, PERQ, 7),  # 10 % in a week
        (PERQ * 9 // 10, PERQ, 1),  # slashed: -10 % in a day
    ],
)
def test_apy_matches_high_precision_reference(now, then, days):
    expected = reference_apy(now, then, Decimal(days))
    got = yields.apy(now, then, days)
    assert got == pytest.approx(float(expected), rel=1e-12, abs=1e-30)


def test_apy_of_tiny_growth_keeps_its_digits():
    """(1 + y) ** k - 1 in floats keeps ~8 digits of a 5e-8 yield; the module keeps all."""
    now, then = PERQ + 5 * 10**10 + 123, PERQ
    expected = float(reference_apy(now, then, Decimal(1)))
    naive = (1 + float(Fraction(now - then, then))) ** 365 - 1
    assert abs(yields.apy(now, then, 1) - expected) < abs(naive - expected) / 100
    assert yields.apy(now, then, 1) == pytest.approx(expected, rel=1e-13)


def test_apy_rejects_nonsense():
    with pytest.raises(ValueError):
        yields.apy(PERQ, 0, 1)
    with pytest.raises(ValueError):
        yields.apy(PERQ, PERQ, 0)
    assert yields.apy(PERQ * 1000, PERQ, 0.001) == float("inf")


def test_epochs_per_day_from_end_blocks_and_timestamps():
    # 100 epochs over 12,000 consensus blocks of 6 s = 120 a day
    assert yields.rate_from_end_blocks((0, 1_000), (100, 13_000)) == pytest.approx(120)
    # the real samples: epoch 0 ends at block 3,851,328, epoch 2619 at 4,166,284:
    # 14,400 * 2,619 / 314,956 = 119.742...
    assert yields.rate_from_end_blocks((0, 3_851_328), (2619, 4_166_284)) == pytest.approx(
        119.742, abs=0.001
    )
    assert yields.rate_from_end_blocks((5, 100), (5, 200)) is None
    # indexer timestamps 12 minutes apart look live; a bulk re-index (seconds apart) does not
    assert yields.rate_from_timestamps((0, 0.0), (10, 7200.0)) == pytest.approx(120)
    assert yields.rate_from_timestamps((0, 0.0), (3000, 60.0)) is None
    assert yields.choose_rate(None, None) == yields.EpochRate(120.0, "nominal")
    assert yields.choose_rate(144.0, 120.0).source == "end_blocks"


def _two_operators(engine, **kwargs):
    """Operator 1 grows by exactly 1e9 perq per epoch; operator 2 appears only at epoch 200."""
    rows = [Row(1, e, PERQ + e * 10**9) for e in range(0, 241)]
    rows += [Row(2, e, PERQ + (e - 200) * 7) for e in range(200, 241)]
    load(engine, rows, **kwargs)


def test_operators_yields_match_hand_computation_nominal_rate(engine):
    _two_operators(engine)
    rate = queries.epoch_rate(engine)
    assert rate == yields.EpochRate(120.0, "nominal")  # no end blocks, no timestamps
    ops = queries.operators(engine, rate).sort("operator_id")
    one = ops.row(0, named=True)
    assert one["latest_epoch"] == 240 and one["share_price_perq"] == PERQ + 240 * 10**9
    # 1 day = 120 epochs back: epoch 120
    assert one["epoch_1d"] == 120 and one["price_1d_perq"] == PERQ + 120 * 10**9
    y1 = Fraction(120 * 10**9, PERQ + 120 * 10**9)
    assert one["yield_1d"] == float(y1)
    assert one["apy_1d"] == pytest.approx(
        float(reference_apy(PERQ + 240 * 10**9, PERQ + 120 * 10**9, Decimal(1))), rel=1e-12
    )
    # 7 days = 840 epochs back: before the data; the earliest price is not silently used
    assert one["yield_7d"] is None and one["apy_7d"] is None
    two = ops.row(1, named=True)
    assert two["yield_1d"] is None  # 40 epochs of history only
    assert two["share_price_perq"] == PERQ + 40 * 7


def test_operators_yields_use_end_block_rate(engine):
    # 240 epochs over 24,000 blocks: 144 epochs a day, so "1 day" reaches back 144 epochs
    _two_operators(engine, end_blocks={0: 1_000, 240: 25_000})
    rate = queries.epoch_rate(engine)
    assert rate.source == "end_blocks" and rate.epochs_per_day == pytest.approx(144)
    one = queries.operators(engine, rate).sort("operator_id").row(0, named=True)
    assert one["epoch_1d"] == 240 - 144
    assert one["yield_1d"] == float(Fraction(144 * 10**9, PERQ + 96 * 10**9))


def test_dates_only_from_live_looking_timestamps(engine):
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    live = {e: (start + dt.timedelta(minutes=12 * e)).isoformat() for e in range(0, 241, 60)}
    _two_operators(engine, indexed_at=live)
    assert queries.epoch_rate(engine).source == "timestamps"
    labels = queries.epoch_date_labels(engine, 0, 240)
    assert labels[60] == "2025-01-01 12:00 UTC"


def test_bulk_indexed_timestamps_give_no_dates(engine):
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    bulk = {e: (start + dt.timedelta(seconds=e)).isoformat() for e in range(0, 241, 60)}
    _two_operators(engine, indexed_at=bulk)
    assert queries.epoch_rate(engine).source == "nominal"
    assert queries.epoch_date_labels(engine, 0, 240) == {}
