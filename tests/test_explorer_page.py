"""The explorer page: state in the URL (validated), widgets drive the request, never a traceback."""

import base64
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.normalized_rows import Row, load
from streamlit.testing.v1 import AppTest

from shareprice.display import explorer_state

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages/explorer.py")
PERQ = 10**18
KNOWN = range(0, 12)


def parse(params, **kw):
    return explorer_state.state_from_query(
        params, known_operators=KNOWN, default_ops=(1, 2), first_epoch=0, last_epoch=99, **kw
    )


# --- the query string ---------------------------------------------------------------------------


def test_valid_link_round_trips():
    state, notices = parse(
        {"ops": "3,1,7", "from": "10", "to": "90", "mode": "bps", "unit": "shannons", "band": "0"}
    )
    assert notices == []
    assert state == explorer_state.ExplorerState(
        operators=(3, 1, 7),
        preset="custom",
        epoch_from=10,
        epoch_to=90,
        mode="bps",
        unit="Shannons",
        band=False,
    )
    again, notices = parse(explorer_state.to_query(state))
    assert again == state and notices == []
    preset, _ = parse({"ops": "1", "range": "200", "scale": "log", "mode": "indexed"})
    assert (preset.preset, preset.scale, preset.mode) == ("200", "log", "indexed")
    assert parse(explorer_state.to_query(preset))[0] == preset


def test_no_link_gives_defaults():
    state, notices = parse({})
    assert state == explorer_state.ExplorerState(operators=(1, 2)) and notices == []


@pytest.mark.parametrize(
    "params",
    [
        {"ops": "1;DROP TABLE operator_share_prices"},
        {"ops": "1,2' OR '1'='1"},
        {"ops": "99999999999999999999999"},
        {"ops": "-1,١"},  # a negative id and an Arabic-Indic digit
        {"from": "0", "to": "1e9"},
        {"from": "50", "to": "10"},
        {"from": "-5"},
        {"range": "'; SELECT pg_sleep(10); --"},
        {"mode": "<script>alert(1)</script>"},
        {"scale": "cubic"},
        {"unit": "dollars"},
        {"band": "yes"},
        {"ops": "1" * 5000},
    ],
)
def test_hostile_or_broken_links_fall_back_with_a_notice(params):
    state, notices = parse(params)
    assert notices, params
    assert set(state.operators) <= set(KNOWN)
    assert state.mode in ("absolute", "bps", "indexed") and state.scale in ("auto", "fit", "log")
    request = explorer_state.request_for(state)  # always a valid request
    assert request.operators == state.operators


def test_unknown_ids_are_dropped_known_kept():
    state, notices = parse({"ops": "2,500,3,x"})
    assert state.operators == (2, 3)
    assert "'500'" in notices[0] and "'x'" in notices[0]


def test_too_many_operators_are_capped():
    state, notices = parse(
        {"ops": ",".join(str(i) for i in range(40))},
    )
    assert len(state.operators) <= explorer_state.MAX_SELECTED


def test_log_scale_is_refused_for_changes():
    state, notices = parse({"mode": "bps", "scale": "log"})
    assert state.scale == "fit" and notices


def test_preset_windows():
    assert explorer_state.preset_window("50", 0, 99) == (50, 99)
    assert explorer_state.preset_window("1000", 0, 99) == (0, 99)
    assert explorer_state.preset_window("all", 3, 99) == (3, 99)


# --- the page -----------------------------------------------------------------------------------


@pytest.fixture()
def loaded(engine):
    rows = [
        Row(o, e, PERQ + o * 10**9 * e + e, stake=(o + 1) * 10**21, rewards=10**15)
        for o in range(12)
        for e in range(0, 300)
    ]
    load(
        engine,
        rows,
        statuses={5: "deregistered", 6: "slashed"},
        names={7: "Evil'); DROP TABLE epochs; --"},
    )
    return rows


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def chart_spec(at: AppTest) -> dict:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def test_page_on_empty_database(db_url):
    at = run(AppTest.from_file(PAGE, default_timeout=60))
    assert "shareprice demo" in " ".join(i.value for i in at.info)


