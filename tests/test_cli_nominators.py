"""`shareprice nominators` on the real epoch-2647 sample (imported and backfilled here), with
every expected number decoded in this file from the raw JSON by DOMAIN.md's rules (keys, the
lazy conversion, our price = floor(stake * 10**18 / shares)), not read back from the tables;
its JSON compared with what a real dashboard server's API returns for the same address."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import httpx
import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from helpers.backfill import run_cli
from helpers.database import TEMPLATE_DB, drop_database, new_database

from shareprice.bench.streamlit_server import streamlit_server
from shareprice.cli import main

PERQ = 10**18
SAMPLE = "storage-dump-epoch-2647.json"
EXAMPLE_ACCOUNT = "d4e54c36839df60aa2ea9c75144714d0f5c9a4a59124419a6f8d4432b3c29e0b"
EXAMPLE_SS58 = "suftE5YTB8cS3TnDT5mV1CvTvxforaPLudwkLqZH6HrX8nqBp"


def _u128(value) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _key(entry: dict) -> tuple[int, str, str]:
    """(operator id, account hex, payload) of a Deposits/Withdrawals/DepositOnHold entry."""
    key, payload = entry["value"].split(",", 1)
    return int.from_bytes(bytes.fromhex(key[66:82]), "little"), key[82:], payload


@dataclass(frozen=True)
class Raw:
    epoch: int
    head: int
    effective: dict[tuple[int, str], int]  # (operator, account hex) -> effective shares
    hold: dict[tuple[int, str], int]
    pending_epoch: dict[tuple[int, str], int]
    price: dict[int, int]  # our stake-per-share price, 10**18 scale
    pool: dict[int, int]  # currentTotalShares
    unlocks: dict[tuple[int, str], list[int]]  # unlock blocks of each withdrawal


@pytest.fixture(scope="module")
def raw(shared_data) -> Raw:
    doc = orjson.loads((shared_data / SAMPLE).read_bytes())[0]
    chain = {}
    for entry in doc["operatorEpochSharePrice"]["entries"]:
        key, value = entry["value"].split(",", 1)
        rest = bytes.fromhex(key[66:])
        op = int.from_bytes(rest[:8], "little")
        epoch = int.from_bytes(rest[12:16], "little")
        chain[(op, int.from_bytes(rest[8:12], "little"), epoch)] = int(value)
    price, pool = {}, {}
    for entry in doc["operators"]["entries"]:
        op, _, payload = _key(entry)
        state = json.loads(payload)
        pool[op] = _u128(state["currentTotalShares"])
        price[op] = _u128(state["currentTotalStake"]) * PERQ // pool[op]
    effective, pending_epoch = {}, {}
    for entry in doc["deposits"]["entries"]:
        op, account, payload = _key(entry)
        deposit = json.loads(payload)
        shares = _u128(deposit["known"]["shares"])
        if deposit["pending"] is not None:
            domain, epoch = deposit["pending"]["effectiveDomainEpoch"]
            pending_epoch[(op, account)] = epoch
            if epoch < doc["epoch"]:  # ended: converted at that epoch's chain price
                shares += chain[(op, domain, epoch)] * _u128(deposit["pending"]["amount"]) // PERQ
        effective[(op, account)] = shares
    hold = {}
    for entry in doc["depositOnHold"]["entries"]:
        op, account, payload = _key(entry)
        hold[(op, account)] = int(payload)
    unlocks: dict[tuple[int, str], list[int]] = {}
    for entry in doc["withdrawals"]["entries"]:
        op, account, payload = _key(entry)
        w = json.loads(payload)
        blocks = [item["unlockAtConfirmedDomainBlockNumber"] for item in w["withdrawals"]]
        if w["withdrawalInShares"] is not None:
            blocks.insert(0, w["withdrawalInShares"]["unlockAtConfirmedDomainBlockNumber"])
        unlocks[(op, account)] = blocks
    head = int(str(doc["headDomainNumber"]).replace(",", ""))
    return Raw(doc["epoch"], head, effective, hold, pending_epoch, price, pool, unlocks)


@pytest.fixture(scope="module")
def sample_url(pg_admin_url, template_url, shared_data):
    from shareprice import backfill
    from shareprice.ingest.importer import import_paths

    url = new_database(pg_admin_url, TEMPLATE_DB)
    engine = sa.create_engine(url)
    try:
        import_paths(engine, [shared_data / SAMPLE])
        assert backfill.run_backfill(engine, backfill.Options(workers=1)).ok
    finally:
        engine.dispose()
    yield url
    drop_database(pg_admin_url, url)


def _run(url, *args: str):
    shown = url.render_as_string(hide_password=False)
    return CliRunner().invoke(main, ["nominators", "--url", shown, *args])


def _ok(result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def _decimal(perq: int) -> str:
    return f"{perq // PERQ}.{perq % PERQ:018d}"


def test_example_position_table_is_exact(sample_url, raw):
    key = (0, EXAMPLE_ACCOUNT)
    effective = raw.effective[key]
    value = effective * raw.price[0] // PERQ
    # the numbers, derived here from the raw document
    assert (effective, value) == (159994190344594879058715, 160000006721626145636875)
    out = _ok(_run(sample_url, EXAMPLE_SS58))
    assert f"nominator {EXAMPLE_SS58} (0x{EXAMPLE_ACCOUNT})" in out
    assert f"positions at epoch {raw.epoch:,} (head domain block {raw.head:,})" in out
    card = out.split("\noperator 0\n", 1)[1].split("\noperator ", 1)[0]
    lines = dict(line.strip().split("  ", 1) for line in card.strip().splitlines())
    lines = {k.strip(): v.strip() for k, v in lines.items()}
    assert lines["Value (Shannons)"] == str(value)
    assert lines["Value"] == f"{value // PERQ:,}.{value % PERQ // 10**14:04d} AI3"
    assert lines["Effective shares"] == f"{effective:,}"
    share = effective * PERQ // raw.pool[0] * 100 * 10**4 // PERQ
    assert lines["Share of the pool"] == f"{share // 10**4}.{share % 10**4:04d}%"
    held = raw.hold[key]
    assert lines["Principal held"] == f"{held // PERQ:,}.{held % PERQ // 10**14:04d} AI3"
    epoch = raw.pending_epoch[key]  # ended before 2647: converted
    assert lines["Pending deposit"].endswith(f"converted at the end of epoch {epoch:,}")


def test_json_is_the_api_document(sample_url, raw, tmp_path):
    plain = orjson.loads(_ok(_run(sample_url, EXAMPLE_SS58, "--format", "json")))
    by_hex = orjson.loads(_ok(_run(sample_url, "0x" + EXAMPLE_ACCOUNT, "--format", "json")))
    history = orjson.loads(_ok(_run(sample_url, EXAMPLE_SS58, "--history", "--format", "json")))
    holders = orjson.loads(_ok(_run(sample_url, "--operator", "0", "--format", "json")))
    assert plain == by_hex and "history" not in plain
    on_0 = next(p for p in plain["positions"] if p["operator_id"] == 0)
    effective = raw.effective[(0, EXAMPLE_ACCOUNT)]
    assert on_0["shares"] == str(effective)  # exact, as a decimal string
    assert on_0["value"] == str(effective * raw.price[0] // PERQ)
    assert on_0["share_of_pool"] == _decimal(effective * PERQ // raw.pool[0])
    (values,) = [h["values"] for h in history["history"] if h["operator_id"] == 0]
    assert values == [
        {
            "epoch": raw.epoch,
            "shares": str(effective),
            "value": str(effective * raw.price[0] // PERQ),
            "deposit_on_hold": str(raw.hold[(0, EXAMPLE_ACCOUNT)]),
        }
    ]
    main_url = sample_url.render_as_string(hide_password=False)
    with streamlit_server(main_url, tmp_path / "streamlit.log") as running:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            api = client.get(f"/api/v1/nominators/{EXAMPLE_SS58}")
            api_history = client.get(f"/api/v1/nominators/{EXAMPLE_SS58}?history=1")
            api_holders = client.get("/api/v1/operators/0/nominators")
    assert api.status_code == api_history.status_code == api_holders.status_code == 200
    assert plain == api.json()
    assert history == api_history.json()
    assert holders == api_holders.json()


def test_operator_holders_count_top_and_concentration(sample_url, raw):
    mine = sorted(
        ((shares, account) for (op, account), shares in raw.effective.items() if op == 0),
        key=lambda item: (-item[0], item[1]),
    )
    top10 = sum(shares for shares, _ in mine[:10])
    total = sum(shares for shares, _ in mine)
    doc = orjson.loads(_ok(_run(sample_url, "--operator", "0", "--limit", "3", "--format", "json")))
    assert doc["count"] == len(mine) == 105  # 105 deposits on operator 0 (issue 14)
    assert doc["top10_shares"] == str(top10) and doc["total_shares"] == str(total)
    assert doc["top10_share"] == _decimal(top10 * PERQ // total)
    assert [n["account"] for n in doc["nominators"]] == ["0x" + a for _, a in mine[:3]]
    assert [n["shares"] for n in doc["nominators"]] == [str(s) for s, _ in mine[:3]]
    assert doc["nominators"][0]["value"] == str(mine[0][0] * raw.price[0] // PERQ)
    table = _ok(_run(sample_url, "--operator", "0", "--limit", "3"))
    assert table.startswith(f"operator 0: {len(mine):,} nominators at epoch {raw.epoch:,}")
    assert f"{mine[0][0]:,}" in table and str(mine[0][0] * raw.price[0] // PERQ) in table
    rows = list(
        csv.DictReader(io.StringIO(_ok(_run(sample_url, "--operator", "0", "--format", "csv"))))
    )
    assert len(rows) == 50 and rows[0]["shares"] == str(mine[0][0])


def test_withdrawals_show_their_unlock_blocks(sample_url, raw):
    (op, account), blocks = next(iter(sorted(raw.unlocks.items())))
    out = _ok(_run(sample_url, "0x" + account, "--format", "csv"))
    rows = {int(r["operator_id"]): r for r in csv.DictReader(io.StringIO(out))}
    assert rows[op]["unlock_blocks"] == ";".join(str(b) for b in blocks)
    assert rows[op]["withdrawals"] == str(len(blocks))
    assert rows[op]["epoch"] == str(raw.epoch)
    table = _ok(_run(sample_url, "0x" + account))
    for block in blocks:
        state = "unlockable since block" if block <= raw.head else "unlocks at block"
        assert f"{state} {block:,}" in table


def test_history_csv_and_table(sample_url, raw):
    out = _ok(_run(sample_url, EXAMPLE_SS58, "--history", "--format", "csv"))
    rows = list(csv.DictReader(io.StringIO(out)))
    expected = sorted(
        (op, raw.effective[(op, EXAMPLE_ACCOUNT)])
        for (op, account) in raw.effective
        if account == EXAMPLE_ACCOUNT
    )
    assert [(int(r["operator_id"]), int(r["shares"])) for r in rows] == expected
    assert all(int(r["epoch"]) == raw.epoch for r in rows)
    assert [int(r["value"]) for r in rows] == [s * raw.price[op] // PERQ for op, s in expected]
    table = _ok(_run(sample_url, EXAMPLE_SS58, "--history"))
    assert (
        "value per epoch" in table
        and str(expected[0][1] * raw.price[expected[0][0]] // PERQ) in table
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["0x1234"], "ADDRESS: '0x1234' is not an account"),
        (["suftE5YTB8cS3TnDT5mV1CvTvxforaPLudwkLqZH6HrX8nqBq"], "checksum"),
        (["' OR 1=1 --"], "ADDRESS: "),
        (["0x" + "00" * 32], "ADDRESS: no positions of"),
        (["--operator", "7"], "--operator: unknown operator id 7"),
        (["--operator", "7", "--format", "json"], "--operator: unknown operator id 7"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(sample_url, args, says):
    result = _run(sample_url, *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and says in line


@pytest.mark.parametrize(
    "args",
    [
        [],
        [EXAMPLE_SS58, "--operator", "0"],
        [EXAMPLE_SS58, "--limit", "3"],
        ["--operator", "0", "--history"],
    ],
)
def test_option_misuse_is_a_usage_error(sample_url, args):
    result = _run(sample_url, *args)
    assert result.exit_code == 2 and "Usage:" in result.stderr


def test_real_process_exit_status_and_no_traceback(sample_url):
    result = run_cli(sample_url, "nominators", "0x1234")
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ADDRESS: '0x1234' is not an account: ")
    ok = run_cli(sample_url, "nominators", EXAMPLE_SS58, "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert orjson.loads(ok.stdout)["address"] == EXAMPLE_SS58
