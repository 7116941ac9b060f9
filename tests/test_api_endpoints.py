"""The HTTP API on a real server, started the way `make run` starts it (`streamlit run
dashboard.py`), over the imported real samples, read through the read-only reader role.

Expected values come from the raw JSON files, decoded here by DOMAIN.md's rules (storage keys,
u128 hex, comma-grouped rewards, floor(stake * 1e18 / shares)), never from the server's output.
"""

from __future__ import annotations

import io
import itertools
import time
from pathlib import Path

import httpx
import orjson
import polars as pl
import pytest
import sqlalchemy as sa
from helpers.database import TEMPLATE_DB, drop_database, new_database

from shareprice import backfill, queries
from shareprice.bench.streamlit_server import streamlit_server
from shareprice.ingest.importer import import_paths
from shareprice.store import db, roles

FLAT = "flat-export-220-epochs.json"
DUMP = "storage-dump-epoch-2647.json"
PERQ = 10**18


def _u128(value) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _dump_expected(doc: dict) -> dict:
    """The old-API row of a Format A document, decoded from the raw JSON."""
    states = {}
    for entry in doc["operators"]["entries"]:
        key, payload = entry["value"].split(",", 1)
        operator_id = int.from_bytes(bytes.fromhex(key[66:82]), "little")
        state = orjson.loads(payload)
        stake, shares = _u128(state["currentTotalStake"]), _u128(state["currentTotalShares"])
        states[str(operator_id)] = (stake, shares, _u128(state["totalStorageFeeDeposit"]))
    rewards = doc["domainStakingSummary"]["currentEpochRewards"]
    return {
        "domainId": 0,
        "epoch": doc["epoch"],
        "endBlock": doc["endBlock"],
        "timestamp": doc["timestamp"],
        "totalStake": str(sum(s[0] for s in states.values())),
        "storageFees": str(sum(s[2] for s in states.values())),
        "operators": len(states),
        "operatorStakes": {k: str(s[0]) for k, s in states.items()},
        "rewards": {k: v.replace(",", "") for k, v in rewards.items()},
        "operatorSharePrices": {k: str(s[0] * PERQ // s[1]) for k, s in states.items()},
    }


def _flat_expected(doc: dict, previous: dict | None) -> dict:
    """The old-API row of a Format B document: its own maps (an operator counts when it has a
    stake and a price), the start block known only from the previous epoch's end block."""
    prices = doc.get("operatorSharePrices", {})
    ids = [k for k in doc["operatorStakes"] if k in prices]
    return {
        "domainId": 0,
        "epoch": doc["epoch"],
        "startBlock": None if previous is None else previous["endBlock"] + 1,
        "endBlock": doc["endBlock"],
        "timestamp": None,
        "totalStake": str(sum(int(doc["operatorStakes"][k]) for k in ids)),
        "storageFees": None,  # flat exports carry no per-operator storage fees
        "operators": len(ids),
        "operatorStakes": {k: doc["operatorStakes"][k] for k in ids},
        "rewards": {k: v for k, v in doc.get("rewards", {}).items() if k in ids},
        "operatorSharePrices": {k: prices[k] for k in ids},
    }


@pytest.fixture(scope="module")
def samples(shared_data: Path) -> dict:
    flat = orjson.loads((shared_data / FLAT).read_bytes())
    dump = orjson.loads((shared_data / DUMP).read_bytes())[0]
    by_epoch = {d["epoch"]: d for d in flat}
    expected = {e: _flat_expected(d, by_epoch.get(e - 1)) for e, d in by_epoch.items()}
    dump_row = _dump_expected(dump)
    dump_row["startBlock"] = None  # epoch 2646 is not in the samples
    expected[dump["epoch"]] = dump_row
    return {"flat": by_epoch, "dump": dump, "rows": expected}


@pytest.fixture(scope="module")
def api_db(pg_admin_url, template_url, shared_data):
    url = new_database(pg_admin_url, TEMPLATE_DB)
    engine = sa.create_engine(url)
    try:
        import_paths(engine, [shared_data / FLAT, shared_data / DUMP])
        summary = backfill.run_backfill(engine, backfill.Options(workers=1))
        assert summary.ok and summary.epochs_failed == 0, summary
        roles.ensure_roles(engine)
    finally:
        engine.dispose()
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture(scope="module")
def server(api_db, tmp_path_factory):
    main = api_db.render_as_string(hide_password=False)
    reader = api_db.set(username=roles.READER, password=None).render_as_string(hide_password=False)
    log = tmp_path_factory.mktemp("api") / "streamlit.log"
    # A short statement timeout, so the timeout test waits 3 s rather than the default 10.
    env = {"SHAREPRICE_API_TIMEOUT_MS": "3000"}
    with streamlit_server(main, log, readonly_url=reader, **env) as running:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            yield client


def _database_state(url) -> tuple:
    with db.connect(url) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM epochs), (SELECT count(*) FROM operator_share_prices),"
            " (SELECT count(*) FROM epoch_normalizations), "
            "(SELECT count(*) FROM pg_tables WHERE schemaname = 'public')"
        ).fetchone()