def test_page_default_view(db_url, loaded):
    at = run(AppTest.from_file(PAGE, default_timeout=60))
    spec = chart_spec(at)
    names = [t.get("name") for t in spec["data"]]
    # the 8 largest active operators by stake: 11..4 minus deregistered 5 and slashed 6
    assert at.multiselect(key="ex_ops").value == [2, 3, 4, 7, 8, 9, 10, 11]
    assert "All operators median" in names
    assert sum(1 for t in spec["data"] if t.get("legendgroup") == "7") == 3  # price, stake, rewards
    assert at.query_params["ops"] == "2,3,4,7,8,9,10,11"
    assert any("epochs 0–299" in c.value for c in at.caption)


def test_widgets_change_the_request(db_url, loaded):
    at = run(AppTest.from_file(PAGE, default_timeout=60))
    at.multiselect(key="ex_ops").set_value([5, 6])
    run(at)
    spec = chart_spec(at)
    groups = {t.get("legendgroup") for t in spec["data"]}
    assert {"5", "6"} <= groups and "7" not in groups
    # deregistered and slashed series are marked where they end
    texts = [t.get("text") for t in spec["data"] if t.get("mode") == "markers+text"]
    assert ["deregistered"] in texts and ["slashed"] in texts
    at.segmented_control(key="ex_preset").set_value("50")
    run(at)
    assert any("epochs 250–299" in c.value for c in at.caption)
    assert at.query_params["range"] == "50"
    at.segmented_control(key="ex_mode").set_value("bps")
    run(at)
    assert at.query_params["mode"] == "bps"
    assert not any("median" in (t.get("name") or "") for t in chart_spec(at)["data"])
    at.slider(key="ex_range").set_value((100, 120))
    run(at)
    assert at.query_params["from"] == "100" and at.query_params["to"] == "120"
    assert any("epochs 100–120" in c.value for c in at.caption)


def test_page_restores_state_from_the_link(db_url, loaded):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params.update(
        {
            "ops": "7,1",
            "from": "10",
            "to": "20",
            "mode": "indexed",
            "scale": "log",
            "unit": "shannons",
        }
    )
    run(at)
    assert at.multiselect(key="ex_ops").value == [7, 1]
    assert at.slider(key="ex_range").value == (10, 20)
    assert at.segmented_control(key="ex_mode").value == "indexed"
    # the unit's control is drawn only while its expander is open; the link's unit holds anyway
    assert "ex_unit" not in {w.key for w in at.segmented_control}
    assert at.expander[0].label.startswith("Axes, unit")
    assert at.query_params["unit"] == "shannons" and at.query_params["scale"] == "log"
    at.session_state["ex_more"] = True
    run(at)
    assert at.segmented_control(key="ex_unit").value == "Shannons"
    assert not at.warning or all("read-write" in w.value for w in at.warning)
    spec = chart_spec(at)
    assert spec["layout"]["yaxis"]["type"] == "log"
    assert {t.get("legendgroup") for t in spec["data"]} >= {"7", "1"}


def test_hostile_link_on_the_page(db_url, loaded, engine):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params.update({"ops": "1;DELETE FROM operator_share_prices", "mode": "x' OR 1=1"})
    run(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "Ignored unknown operator ids" in warnings and "Unknown mode" in warnings
    with engine.connect() as conn:
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM operator_share_prices").scalar_one() == 3600
        )
        assert conn.exec_driver_sql("SELECT count(*) FROM epochs").scalar_one() == 300


def test_downloads_are_what_is_shown(db_url, loaded):
    at = run(AppTest.from_file(PAGE, default_timeout=60))
    assert not at.get("download_button")  # built only while the Download menu is open
    at.session_state["ex_downloads"] = True
    run(at)
    assert {b.label for b in at.get("download_button")} == {
        "Download CSV",
        "Wide CSV (raw)",
        "Download Parquet",
    }


