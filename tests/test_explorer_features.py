"""The explorer's analyst features on a history with a hole: gaps stay gaps (full and downsampled),
yields show their real span or n/a, the summary row and the wide CSV equal the tables, the band
needs 10 operators, rewards drawn as bars (filled steps) / totals / unified hover / per-row axes are in the figure.

Expected values come from SQL over the tables or from the rows the test wrote, never from the
functions under test.
"""

import base64
import html
import json
import re
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
import pytest
from helpers.normalized_rows import Row, load
from streamlit.testing.v1 import AppTest

from shareprice import queries
from shareprice.display import charts, explorer_state

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages/explorer.py")
PERQ = 10**18
OPERATORS = range(12)
#: Epochs 100..149 are missing for everyone; operator 11 also lacks 159-160, operator 10 lacks
#: 151-165. End blocks 1,440 apart: 10 epochs a day, so "1d" is 10 epochs back from 170.
EPOCHS = [*range(0, 100), *range(150, 171)]
MISSING = {11: {159, 160}, 10: set(range(151, 166))}


def price(o: int, e: int) -> int:
    return PERQ + o * 10**12 + e * 10**9 * (o + 1)


def rows() -> list[Row]:
    return [
        Row(
            o,
            e,
            price(o, e),
            stake=(o + 1) * 10**21 + e * 10**14,
            rewards=(o + 1) * 10**16 + e * 10**14,
        )
        for o in OPERATORS
        for e in EPOCHS
        if e not in MISSING.get(o, set())
    ]


@pytest.fixture()
def holed(engine):
    load(engine, rows(), end_blocks={e: 1000 + 1440 * e for e in EPOCHS})
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE operator_shares SET storage_fee_raw = stake_raw / 100")
        conn.exec_driver_sql(
            """UPDATE epochs SET data = '{"startBlock": 123456}' WHERE epoch = 150"""
        )
        # the fees are written after the epochs were marked: the stored totals follow the
        # UPDATE by themselves (sql/070), which the summary tests below depend on
    return engine


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def spec_of(at: AppTest) -> dict:
    (chart,) = at.get("plotly_chart")
    return json.loads(chart.proto.spec)