def test_dashboard_and_api_share_one_port(server):
    assert server.get("/_stcore/health").text == "ok"
    page = server.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert server.get("/api/v1/health").json()["database"] == "ok"


def test_every_epoch_row_equals_the_raw_samples(server, samples):
    response = server.get("/api/epochs")
    assert response.status_code == 200
    rows = response.json()
    assert [r["epoch"] for r in rows] == sorted(samples["rows"])
    for row in rows:
        assert row == samples["rows"][row["epoch"]], row["epoch"]
    assert response.headers["x-operators"] == "all 2"


def test_old_frontend_fields_have_the_old_types(server):
    for row in server.get("/api/epochs-v2?limit=all").json():
        assert type(row["domainId"]) is int and type(row["epoch"]) is int
        assert type(row["operators"]) is int and type(row["endBlock"]) is int
        assert row["startBlock"] is None or type(row["startBlock"]) is int
        assert row["timestamp"] is None or type(row["timestamp"]) is int
        assert type(row["totalStake"]) is str and row["totalStake"].isdigit()
        assert row["storageFees"] is None or row["storageFees"].isdigit()
        for field in ("operatorStakes", "rewards", "operatorSharePrices"):
            assert all(k.isdigit() and v.isdigit() for k, v in row[field].items())


def test_exact_prices_of_the_storage_dump(server, samples):
    dump = samples["dump"]
    row = server.get("/api/epochs-v2?limit=1").json()[0]
    assert row["epoch"] == 2647
    # DOMAIN.md: operator 0's computed stake-per-share price on the real sample.
    assert row["operatorSharePrices"]["0"] == "1000036353676459997"
    assert row["endBlock"] == dump["endBlock"] and row["timestamp"] == dump["timestamp"]


def test_epochs_v2_says_its_version(server):
    assert server.get("/api/epochs-v2?limit=1").headers["x-api-version"] == "2.0"
    assert "x-api-version" not in server.get("/api/epochs?limit=1").headers


def test_limit_takes_the_newest_epochs_ascending(server, samples):
    newest = sorted(samples["rows"])[-3:]
    assert [r["epoch"] for r in server.get("/api/epochs-v2?limit=3").json()] == newest
    assert len(server.get("/api/epochs-v2?limit=all").json()) == len(samples["rows"])


def test_sample_is_evenly_spaced_and_keeps_the_last_row(server, samples):
    every = sorted(samples["rows"])
    for n in (1, 2, 5, 50):
        epochs = [r["epoch"] for r in server.get(f"/api/epochs-v2?sample={n}").json()]
        assert len(epochs) == n and epochs[-1] == every[-1]
        assert epochs == sorted(set(epochs)) and set(epochs) <= set(every)
        if n > 1:
            assert epochs[0] == every[0]
            gaps = [every.index(b) - every.index(a) for a, b in itertools.pairwise(epochs)]
            assert max(gaps) - min(gaps) <= 1
    assert len(server.get("/api/epochs-v2?sample=20000").json()) == len(every)
    limited = [r["epoch"] for r in server.get("/api/epochs-v2?limit=10&sample=3").json()]
    assert limited == [every[-10], every[-6], every[-1]]


def test_operators_narrow_the_maps_but_not_the_totals(server, samples):
    row = server.get("/api/epochs-v2?limit=1&operators=1").json()[0]
    expected = samples["rows"][2647]
    assert row["operatorSharePrices"] == {"1": expected["operatorSharePrices"]["1"]}
    assert row["operatorStakes"] == {"1": expected["operatorStakes"]["1"]}
    assert row["totalStake"] == expected["totalStake"] and row["operators"] == 2