def plotly_values(array) -> np.ndarray:
    """A plotly JSON array: a list, or a base64 typed array {"dtype", "bdata"}."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    return np.array([np.nan if v is None else v for v in array], dtype=np.float64)


def assert_dates_once(spec: dict) -> None:
    """Hover dates travel once per figure: one invisible first trace on its own hidden axis,
    at every epoch any operator's line draws, in date order; no other trace carries them."""
    dated = [t for t in spec["data"] if t.get("customdata") is not None]
    assert len(dated) == 1 and dated[0] is spec["data"][0]
    (trace,) = dated
    assert trace["yaxis"] == "y4" and trace["showlegend"] is False and trace["mode"] == "none"
    assert spec["layout"]["xaxis"]["unifiedhovertitle"]["text"].startswith("epoch ")
    axis = spec["layout"]["yaxis4"]
    assert axis["overlaying"] == "y" and axis["visible"] is False
    drawn: set[float] = set()
    for line in spec["data"]:
        if line.get("yaxis") == "y" and line.get("mode") == "lines" and line.get("legendgroup"):
            x, y = plotly_values(line["x"]), plotly_values(line["y"])
            drawn |= set(x[~np.isnan(y)].tolist())
    assert plotly_values(trace["x"]).tolist() == sorted(drawn)
    dates = trace["customdata"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", d) for d in dates)
    assert dates == sorted(dates)


def test_page_on_generated_demo_data(normalized_small_url, raw_small_summary, monkeypatch):
    monkeypatch.setenv(
        "SHAREPRICE_DATABASE_URL", normalized_small_url.render_as_string(hide_password=False)
    )
    at = run(AppTest.from_file(PAGE, default_timeout=60))
    assert len(at.multiselect(key="ex_ops").value) == 8
    caption = next(c.value for c in at.caption if "points drawn" in c.value)
    assert "hover dates from indexer timestamps" in caption  # generated timestamps look live
    ended = [*raw_small_summary.slashed, *raw_small_summary.deregistered]
    at.multiselect(key="ex_ops").set_value(ended)
    run(at)
    spec = chart_spec(at)
    marks = [t["text"][0] for t in spec["data"] if t.get("mode") == "markers+text"]
    assert "slashed" in marks
    assert_dates_once(spec)
    assert not at.table  # the cards' table is built only when asked for
    at.toggle(key="ex_cards_table").set_value(True)
    run(at)
    table = at.table[0].value
    assert len(table) == len(ended)
    assert all(len(p.split(".")[1]) == 18 for p in table["Share price (exact)"])


def test_download_is_exactly_what_is_drawn(engine, loaded):
    import io

    import pyarrow.parquet as pq

    from shareprice import queries
    from shareprice.display import charts

    operators = queries.operators(engine)
    styles = charts.styles_from(operators)
    series = queries.series_v2(engine, queries.SeriesRequest(operators=(5, 7), max_points=60))
    for mode in ("absolute", "bps", "indexed"):
        shown = charts.shown_frame(series, styles, mode=mode, unit="AI3")
        figure = charts.explorer_figure(series, styles, mode=mode)
        drawn = [t for t in figure.data if t.legendgroup == "7" and t.yaxis == "y"][0]
        mine = shown.filter(pl.col("operator_id") == 7)
        assert mine["epoch"].to_list() == list(drawn.x)
        value = {
            "absolute": "share_price",
            "bps": "change_bps_per_epoch",
            "indexed": "index_start_100",
        }[mode]
        drawn_y = [None if y != y else float(y) for y in drawn.y]  # NaN: no change at the start
        assert mine[value].to_list() == pytest.approx(drawn_y)
    assert shown["share_price_perq"].to_list() == series["share_price_perq"].to_list()
    assert shown["share_price_exact"][0] == queries.perq_to_decimal(series["share_price_perq"][0])
    table = pq.read_table(io.BytesIO(explorer_state.parquet_bytes(shown)))
    assert table.num_rows == shown.height
    assert int(table.column("stake_shannons")[0].as_py()) == series["stake"][0]


def test_display_options_keep_their_values_while_closed(db_url, loaded):
    """The axes, unit, band, totals and live controls are drawn only while their expander is
    open (first-view speed); closing it must not reset what they were set to."""
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["ex_more"] = True
    run(at)
    at.segmented_control(key="ex_unit").set_value("Shannons")
    at.toggle(key="ex_totals").set_value(True)
    at.segmented_control(key="ex_stake_scale").set_value("log")
    run(at)
    at.session_state["ex_more"] = False
    run(at)
    assert not [w for w in at.segmented_control if w.key == "ex_unit"]
    run(at)  # a second run with the controls still not drawn
    assert at.query_params["unit"] == "shannons"
    assert at.query_params["totals"] == "1" and at.query_params["stake_scale"] == "log"
    names = {t.get("name") for t in chart_spec(at)["data"]}
    assert {"Total stake", "Total rewards"} <= names
    at.session_state["ex_more"] = True
    run(at)
    assert at.segmented_control(key="ex_unit").value == "Shannons"
    assert at.toggle(key="ex_totals").value is True
