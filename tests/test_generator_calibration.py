"""The demo data looks like a chain: calibrated on the shared Auto EVM samples.

The samples hold epochs 0-218, 2619 and 2647 of the real domain. Both figures are computed here
from the samples and from freshly generated documents, with the shared parser:

- growth of total stake: log(total stake at 2647 / at 218) / 2429 epochs (real: 0.30 M AI3 to
  2.14 M, ~8e-4 per epoch). The old demo profile shrank (withdrawals ~6x deposits).
- median per-epoch price growth: per operator, log(last price / first price) / epochs between,
  then the median over operators (real: prices at ~1.0000363 after 2,647 epochs, ~1.5e-8).
  The median of single-epoch changes is useless here: most real epochs change nothing.

Demo must be within 10x of the samples on both; seed scale must grow too.
"""

import math
import statistics

import orjson

from shareprice.chain.parser import parse_document
from shareprice.ingest import generator
from shareprice.ingest.importer import iter_documents_in_file


def _operators_only(data: bytes) -> bytes:
    """The document without its nominator positions (most of its bytes since issue 14; stake
    and prices come from the operators): the generator writes deposits, withdrawals and
    depositOnHold together, just before successfulBundles."""
    start = data.index(b',"deposits":')
    end = data.index(b',"successfulBundles":', start)
    return data[:start] + data[end:]


def _figures(records, lo: int, hi: int) -> tuple[float, float, dict[int, int]]:
    totals: dict[int, int] = {}
    first: dict[int, tuple[int, int]] = {}
    last: dict[int, tuple[int, int]] = {}
    for record in sorted(records, key=lambda r: r.epoch):
        totals[record.epoch] = sum(state.stake for state in record.operators)
        for state in record.operators:
            first.setdefault(state.operator_id, (record.epoch, state.share_price_perq))
            last[state.operator_id] = (record.epoch, state.share_price_perq)
    stake_growth = math.log(totals[hi] / totals[lo]) / (hi - lo)
    rates = [
        math.log(last[o][1] / first[o][1]) / (last[o][0] - first[o][0])
        for o in first
        if last[o][0] - first[o][0] >= 100
    ]
    return stake_growth, statistics.median(rates), totals


def test_demo_profile_is_within_10x_of_the_real_samples(shared_data):
    samples = [
        parse_document(orjson.loads(data))
        for path in sorted(shared_data.glob("*.json"))
        for _label, data in iter_documents_in_file(path)
    ]
    assert {218, 2619, 2647} <= {r.epoch for r in samples}
    real_stake, real_price, real_totals = _figures(samples, 218, 2647)
    assert real_totals[2647] > real_totals[2619] > real_totals[218]  # the real chain grows

    demo = [
        parse_document(_operators_only(d.data)) for d in generator.iter_documents("demo", seed=0)
    ]
    demo_stake, demo_price, demo_totals = _figures(demo, 218, 2647)
    print(
        f"calibration: stake growth/epoch demo {demo_stake:.3g} vs samples {real_stake:.3g} "
        f"({demo_stake / real_stake:.2f}x); median price growth/epoch demo {demo_price:.3g} vs "
        f"samples {real_price:.3g} ({demo_price / real_price:.2f}x); demo total stake "
        f"{demo_totals[218] / 1e18:,.0f} -> {demo_totals[2647] / 1e18:,.0f} AI3"
    )
    assert 0.1 <= demo_stake / real_stake <= 10
    assert 0.1 <= demo_price / real_price <= 10
    # grows all along, not only early: the last epoch holds more than 2647
    last = max(demo_totals)
    assert demo_totals[last] > demo_totals[2647] > demo_totals[1000] > demo_totals[218]


def test_seed_scale_keeps_its_operators_and_grows():
    docs = [
        parse_document(_operators_only(d.data))
        for d in generator.iter_documents("seed-scale", seed=0, epochs=320)
    ]
    totals = {r.epoch: sum(s.stake for s in r.operators) for r in docs}
    active = [len(r.operators) for r in docs[60:]]
    assert 900 <= sum(active) / len(active) <= 1000
    assert totals[319] > totals[200] > totals[100]