def values(array) -> np.ndarray:
    """A plotly JSON array: a list, or a base64 typed array {"dtype", "bdata"}."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    return np.array([np.nan if v is None else v for v in array], dtype=np.float64)


def assert_no_line_across(x: np.ndarray, y: np.ndarray, before: int, after: int) -> None:
    """Between the last point at or before `before` and the first at or after `after` there is
    a NaN: plotly (connectgaps off) draws no line across the hole."""
    last = int(np.flatnonzero(x <= before).max())
    first = int(np.flatnonzero(x >= after).min())
    assert first > last + 1, (x[last : first + 1], y[last : first + 1])
    assert np.isnan(y[last + 1 : first]).all()
    assert not np.isnan(y[last]) and not np.isnan(y[first])


# --- gaps -------------------------------------------------------------------------------------


def test_page_draws_no_line_across_a_hole(db_url, holed):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params.update({"ops": "3,11", "totals": "1"})
    spec = spec_of(run(at))
    drawn = 0
    for trace in spec["data"]:
        if trace.get("legendgroup") not in ("3", "11", "totals"):
            continue
        if trace.get("mode") != "lines":
            continue
        x, y = values(trace["x"]), values(trace["y"])
        assert_no_line_across(x, y, 99, 150)
        drawn += 1
        if trace.get("legendgroup") == "11":
            assert_no_line_across(x, y, 158, 161)  # the operator's own hole
    # price, stake and rewards (filled steps) of two operators, two totals lines
    assert drawn == 2 * 3 + 2
    band = [t for t in spec["data"] if t.get("name") == "All operators median"]
    assert band, "12 operators: the band is drawn"
    assert_no_line_across(values(band[0]["x"]), values(band[0]["y"]), 99, 150)
    caption = next(c.value for c in at.caption if "points drawn" in c.value)
    assert "50 epochs missing in 1 hole(s)" in caption


def test_downsampled_series_keeps_both_sides_of_every_hole(holed):
    series = queries.series_v2(holed, queries.SeriesRequest(operators=(10, 11), max_points=12))
    for operator_id, sides in ((11, [(99, 150), (158, 161)]), (10, [(99, 150), (150, 166)])):
        kept = series.filter(pl.col("operator_id") == operator_id)["epoch"].to_list()
        assert len(kept) <= 12
        for before, after in sides:
            assert before in kept and after in kept, (operator_id, kept)
    figure = charts.explorer_figure(series, charts.styles_from(queries.operators(holed)))
    (price_11,) = [t for t in figure.data if t.legendgroup == "11" and t.yaxis == "y"]
    x, y = np.asarray(price_11.x, dtype=float), np.asarray(price_11.y, dtype=float)
    assert_no_line_across(x, y, 99, 150)
    assert_no_line_across(x, y, 158, 161)
    # consecutive kept epochs inside one run are NOT broken (a skipped epoch is not a hole)
    inside = (x > 0) & (x < 99)
    assert not np.isnan(y[inside]).any()


def test_downloads_invent_no_rows_in_the_hole(holed):
    series = queries.series_v2(holed, queries.SeriesRequest(operators=(3,)))
    shown = charts.shown_frame(
        series, charts.styles_from(queries.operators(holed)), mode="absolute", unit="AI3"
    )
    assert not shown.filter(pl.col("epoch").is_between(100, 149)).height
    assert shown.height == len(EPOCHS)


# --- yields -----------------------------------------------------------------------------------


def test_yields_show_their_real_span_or_na(db_url, holed):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params.update({"ops": "10,11,3"})
    run(at)
    at.toggle(key="ex_cards_table").set_value(True)
    run(at)
    table = at.table[0].value
    by_operator = {
        name.split()[0]: row
        for name, row in zip(table["Operator"], table.to_dict("records"), strict=True)
    }
    # operator 3: 1d back from 170 is 160, present: exactly 1 day
    y3 = Fraction(price(3, 170), price(3, 160)) - 1
    assert by_operator["#3"]["1d yield"] == f"{float(y3) * 100:.4g}% over 1.00 d"
    # operator 11 lacks 159-160: the price at or before 160 is 158's, 1.2 days back (shown)
    y11 = Fraction(price(11, 170), price(11, 158)) - 1
    assert by_operator["#11"]["1d yield"] == f"{float(y11) * 100:.4g}% over 1.20 d"
    # operator 10 lacks 151-165: the nearest price is 150's, 2 days back: off by 100 % -> n/a
    assert by_operator["#10"]["1d yield"] == "n/a (nearest price is 2.00 d back)"
    assert by_operator["#10"]["1d APY"] == "–"
    # 7d: 100 is in the global hole, 99 is 7.1 days back: within 20 %, shown with its span
    assert by_operator["#3"]["7d yield"].endswith("over 7.10 d")
    # the cards say the same
    cards = " ".join(h.proto.body for h in at.get("html"))
    assert "n/a (nearest price is 2.00 d back)" in cards and "over 1.20 d" in cards


# --- the summary row --------------------------------------------------------------------------


def ai3(value: int) -> str:
    exact = (Decimal(value) / Decimal(PERQ)).quantize(Decimal("0.0001"), rounding=ROUND_DOWN)
    return f"{exact:,}"


class Metric(NamedTuple):
    value: str
    help: str


def summary_of(at: AppTest) -> dict[str, Metric]:
    """The summary row's metrics (label -> value, explanation) from its HTML block."""
    (block,) = [h.proto.body for h in at.get("html") if "sp-summary" in h.proto.body]
    found = re.findall(
        r'data-label="([^"]*)".*?sp-metric-value"[^>]*>([^<]*)<.*?sp-metric-help"[^>]*>([^<]*)<',
        block,
    )
    assert len(found) == 4, block
    return {
        html.unescape(label): Metric(html.unescape(value), html.unescape(text))
        for label, value, text in found
    }


