"""The nominator endpoints on a real server (`streamlit run dashboard.py`, read-only reader role)
over position rows written by sql/042's rule; expected values computed here from those rows."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from helpers import nominator_rows as nr
from helpers.database import TEMPLATE_DB, drop_database, new_database

from shareprice.bench.streamlit_server import streamlit_server
from shareprice.chain import ss58
from shareprice.store import roles

PERQ = 10**18


@pytest.fixture(scope="module")
def api_db(pg_admin_url, template_url):
    url = new_database(pg_admin_url, TEMPLATE_DB)
    engine = sa.create_engine(url)
    try:
        nr.load_scenario(engine)
        roles.ensure_roles(engine)
    finally:
        engine.dispose()
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture(scope="module")
def server(api_db, tmp_path_factory):
    main = api_db.render_as_string(hide_password=False)
    reader = api_db.set(username=roles.READER, password=None).render_as_string(hide_password=False)
    log = tmp_path_factory.mktemp("nominators-api") / "streamlit.log"
    with streamlit_server(main, log, readonly_url=reader) as running:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            yield client


def test_positions_by_ss58_and_hex_agree_and_are_exact(server):
    address = ss58.encode(nr.BOB)
    by_ss58 = server.get(f"/api/v1/nominators/{address}")
    by_hex = server.get(f"/api/v1/nominators/0x{nr.BOB.hex()}")
    assert by_ss58.status_code == 200 and by_hex.status_code == 200
    assert by_ss58.json() == by_hex.json()
    body = by_ss58.json()
    assert body["address"] == address and body["account"] == "0x" + nr.BOB.hex()
    assert body["epoch"] == 20
    (position,) = body["positions"]
    shares, price = 500 * nr.AI3, nr.price(0, 20)
    assert position["operator_id"] == 0 and position["epoch"] == 20
    assert position["shares"] == str(shares)  # exact, as decimal strings
    assert position["value"] == str(shares * price // PERQ)
    assert position["gain"] == str(shares * price // PERQ - 490 * nr.AI3)
    assert position["deposit_on_hold"] == str(490 * nr.AI3)
    share = shares * PERQ // nr.operator_shares(0)
    assert position["share_of_pool"] == f"{share // PERQ}.{share % PERQ:018d}"
    assert position["withdrawals"] == [] and "history" not in body
    assert by_ss58.headers["etag"].startswith('"sp')


def test_pending_deposit_and_withdrawals_of_the_latest_epoch(server):
    body = server.get(f"/api/v1/nominators/{ss58.encode(nr.ALICE)}").json()
    by_op = {p["operator_id"]: p for p in body["positions"]}
    back = by_op[1]
    assert (back["pending_amount"], back["pending_epoch"]) == (str(5 * nr.AI3), 20)
    assert back["shares"] == "0" and back["pending_converted"] is False
    gone = by_op[0]
    assert gone["shares"] is None and gone["value"] is None
    (unlocking,) = gone["withdrawals"]
    assert unlocking["kind"] == "unlocking" and unlocking["amount"] == str(31 * nr.AI3)
    assert unlocking["unlock_block"] == nr.UNLOCK_LIST and unlocking["unlockable"] is True


def test_history_adds_values_per_epoch_with_holes_and_events(server):
    body = server.get(f"/api/v1/nominators/0x{nr.ALICE.hex()}?history=1").json()
    history = {h["operator_id"]: h for h in body["history"]}
    values = {v["epoch"]: v for v in history[0]["values"]}
    assert sorted(values) == [10, 11, 12, 13, 15, 16, 17, 18]  # hole 14, closed from 19
    assert values[13]["shares"] == str(nr.CONVERTED_0)
    assert values[13]["value"] == str(nr.CONVERTED_0 * nr.price(0, 13) // PERQ)
    assert [e["epoch"] for e in history[1]["events"]] == [11, 15, 18]
    assert [e["kind"] for e in history[1]["events"]] == ["deposit", "withdrawal", "deposit"]


def test_operator_nominators_largest_first_with_concentration(server):
    response = server.get("/api/v1/operators/0/nominators?limit=1")
    assert response.status_code == 200
    body = response.json()
    assert body["epoch"] == 20 and body["count"] == 2  # BOB, CAROL (ALICE closed at 19)
    (top,) = body["nominators"]
    assert top["address"] == ss58.encode(nr.BOB) and top["shares"] == str(500 * nr.AI3)
    assert top["value"] == str(500 * nr.AI3 * nr.price(0, 20) // PERQ)
    assert body["top10_share"] == "1.000000000000000000"  # CAROL's shares are unknown
    everyone = server.get("/api/v1/operators/0/nominators").json()["nominators"]
    assert [n["rank"] for n in everyone] == [1, 2]


@pytest.mark.parametrize(
    ("path", "status", "names"),
    [
        ("/api/v1/nominators/0x1234", 400, "address"),
        ("/api/v1/nominators/suftE5YTB8cS3TnDT5mV1CvTvxforaPLudwkLqZH6HrX8nqBq", 400, "checksum"),
        ("/api/v1/nominators/' OR 1=1 --", 400, "address"),
        (f"/api/v1/nominators/0x{nr.BOB.hex()}?history=yes", 400, "history"),
        (f"/api/v1/nominators/0x{nr.BOB.hex()}?limit=3", 400, "limit: unknown parameter"),
        (f"/api/v1/nominators/0x{'00' * 32}", 404, "no positions"),
        ("/api/v1/operators/abc/nominators", 400, "id"),
        ("/api/v1/operators/99999999999999999999/nominators", 400, "id"),
        ("/api/v1/operators/0/nominators?limit=0", 400, "limit"),
        ("/api/v1/operators/0/nominators?limit=1001", 400, "limit"),
        ("/api/v1/operators/7/nominators", 404, "unknown operator"),
    ],
)
def test_bad_parameters_are_json_errors(server, path, status, names):
    response = server.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert names in response.json()["error"]


def test_etag_revalidates(server):
    path = "/api/v1/operators/1/nominators"
    first = server.get(path)
    again = server.get(path, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_database_down_is_a_503(tmp_path):
    dead = "postgresql://nobody:x@127.0.0.1:9/none"
    with streamlit_server(dead, tmp_path / "streamlit.log") as running:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            for path in (
                f"/api/v1/nominators/0x{nr.BOB.hex()}",
                "/api/v1/operators/0/nominators",
            ):
                response = client.get(path)
                assert response.status_code == 503, response.text
                assert "database unavailable" in response.json()["error"]
                assert "x@" not in response.text  # the password stays masked