def test_health_of_the_old_api(server, samples):
    newest = sorted(samples["rows"])[-100:]
    with_rewards = sum(1 for e in newest if samples["rows"][e]["rewards"])
    body = server.get("/api/epochs?health=1").json()
    assert body == {
        "sample": 100,
        "rewardsAvailable": with_rewards,
        "normalizedDataAvailable": True,
    }


def test_summary_is_the_latest_epoch_exactly(server, samples):
    expected = samples["rows"][2647]
    rewards = sum(int(v) for v in expected["rewards"].values())
    assert server.get("/api/summary").json() == {
        "epoch": 2647,
        "endBlock": expected["endBlock"],
        "timestamp": expected["timestamp"],
        "totalStake": expected["totalStake"],
        "storageFees": expected["storageFees"],
        "rewardsTotal": str(rewards),
        "operatorSharePrices": expected["operatorSharePrices"],
    }


def test_raw_epochs_are_the_stored_documents_newest_first(server, samples):
    assert [d["epoch"] for d in server.get("/api/raw-epochs").json()] == [2647]
    documents = server.get("/api/raw-epochs?limit=3").json()
    assert [d["epoch"] for d in documents] == [2647, 2619, 218]
    assert documents[0]["data"] == samples["dump"]
    assert documents[1]["data"] == samples["flat"][2619]


def test_v1_operators_series_and_band(server, samples):
    operators = server.get("/api/v1/operators").json()
    assert [o["operator_id"] for o in operators] == [0, 1]
    latest = samples["rows"][2647]
    assert operators[0]["share_price_perq"] == latest["operatorSharePrices"]["0"]
    assert operators[1]["stake"] == latest["operatorStakes"]["1"]

    series = server.get("/api/v1/series?operators=0&max_points=20000")
    assert series.headers["x-operators"] == "0"
    rows = series.json()
    expected = {
        e: r["operatorSharePrices"]["0"]
        for e, r in samples["rows"].items()
        if "0" in r["operatorSharePrices"]
    }
    assert {r["epoch"]: r["share_price_perq"] for r in rows} == expected
    assert all(r["operator_id"] == 0 for r in rows)

    csv = server.get("/api/v1/series?operators=0&max_points=20000&format=csv")
    assert csv.headers["content-type"].startswith("text/csv")
    frame = pl.read_csv(io.BytesIO(csv.content), schema_overrides={"share_price_perq": pl.String})
    assert dict(zip(frame["epoch"], frame["share_price_perq"], strict=True)) == expected

    parquet = server.get("/api/v1/series?operators=0&max_points=20000&format=parquet")
    frame = pl.read_parquet(io.BytesIO(parquet.content))
    assert frame.schema["share_price_perq"] == pl.Int128
    assert {e: str(p) for e, p in frame.select("epoch", "share_price_perq").iter_rows()} == (
        expected
    )

    band = server.get("/api/v1/band?max_points=20000").json()
    at_2647 = next(r for r in band if r["epoch"] == 2647)
    prices = sorted(int(p) for p in latest["operatorSharePrices"].values())
    assert at_2647["operators"] == 2
    assert at_2647["p05"] == str(prices[0]) and at_2647["p95"] == str(prices[-1])


def test_v1_health_progress_and_checks(server, samples):
    health = server.get("/api/v1/health").json()
    assert health["latest_epoch"] == 2647 and health["replica"] is False
    assert health["raw_epochs"] == health["normalized_epochs"] == len(samples["rows"])
    assert health["normalized_share"] == 1.0 and type(health["data_version"]) is int
    progress = server.get("/api/v1/progress").json()
    assert progress["normalized_epochs"] == len(samples["rows"])
    assert server.get("/api/v1/checks/latest").status_code == 404  # no check has run here
    assert "/api/v1/series" in server.get("/api/openapi.json").json()["paths"]
    assert server.get("/api/docs").status_code == 200