def test_summary_metrics_equal_the_tables(db_url, holed):
    with holed.connect() as conn:
        stake, fees, rewards, count = conn.exec_driver_sql(
            "SELECT sum(stake_raw), sum(storage_fee_raw), sum(rewards_raw), count(*) "
            "FROM operator_shares WHERE epoch = (SELECT max(epoch) FROM operator_shares)"
        ).one()
    at = run(AppTest.from_file(PAGE, default_timeout=60))
    metrics = summary_of(at)
    assert metrics["Latest epoch"].value == "170"
    assert "normalized" in metrics["Latest epoch"].help and "ago" in metrics["Latest epoch"].help
    total = int(stake) + int(fees)
    assert metrics["Total stake (AI3)"].value == f"{total // PERQ:,}"  # whole AI3: it fits
    assert metrics["Total stake (AI3)"].help.startswith(f"{ai3(total)} AI3")  # exact below
    share = Fraction(int(fees), total)
    assert f"({float(share) * 100:.2f}% of the total)" in metrics["Total stake (AI3)"].help
    assert metrics["Rewards, latest epoch (AI3)"].value == ai3(int(rewards))  # < 1,000 AI3
    assert metrics["Operators active"].value == str(count) == "12"
    at.session_state["ex_more"] = True  # open "Axes, unit, band, totals, live"
    run(at)
    at.segmented_control(key="ex_unit").set_value("Shannons")
    run(at)
    metrics = summary_of(at)
    assert metrics["Total stake (Shannons)"].value == f"{total:.4e}"
    assert metrics["Total stake (Shannons)"].help.startswith(f"{total:,} Shannons")


# --- the figure -------------------------------------------------------------------------------


def test_bars_totals_hover_and_axes(db_url, holed):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params.update({"ops": "3,4", "band": "0"})
    spec = spec_of(run(at))
    layout = spec["layout"]
    assert layout["hovermode"] == "x unified" and layout["hoversubplots"] == "axis"
    assert layout["xaxis"]["showspikes"] and layout["xaxis"]["spikemode"] == "across"
    # rewards per operator, drawn like bars: centred steps filled down to the axis
    bars = [t for t in spec["data"] if t.get("fill") == "tozeroy"]
    assert {t["legendgroup"] for t in bars} == {"3", "4"} and {t["yaxis"] for t in bars} == {"y3"}
    assert all(t["line"]["shape"] == "hvh" for t in bars)
    for trace in bars:  # one step per epoch with the rewards in AI3, a gap over the hole
        o = int(trace["legendgroup"])
        x, y = values(trace["x"]), values(trace["y"])
        drawn = ~np.isnan(y)
        assert list(x[drawn]) == EPOCHS
        assert y[drawn] == pytest.approx([((o + 1) * 10**16 + e * 10**14) / PERQ for e in EPOCHS])
        assert_no_line_across(x, y, 99, 150)
    assert not any(t.get("name", "").startswith("Total") for t in spec["data"])
    # defaults: price Fit (min to max + 5 %), stake Auto, rewards Log
    prices = [price(o, e) / PERQ for o in (3, 4) for e in EPOCHS]
    low, high = min(prices), max(prices)
    pad = (high - low) * 0.05
    assert layout["yaxis"]["range"] == pytest.approx([low - pad, high + pad], rel=1e-12)
    assert layout["yaxis2"].get("type", "linear") == "linear" and layout["yaxis2"]["autorange"]
    assert layout["yaxis3"]["type"] == "log"
    assert layout["yaxis2"]["tickformat"] == ".3~s"  # 1.5M, not 1.5e+6
    at.session_state["ex_more"] = True  # open "Axes, unit, band, totals, live"
    run(at)
    at.toggle(key="ex_totals").set_value(True)
    at.segmented_control(key="ex_stake_scale").set_value("log")
    at.segmented_control(key="ex_scale").set_value("auto")
    spec = spec_of(run(at))
    names = {t.get("name") for t in spec["data"]}
    assert {"Total stake", "Total rewards"} <= names
    assert spec["layout"]["yaxis2"]["type"] == "log"
    assert spec["layout"]["yaxis"]["autorange"] is True
    assert at.query_params["totals"] == "1" and at.query_params["stake_scale"] == "log"
    # changes per epoch cannot be drawn on a log axis: Log falls back to Fit
    at.segmented_control(key="ex_scale").set_value("log")
    at.segmented_control(key="ex_mode").set_value("bps")
    spec = spec_of(run(at))
    assert spec["layout"]["yaxis"]["type"] == "linear" and "range" in spec["layout"]["yaxis"]


def test_band_needs_ten_operators(db_url, engine):
    load(engine, [Row(o, e, PERQ + o + e) for o in (1, 2) for e in range(50)])
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["ex_more"] = True  # open "Axes, unit, band, totals, live"
    band = run(at).toggle(key="ex_band")
    assert band.disabled
    assert "at least 10 operators" in " ".join(c.value for c in at.caption)
    names = [t.get("name") or "" for t in spec_of(at)["data"]]
    assert not any("All operators" in n for n in names)


# --- the wide CSV -----------------------------------------------------------------------------


