"""The Nominators page in AppTest: empty states, a nominator found by address (typed or from
the URL), cards with exact values, the value chart with gaps, per operator the count, holders
and concentration; a bad address is a message, never a traceback."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from helpers import nominator_rows as nr
from streamlit.testing.v1 import AppTest

from shareprice.chain import ss58
from shareprice.display import explorer_state, nominator_view

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages/nominators.py")
PERQ = 10**18


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def text_of(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [i.value for i in at.info] + [e.value for e in at.error]
    parts += [h.proto.body for h in at.get("html")]
    return "\n".join(str(p) for p in parts)


@pytest.fixture()
def scenario(engine):
    nr.load_scenario(engine)
    return engine


def test_empty_database_says_how_to_fill_it(db_url):
    at = run(AppTest.from_file(PAGE, default_timeout=60))
    assert "shareprice demo" in " ".join(i.value for i in at.info)


def test_no_positions_data_is_a_clear_message(engine):
    from helpers.normalized_rows import Row, load

    load(engine, [Row(0, 1, PERQ)])
    at = run(AppTest.from_file(PAGE, default_timeout=60))
    assert "No nominator positions are stored yet" in " ".join(i.value for i in at.info)


def test_nominator_from_the_link_shows_exact_cards_and_a_chart(scenario):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["address"] = "0x" + nr.BOB.hex()
    run(at)
    text = text_of(at)
    address = ss58.encode(nr.BOB)
    assert f"Nominator {address}" in [s.value for s in at.subheader]
    assert at.query_params["address"] == address  # normalized to SS58 in the URL
    value = 500 * nr.AI3 * nr.price(0, 20) // PERQ
    assert explorer_state.format_amount(value, "AI3") in text
    assert explorer_state.format_amount(490 * nr.AI3, "AI3") in text  # principal held
    assert f"{500 * nr.AI3:,}" in text  # effective shares, exact
    share = 500 * nr.AI3 * PERQ // nr.operator_shares(0)
    assert nominator_view.fraction_text(share) in text
    charts = at.get("plotly_chart")
    assert charts, "the value chart"
    at.segmented_control(key="nom_unit").set_value("Shannons")
    run(at)
    assert f"{value:,} Shannons" in text_of(at)


def test_pending_withdrawal_and_gaps(scenario):
    at = AppTest.from_file(PAGE, default_timeout=60)
    run(at)
    at.text_input(key="nom_address").set_value(ss58.encode(nr.ALICE))
    run(at)
    text = text_of(at)
    assert "converts at the end of epoch 20" in text
    assert f"unlockable since block {nr.UNLOCK_LIST:,}" in text
    import json

    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    line = next(t for t in spec["data"] if t.get("mode") == "lines" and t["name"].startswith("#0"))
    xs = line["x"]
    assert None in xs and 14 not in xs  # the hole is a gap
    assert xs.index(None) == xs.index(13) + 1 and xs[xs.index(None) + 1] == 15
    markers = [t for t in spec["data"] if t.get("mode") == "markers"]
    assert {t["name"].split()[-1] for t in markers} >= {"deposit", "withdrawal"}


def test_bad_address_is_a_message(scenario):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["address"] = "0xnothex"
    run(at)
    assert any("address:" in e.value and "64 hex digits" in e.value for e in at.error)


def test_unknown_address_says_so(scenario):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["address"] = "0x" + "00" * 32
    run(at)
    assert any("No position of this address" in i.value for i in at.info)


def test_operator_view_counts_holders_and_concentration(scenario):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["operator"] = "0"
    run(at)
    assert at.selectbox(key="nom_operator").value == 0
    assert "2 nominators at epoch 20" in text_of(at)
    assert "hold 100.00%" in text_of(at)
    (table,) = [h.proto.body for h in at.get("html") if "sp-holders" in h.proto.body]
    links = re.findall(r'<a href="([^"]+)"', table)
    assert [html.unescape(link) for link in links] == [
        nominator_view.nominator_link(ss58.encode(nr.BOB)),
        nominator_view.nominator_link(ss58.encode(nr.CAROL)),
    ]
    at.selectbox(key="nom_operator").set_value(1)
    run(at)
    assert at.query_params["operator"] == "1"
    assert "1 nominator at epoch 20, with no effective shares" in text_of(at)


def test_explorer_links_to_the_operator_nominators():
    import polars as pl

    frame = pl.DataFrame(
        {
            "operator_id": [3],
            "name": ["x"],
            "status": ["registered"],
            "color": ["#123456"],
            "share_price_perq": [PERQ],
            "stake": [PERQ],
            "rewards": [None],
            **{f"yield_{d}d": [None] for d in (1, 7, 30)},
            **{f"span_{d}d": [None] for d in (1, 7, 30)},
        }
    )
    assert 'href="nominators?operator=3"' in explorer_state.operator_cards_html(frame, "AI3")