def test_etag_and_304_follow_the_data_version(server, api_db, pg_admin_url):
    first = server.get("/api/epochs-v2?limit=5")
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, no-cache"
    again = server.get("/api/epochs-v2?limit=5", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    # A backfill write moves the data version: the old tag no longer matches.
    with db.connect(api_db, autocommit=True) as conn:
        conn.execute("SELECT nextval('data_version_seq')")
    fresh = server.get("/api/epochs-v2?limit=5", headers={"If-None-Match": tag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != tag
    assert fresh.json() == first.json()


BAD_REQUESTS = [
    ("/api/epochs?limit=0", "limit"),
    ("/api/epochs?limit=-1", "limit"),
    ("/api/epochs?limit=5001", "limit"),
    ("/api/epochs?limit=abc", "limit"),
    ("/api/epochs?limit=1.5", "limit"),
    ("/api/epochs?limit=1;DROP TABLE epochs", "limit"),
    ("/api/epochs-v2?sample=0", "sample"),
    ("/api/epochs-v2?sample=20001", "sample"),
    ("/api/epochs-v2?sample=1e3", "sample"),
    ("/api/epochs-v2?operators=abc", "operators"),
    ("/api/epochs-v2?operators=-1", "operators"),
    ("/api/epochs-v2?operators=99999", "operators"),
    ("/api/epochs-v2?operators=0) OR 1=1 --", "operators"),
    ("/api/epochs-v2?operators=0&operators=1", "operators"),
    ("/api/epochs-v2?health=2", "health"),
    ("/api/raw-epochs?limit=0", "limit"),
    ("/api/raw-epochs?limit=101", "limit"),
    ("/api/raw-epochs?limit=x'; DELETE FROM epochs; --", "limit"),
    ("/api/v1/series?operators=999", "operators"),
    ("/api/v1/series?max_points=5", "max_points"),
    ("/api/v1/series?max_points=20001", "max_points"),
    ("/api/v1/series?format=xml", "format"),
    ("/api/v1/series?from=10&to=5", "from"),
    ("/api/v1/series?last=0", "last"),
    ("/api/v1/series?colour=red", "colour"),
    ("/api/v1/band?from=-5", "from"),
    ("/api/v1/operators?limit=5", "limit"),
]


def test_every_bad_parameter_is_a_400_naming_it_and_changes_nothing(server, api_db):
    before = _database_state(api_db)
    for path, parameter in BAD_REQUESTS:
        response = server.get(path)
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        message = response.json()["error"]
        assert message.startswith(parameter), (path, message)
        assert "Traceback" not in message
    assert _database_state(api_db) == before


def test_unknown_paths_and_methods_answer_json(server):
    missing = server.get("/api/v3/nothing")
    assert missing.status_code == 404 and "error" in missing.json()
    post = server.post("/api/epochs")
    assert post.status_code == 405 and "error" in post.json()


def test_the_api_reads_through_the_reader_role(server, api_db):
    server.get("/api/epochs?limit=1")
    with db.connect(api_db) as conn:
        users = {
            r[0]
            for r in conn.execute(
                "SELECT usename FROM pg_stat_activity WHERE datname = %s", (api_db.database,)
            )
        }
    assert roles.READER in users


def test_cors_is_closed_by_default(server):
    origin = {"Origin": "https://elsewhere.example"}
    response = server.get("/api/summary", headers=origin)
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = server.options(
        "/api/summary",
        headers={**origin, "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_sql_and_parser_paths_give_the_same_rows(api_db):
    engine = db.get_engine(api_db)
    for kwargs in ({}, {"limit": 7}, {"sample": 9, "operators": (1,)}):
        v2 = queries.epoch_rows(engine, **kwargs)
        v1 = queries.epoch_rows_v1(engine, **kwargs)
        assert [orjson.loads(r) for r in v2.rows] == [orjson.loads(r) for r in v1.rows]
        assert len(v2.rows) > 0


def test_large_bodies_are_sent_gzipped_to_clients_that_accept_it(server):
    plain = server.get("/api/epochs-v2", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and len(plain.content) > 32 * 1024
    for _ in range(2):  # computed, then from the cache
        packed = server.get("/api/epochs-v2", headers={"Accept-Encoding": "gzip"})
        assert packed.headers["content-encoding"] == "gzip"
        assert int(packed.headers["content-length"]) < len(plain.content) / 3
        assert packed.json() == plain.json()


def test_a_statement_over_the_timeout_is_a_503_and_the_next_request_answers(server, api_db):
    path = "/api/epochs-v2?limit=3&operators=0&sample=2"  # asked nowhere else: not cached
    with db.connect(api_db) as conn:
        conn.execute("LOCK TABLE epoch_normalizations IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        blocked = server.get(path)
        waited = time.monotonic() - started
        conn.rollback()
    assert blocked.status_code == 503, blocked.text
    assert blocked.json()["error"] == "the query took longer than the 3000 ms statement timeout"
    assert 2.5 < waited < 20
    assert server.get(path).status_code == 200