def test_wide_csv_equals_the_tables(holed):
    series = queries.series_v2(holed, queries.SeriesRequest(operators=(10, 11)))
    frame = explorer_state.wide_frame(
        series, queries.epoch_totals(holed, 0, 170), queries.epoch_blocks(holed, 0, 170)
    )
    text = frame.write_csv()
    lines = text.strip().split("\n")
    assert lines[0] == "epoch,startBlock,endBlock,totalStake,stake10,stake11,rewards10,rewards11"
    with holed.connect() as conn:
        expected_epochs = [
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT DISTINCT epoch FROM operator_shares WHERE operator_id IN (10, 11) "
                "ORDER BY epoch"
            )
        ]
        totals = {
            e: int(v)
            for e, v in conn.exec_driver_sql(
                "SELECT epoch, sum(stake_raw) FROM operator_shares GROUP BY epoch"
            )
        }
        ends = {e: b for e, b in conn.exec_driver_sql("SELECT epoch, end_block FROM epochs")}
        own = {
            (o, e): (s, r)
            for o, e, s, r in conn.exec_driver_sql(
                "SELECT operator_id, epoch, stake_raw, rewards_raw FROM operator_shares"
            )
        }
    assert [int(line.split(",")[0]) for line in lines[1:]] == expected_epochs
    for line in lines[1:]:
        cells = line.split(",")
        e = int(cells[0])
        start = "" if e - 1 not in ends else str(ends[e - 1] + 1)
        if e == 150:
            start = "123456"  # after the hole: the document's startBlock
        expected = [str(e), start, str(ends[e]), str(totals[e])]
        for kind in (0, 1):
            for o in (10, 11):
                value = own.get((o, e))
                expected.append("" if value is None else str(int(value[kind])))
        assert cells == expected, line
    assert explorer_state.wide_csv_name(170) == "epochs_raw_e170.csv"


def test_band_polygons_close_per_run_of_epochs(holed):
    band = queries.band_v2(holed, queries.SeriesRequest())
    holes = queries.epoch_holes(holed, 0, 170)
    assert holes == ((99, 150),)
    empty = queries.finish_series(queries.empty_series())
    figure = charts.explorer_figure(empty, {}, band=band, holes=holes)
    (outer,) = [t for t in figure.data if t.name == "All operators p5–p95"]
    x, y = np.asarray(outer.x, dtype=float), np.asarray(outer.y, dtype=float)
    runs = np.split(np.arange(len(y)), np.flatnonzero(np.isnan(y)))
    runs = [r[~np.isnan(y[r])] for r in runs]
    assert len(runs) == 2  # one polygon before the hole, one after
    for run, (lo, hi) in zip(runs, ((0, 99), (150, 170)), strict=True):
        part = band.filter(pl.col("epoch").is_between(lo, hi))
        n = part.height
        assert list(x[run][:n]) == part["epoch"].to_list()  # along the top ...
        assert list(y[run][:n]) == part["p95_price"].to_list()
        assert (
            list(y[run][n:]) == part["p05_price"].to_list()[::-1]
        )  # ... and back along the bottom


def test_totals_from_the_stored_table_and_live_agree_with_the_rows(holed):
    with holed.connect() as conn:
        expected = {
            e: (int(n), int(s), int(f), int(r))
            for e, n, s, f, r in conn.exec_driver_sql(
                "SELECT epoch, count(*), sum(stake_raw), sum(storage_fee_raw), sum(rewards_raw) "
                "FROM operator_shares GROUP BY epoch"
            )
        }

    def as_dict(frame):
        return {row[0]: tuple(row[1:]) for row in frame.iter_rows()}

    stored = queries.epoch_totals(holed, 0, 170)
    assert as_dict(stored) == expected
    with holed.begin() as conn:  # stale or missing stored rows: summed live instead
        conn.exec_driver_sql("DELETE FROM epoch_totals WHERE epoch BETWEEN 10 AND 160")
        conn.exec_driver_sql("UPDATE epoch_totals SET total_stake = 1 WHERE epoch = 5")
    assert as_dict(queries.epoch_totals(holed, 0, 170))[5] == (12, 1, *expected[5][2:])
    with holed.begin() as conn:
        conn.exec_driver_sql("UPDATE epoch_totals SET operators = 11 WHERE epoch = 5")
    assert as_dict(queries.epoch_totals(holed, 0, 170)) == expected
