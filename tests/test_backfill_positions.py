"""The backfill writes nominator positions as change rows (sql/042), exactly, in any order.

Expected values are computed here from the raw JSON (json, int(x, 16), string slicing) and the
042 rule written out plainly (full states per epoch, compared with E-1's), independently of
shareprice.chain and shareprice.backfill. Successor epochs are derived from the real epoch-2647
dump in the test, with known changes.
"""

from __future__ import annotations

import copy
import json
import random
import signal
import time

import psutil
import pytest
from helpers.backfill import connect, insert_documents, run_cli, start_cli
from helpers.database import clone_database, drop_database

from shareprice import backfill
from shareprice.ingest import importer
from shareprice.store import db

PALLET = "0b41d0c7f7b4485bd7be1d66066b00ad"
DEPOSITS = "74a614db8021c6bd0a028aafdf29dd08"
WITHDRAWALS = "5eb75f5fdeadda8841398b656c7e353d"
HOLDS = "1ca7f84f7c82084ab74e8cf7f7e0149a"
CHAIN = "f16a4d4929cfe61f4f6bf4153bb44d9d"
PREFIX_LEN = 2 + 32 + 32
EXAMPLE = "suftE5YTB8cS3TnDT5mV1CvTvxforaPLudwkLqZH6HrX8nqBp"

#: Full dumps of what the backfill writes for positions, in key order.
DUMPS = {
    "nominator_positions": (
        "SELECT operator_id, encode(account, 'hex'), from_epoch, known_shares::text, "
        "known_storage_fee::text, pending_domain_id, pending_epoch, pending_amount::text, "
        "pending_storage_fee::text, effective_shares::text, deposit_on_hold::text "
        "FROM nominator_positions ORDER BY 1, 2, 3"
    ),
    "nominator_withdrawals": (
        "SELECT operator_id, encode(account, 'hex'), from_epoch, total_amount::text, "
        "total_storage_fee::text, in_shares_domain_id, in_shares_epoch, in_shares_unlock_block, "
        "in_shares::text, in_shares_storage_fee_refund::text, unlocking::text "
        "FROM nominator_withdrawals ORDER BY 1, 2, 3"
    ),
    # base_revision as what it names (revisions differ between databases filled in another
    # order): E-1's current revision, none, or something stale.
    "epoch_positions": (
        "SELECT p.epoch, CASE WHEN p.base_revision IS NULL THEN 'none' "
        "WHEN p.base_revision = e1.revision THEN 'E-1' ELSE 'stale ' || p.base_revision END, "
        "p.head_domain_number, p.positions, p.withdrawals FROM epoch_positions AS p "
        "LEFT JOIN epochs AS e1 ON e1.epoch = p.epoch - 1 ORDER BY 1"
    ),
    "nominator_accounts": "SELECT encode(account, 'hex'), ss58 FROM nominator_accounts ORDER BY 1",
}


def dump_tables(url) -> dict[str, list[tuple]]:
    with connect(url) as conn:
        return {t: conn.execute(q).fetchall() for t, q in DUMPS.items()}


# --- the raw computation ---------------------------------------------------------------------


def _amount(raw) -> int:
    return int(raw, 16) if isinstance(raw, str) else raw


def _split(value: str) -> tuple[int, str, str]:
    key, payload = value.split(",", 1)
    operator = int.from_bytes(bytes.fromhex(key[PREFIX_LEN : PREFIX_LEN + 16]), "little")
    return operator, key[PREFIX_LEN + 16 :].lower(), payload


def _chain_prices(doc: dict) -> dict[tuple[int, int, int], int]:
    prices = {}
    for entry in doc["operatorEpochSharePrice"]["entries"]:
        key, price = entry["value"].split(",", 1)
        raw = bytes.fromhex(key[PREFIX_LEN:])
        op, dom, ep = (int.from_bytes(raw[a:b], "little") for a, b in ((0, 8), (8, 12), (12, 16)))
        prices[(op, dom, ep)] = int(price)
    return prices


def raw_positions(doc: dict) -> dict[tuple[int, str], tuple]:
    """(operator, account hex) -> (known, known fee, pending domain, pending epoch, pending
    amount, pending fee, effective, on hold), from the raw JSON."""
    prices = _chain_prices(doc)
    states: dict[tuple[int, str], list] = {}
    for entry in doc["deposits"]["entries"]:
        op, account, payload = _split(entry["value"])
        obj = json.loads(payload)
        known = _amount(obj["known"]["shares"])
        pending = obj["pending"]
        state = [known, _amount(obj["known"]["storageFeeDeposit"]), None, None, None, None]
        effective = known
        if pending is not None:
            dom, ep = pending["effectiveDomainEpoch"]
            amount = _amount(pending["amount"])
            state[2:] = [dom, ep, amount, _amount(pending["storageFeeDeposit"])]
            if ep < doc["epoch"]:
                price = prices.get((op, dom, ep))
                effective = None if price is None else known + price * amount // 10**18
        states[(op, account)] = [*state, effective, None]
    for entry in doc["depositOnHold"]["entries"]:
        op, account, payload = _split(entry["value"])
        states.setdefault((op, account), [None] * 8)[7] = int(payload)
    return {k: tuple(v) for k, v in states.items()}


def raw_withdrawals(doc: dict) -> dict[tuple[int, str], tuple]:
    out = {}
    for entry in doc["withdrawals"]["entries"]:
        op, account, payload = _split(entry["value"])
        obj = json.loads(payload)
        shares = obj["withdrawalInShares"]
        in_shares = (
            (None,) * 5
            if shares is None
            else (
                shares["domainEpoch"][0],
                shares["domainEpoch"][1],
                shares["unlockAtConfirmedDomainBlockNumber"],
                _amount(shares["shares"]),
                _amount(shares["storageFeeRefund"]),
            )
        )
        unlocking = [
            {
                "unlock_block": w["unlockAtConfirmedDomainBlockNumber"],
                "amount": str(_amount(w["amountToUnlock"])),
                "storage_fee_refund": str(_amount(w["storageFeeRefund"])),
            }
            for w in obj["withdrawals"]
        ]
        out[(op, account)] = (
            _amount(obj["totalWithdrawalAmount"]),
            _amount(obj["totalStorageFeeWithdrawal"]),
            *in_shares,
            unlocking,
        )
    return out


def expected_rows(docs: dict[int, dict]) -> tuple[set, set, dict]:
    """The 042 rule on complete, valid documents: a row at E for each key whose state differs
    from E-1's (a closing row, all None, for a key gone), full rows when E-1 has no document."""
    positions, withdrawals, bases = set(), set(), {}
    for epoch in sorted(docs):
        for rows, states in (
            (positions, raw_positions),
            (withdrawals, raw_withdrawals),
        ):
            now = states(docs[epoch])
            before = states(docs[epoch - 1]) if epoch - 1 in docs else {}
            for key, state in now.items():
                if before.get(key) != state:
                    rows.add((*key, epoch, _freeze(state)))
            width = len(next(iter(now.values()))) if now else 8
            for key in before.keys() - now.keys():
                rows.add((*key, epoch, (None,) * width))
        bases[epoch] = epoch - 1 in docs
    return positions, withdrawals, bases


def _freeze(state: tuple) -> tuple:
    return tuple(json.dumps(v, sort_keys=True) if isinstance(v, list) else v for v in state)


def actual_rows(url) -> tuple[set, set]:
    tables = dump_tables(url)

    def ints(values):
        return tuple(int(v) if isinstance(v, str) and v.isdigit() else v for v in values)

    positions = {(r[0], r[1], r[2], ints(r[3:])) for r in tables["nominator_positions"]}
    withdrawals = set()
    for r in tables["nominator_withdrawals"]:
        unlocking = None if r[10] is None else json.dumps(json.loads(r[10]), sort_keys=True)
        withdrawals.add((r[0], r[1], r[2], (*ints(r[3:10]), unlocking)))
    return positions, withdrawals


# --- synthetic successors of the real dump --------------------------------------------------------


def _key(item: str, op: int, account: str) -> str:
    return f"0x{PALLET}{item}{op.to_bytes(8, 'little').hex()}{account}"


def successor(doc: dict, epoch: int) -> dict:
    """A copy of `doc` as the dump of `epoch` (epoch field and currentEpochIndex match)."""
    out = copy.deepcopy(doc)
    out["epoch"] = epoch
    out["domainStakingSummary"]["currentEpochIndex"] = f"{epoch:,}"
    return out


def _entries(doc: dict, name: str) -> list[dict]:
    return doc[name]["entries"]


def _set_entries(doc: dict, name: str, entries: list[dict]) -> None:
    doc[name]["entries"] = [{"key": [str(i)], "value": e["value"]} for i, e in enumerate(entries)]
    doc[name]["count"] = len(entries)


def _payload(entry: dict) -> dict:
    return json.loads(entry["value"].split(",", 1)[1])


def _with_payload(entry: dict, payload: dict) -> dict:
    return {
        "key": entry["key"],
        "value": entry["value"].split(",", 1)[0] + "," + json.dumps(payload),
    }


def add_chain_price(doc: dict, op: int, ep: int, value: int) -> None:
    key = f"0x{PALLET}{CHAIN}{op.to_bytes(8, 'little').hex()}{(0).to_bytes(4, 'little').hex()}"
    key += ep.to_bytes(4, "little").hex()
    entries = _entries(doc, "operatorEpochSharePrice") + [{"key": ["x"], "value": f"{key},{value}"}]
    _set_entries(doc, "operatorEpochSharePrice", entries)


NEW_ACCOUNT = "ab" * 32


def scripted_successors(real: dict) -> dict[int, dict]:
    """2648: one deposit changed, one removed (with its hold), one added, one made pending in
    2648 (so it converts in 2649); 2649: that deposit converts (text unchanged), one withdrawal
    unlocks (in-shares to the unlocking list), one withdrawal removed."""
    d48 = successor(real, 2648)
    deps = _entries(d48, "deposits")
    changed = _payload(deps[0])
    changed["known"]["shares"] = hex(_amount(changed["known"]["shares"]) + 12345)
    deps[0] = _with_payload(deps[0], changed)
    converting = _payload(deps[5])
    converting["pending"] = {
        "effectiveDomainEpoch": [0, 2648],
        "amount": "0x00000000000000056bc75e2d63100000",
        "storageFeeDeposit": 0,
    }
    deps[5] = _with_payload(deps[5], converting)
    removed = _split(deps[1]["value"])[:2]
    del deps[1]
    deps.append({"key": ["x"], "value": _key(DEPOSITS, 1, NEW_ACCOUNT) + ',{"known":{"shares":'
                 '"0x10","storageFeeDeposit":0},"pending":null}'})  # fmt: skip
    _set_entries(d48, "deposits", deps)
    holds = [e for e in _entries(d48, "depositOnHold") if _split(e["value"])[:2] != removed]
    holds.append({"key": ["x"], "value": _key(HOLDS, 1, NEW_ACCOUNT) + ",16"})
    _set_entries(d48, "depositOnHold", holds)

    d49 = successor(d48, 2649)
    op5 = _split(_entries(d49, "deposits")[4]["value"])[0]  # deps[5] moved to index 4
    add_chain_price(d49, op5, 2648, 999_000_000_000_000_000)
    wds = _entries(d49, "withdrawals")
    unlocked = _payload(wds[2])
    shares = unlocked["withdrawalInShares"]
    unlocked["withdrawals"] = [
        {
            "unlockAtConfirmedDomainBlockNumber": shares["unlockAtConfirmedDomainBlockNumber"],
            "amountToUnlock": shares["shares"],
            "storageFeeRefund": shares["storageFeeRefund"],
        }
    ]
    unlocked["withdrawalInShares"] = None
    wds[2] = _with_payload(wds[2], unlocked)
    del wds[7]
    _set_entries(d49, "withdrawals", wds)
    return {2648: d48, 2649: d49}


def random_successors(real: dict, first: int, count: int, seed: int) -> dict[int, dict]:
    """Successors with a few random changes each (deposits, holds, withdrawals, conversions)."""
    rng = random.Random(seed)
    docs, doc = {}, real
    for epoch in range(first, first + count):
        doc = successor(doc, epoch)
        deps = _entries(doc, "deposits")
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(deps))
            obj = _payload(deps[i])
            obj["known"]["shares"] = hex(_amount(obj["known"]["shares"]) + rng.randint(1, 10**6))
            if rng.random() < 0.5:
                obj["pending"] = {
                    "effectiveDomainEpoch": [0, epoch - rng.randint(0, 2)],
                    "amount": hex(rng.randint(1, 10**20)),
                    "storageFeeDeposit": 0,
                }
            deps[i] = _with_payload(deps[i], obj)
        if rng.random() < 0.5:
            gone = _split(deps.pop(rng.randrange(len(deps)))["value"])[:2]
            holds = [e for e in _entries(doc, "depositOnHold") if _split(e["value"])[:2] != gone]
            _set_entries(doc, "depositOnHold", holds)
        _set_entries(doc, "deposits", deps)
        wds = _entries(doc, "withdrawals")
        if wds and rng.random() < 0.5:
            del wds[rng.randrange(len(wds))]
            _set_entries(doc, "withdrawals", wds)
        docs[epoch] = doc
    return docs


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(shared_data) -> dict:
    return json.loads((shared_data / "storage-dump-epoch-2647.json").read_text())[0]


def _import_real(engine, shared_data) -> None:
    summary = importer.import_paths(engine, [shared_data / "storage-dump-epoch-2647.json"])
    assert summary.read == 1


def _insert(url, docs: dict[int, dict]) -> None:
    insert_documents(url, [(e, json.dumps(d)) for e, d in sorted(docs.items())])


def _run(engine, **options) -> backfill.runner.Summary:
    summary = backfill.run_backfill(engine, backfill.Options(**options))
    assert summary.ok, summary
    return summary


# --- the real sample ---------------------------------------------------------------------------------


def test_the_real_sample_gets_full_rows_with_exact_effective_shares(
    db_url, engine, shared_data, real
):
    _import_real(engine, shared_data)
    summary = _run(engine, workers=1)
    assert summary.rows["nominator_positions"] == 177
    positions, withdrawals = actual_rows(db_url)
    expected = raw_positions(real)
    assert len(expected) == 177
    assert positions == {(*k, 2647, v) for k, v in expected.items()}
    per_operator = {op: sum(1 for p in positions if p[0] == op) for op in (0, 1)}
    assert per_operator == {0: 105, 1: 72}
    # Effective shares per account against the raw conversion, and the rounding vs totals.
    for op, account, _, state in positions:
        assert state[6] == expected[(op, account)][6] is not None
    assert withdrawals == {(*k, 2647, _freeze(v)) for k, v in raw_withdrawals(real).items()}
    assert len(withdrawals) == 25
    with connect(db_url) as conn:
        row = conn.execute("SELECT * FROM epoch_positions").fetchall()
        assert row == [(2647, None, int(real["headDomainNumber"]), 177, 25)]
        accounts = dict(
            conn.execute("SELECT encode(account, 'hex'), ss58 FROM nominator_accounts").fetchall()
        )
    example = next(a for _, a in expected if a.startswith("d4e54c36"))
    assert example.endswith("9e0b")
    assert accounts[example] == EXAMPLE
    assert set(accounts) == {a for _, a in expected}
    assert all(v.startswith("su") for v in accounts.values())


def test_successors_write_only_what_changed(db_url, engine, shared_data, real):
    _import_real(engine, shared_data)
    docs = scripted_successors(real)
    _insert(db_url, docs)
    _run(engine, workers=1)
    positions, withdrawals = actual_rows(db_url)
    exp_positions, exp_withdrawals, _ = expected_rows({2647: real, **docs})
    assert positions == exp_positions
    assert withdrawals == exp_withdrawals
    at = {e: {(p[0], p[1]): p[3] for p in positions if p[2] == e} for e in (2648, 2649)}
    # 2648: changed, removed (closing row), added, made pending: four rows, nothing else.
    assert len(at[2648]) == 4
    deps = _entries(real, "deposits")
    removed = _split(deps[1]["value"])[:2]
    assert at[2648][removed] == (None,) * 8
    assert at[2648][(1, NEW_ACCOUNT)] == (16, 0, None, None, None, None, 16, 16)
    # 2649: the pending deposit of 2648 converts at the chain price added for it, text unchanged.
    [(key, state)] = at[2649].items()
    assert state[3] == 2648 and state[6] == state[0] + 999_000_000_000_000_000 * state[4] // 10**18
    w49 = {(w[0], w[1]): w[3] for w in withdrawals if w[2] == 2649}
    assert len(w49) == 2 and sum(1 for s in w49.values() if s == (None,) * 8) == 1
    with connect(db_url) as conn:
        revisions = dict(conn.execute("SELECT epoch, revision FROM epochs").fetchall())
        bases = conn.execute(
            "SELECT epoch, base_revision FROM epoch_positions ORDER BY 1"
        ).fetchall()
    assert bases == [(2647, None), (2648, revisions[2647]), (2649, revisions[2648])]


def test_a_malformed_deposit_fails_its_epoch_and_writes_nothing_for_it(
    db_url, engine, shared_data, real
):
    _import_real(engine, shared_data)
    docs = scripted_successors(real)
    broken = successor(docs[2649], 2650)
    deps = _entries(broken, "deposits")
    deps[3] = {"key": deps[3]["key"], "value": deps[3]["value"].replace('"known"', '"knwn"')}
    _insert(db_url, {**docs, 2650: broken, 2651: successor(docs[2649], 2651)})
    summary = backfill.run_backfill(engine, backfill.Options(workers=1))
    assert summary.epochs_failed == 1
    [(epoch, reason)] = summary.failures
    assert epoch == 2650
    assert "epoch 2650, deposits.entries[3]: missing field 'known'" in reason
    with connect(db_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM nominator_positions WHERE from_epoch = 2650"
        ).fetchone() == (0,)
        assert conn.execute("SELECT epoch FROM epoch_positions ORDER BY 1").fetchall() == [
            (2647,),
            (2648,),
            (2649,),
            (2651,),
        ]
        # 2651 follows a failed epoch: full rows, no base.
        assert conn.execute(
            "SELECT base_revision FROM epoch_positions WHERE epoch = 2651"
        ).fetchone() == (None,)
        stored = conn.execute("SELECT data::text FROM epochs WHERE epoch = 2650").fetchone()[0]
    assert '\\"knwn\\"' in stored  # raw data never modified (escaped inside its string)
    exp_positions, _, _ = expected_rows({2647: real, **docs, 2651: successor(docs[2649], 2651)})
    assert actual_rows(db_url)[0] == exp_positions


def test_the_whole_document_path_gives_the_same_rows(db_url, engine, shared_data, real):
    """A deposit key in upper-case hex is not what the parts path takes: the whole document is
    parsed instead, its keys canonical, so the position is the same one as at 2647 (no row)."""
    _import_real(engine, shared_data)
    shouted = successor(real, 2648)
    deps = _entries(shouted, "deposits")
    key, payload = deps[0]["value"].split(",", 1)
    deps[0] = {"key": deps[0]["key"], "value": key[:PREFIX_LEN] + key[PREFIX_LEN:].upper() + ","
               + payload}  # fmt: skip
    changed = _payload(deps[2])
    changed["known"]["storageFeeDeposit"] = hex(_amount(changed["known"]["storageFeeDeposit"]) + 1)
    deps[2] = _with_payload(deps[2], changed)
    _insert(db_url, {2648: shouted})
    _run(engine, workers=1)
    positions, withdrawals = actual_rows(db_url)
    at_2648 = [p for p in positions if p[2] == 2648]
    assert at_2648 == [(*_split(deps[2]["value"])[:2], 2648, raw_positions(shouted)[
        _split(deps[2]["value"])[:2]])]  # fmt: skip
    assert (positions, withdrawals) == expected_rows({2647: real, 2648: shouted})[:2]


# --- order independence ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain_docs(real) -> dict[int, dict]:
    docs = {2647: real, **scripted_successors(real)}
    docs.update(random_successors(docs[2649], 2650, 8, seed=3))
    return docs


@pytest.fixture()
def reference(db_url, engine, chain_docs) -> dict[str, list[tuple]]:
    """A sequential, uninterrupted backfill of chain_docs (in db_url) and its expected rows."""
    _insert(db_url, chain_docs)
    _run(engine, workers=1)
    exp_positions, exp_withdrawals, _ = expected_rows(chain_docs)
    assert actual_rows(db_url) == (exp_positions, exp_withdrawals)
    dumped = dump_tables(db_url)
    assert [row[1] for row in dumped["epoch_positions"]] == ["none"] + ["E-1"] * (
        len(chain_docs) - 1
    )
    return dumped


@pytest.fixture()
def scratch(pg_admin_url, template_url):
    from helpers.database import TEMPLATE_DB, new_database

    url = new_database(pg_admin_url, TEMPLATE_DB)
    yield url, db.get_engine(url)
    drop_database(pg_admin_url, url)


def test_parallel_small_batches_equal_the_sequential_run(reference, scratch, chain_docs):
    url, engine = scratch
    _insert(url, chain_docs)
    _run(engine, workers=2, batch_size=2)
    assert dump_tables(url) == reference
    assert backfill.pending_count(engine) == 0


def test_partial_then_resumed_equals_the_sequential_run(reference, scratch, chain_docs):
    url, engine = scratch
    _insert(url, chain_docs)
    _run(engine, workers=1, epoch_from=2651, epoch_to=2653, batch_size=2)
    _run(engine, workers=1, epoch_from=2648, epoch_to=2649)
    _run(engine, workers=1, batch_size=3)
    assert dump_tables(url) == reference


def test_an_earlier_epoch_imported_later_equals_the_sequential_run(reference, scratch, chain_docs):
    url, engine = scratch
    late = 2652
    _insert(url, {e: d for e, d in chain_docs.items() if e != late})
    _run(engine, workers=1)
    with connect(url) as conn:  # without 2652, 2653 has full rows
        assert conn.execute(
            "SELECT base_revision FROM epoch_positions WHERE epoch = 2653"
        ).fetchone() == (None,)
    _insert(url, {late: chain_docs[late]})
    assert backfill.pending_count(engine) == 2  # 2652, and 2653 whose base it becomes
    summary = _run(engine, workers=1)
    assert summary.epochs_done == 2  # 2652, then 2653 against it
    assert dump_tables(url) == reference


def test_a_changed_earlier_document_renormalizes_its_successor(
    reference, scratch, db_url, chain_docs
):
    url, engine = scratch
    _insert(url, chain_docs)
    _run(engine, workers=2, batch_size=2)
    changed = copy.deepcopy(chain_docs[2650])
    deps = _entries(changed, "deposits")
    obj = _payload(deps[10])
    obj["known"]["storageFeeDeposit"] = hex(_amount(obj["known"]["storageFeeDeposit"]) + 1)
    deps[10] = _with_payload(deps[10], obj)
    _set_entries(changed, "deposits", deps)
    for target in (url, db_url):  # the same change to the reference, then backfill both
        with connect(target) as conn:
            conn.execute(
                "UPDATE epochs SET data = %s::jsonb WHERE epoch = 2650", (json.dumps(changed),)
            )
    summary = _run(engine, workers=2, batch_size=1)
    assert summary.epochs_done >= 2  # 2650 and 2651 (against the new 2650), maybe more
    expected = {**chain_docs, 2650: changed}
    exp_positions, exp_withdrawals, _ = expected_rows(expected)
    assert actual_rows(url) == (exp_positions, exp_withdrawals)
    fresh_engine = db.get_engine(db_url)
    _run(fresh_engine, workers=1)
    assert dump_tables(url) == dump_tables(db_url)


def test_generated_positions_in_parallel_equal_the_sequential_fixture(
    pg_admin_url, raw_small_url, normalized_small_url
):
    url = clone_database(pg_admin_url, raw_small_url)
    try:
        _run(db.get_engine(url), workers=2, batch_size=3)
        got = dump_tables(url)
        assert got == dump_tables(normalized_small_url)
        assert got["epoch_positions"], "the generated data carries positions"
    finally:
        drop_database(pg_admin_url, url)


def test_kill_9_then_resume_gives_the_positions_of_an_uninterrupted_run(
    reference, scratch, chain_docs
):
    url, _ = scratch
    many = dict(chain_docs)
    many.update(random_successors(chain_docs[max(chain_docs)], max(chain_docs) + 1, 30, seed=9))
    _insert(url, many)
    proc = start_cli(url, "backfill", "--batch-size", "1", "--workers", "2", "-q")
    deadline = time.monotonic() + 60
    with connect(url) as conn:
        while proc.poll() is None:
            done = conn.execute("SELECT count(*) FROM epoch_normalizations").fetchone()[0]
            if done >= 8:
                break
            assert time.monotonic() < deadline
            time.sleep(0.005)
    children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    psutil.wait_procs(children, timeout=10)
    final = run_cli(url, "backfill", "--workers", "2", "--batch-size", "2")
    assert final.returncode == 0, final.stderr
    exp_positions, exp_withdrawals, _ = expected_rows(many)
    assert actual_rows(url) == (exp_positions, exp_withdrawals)


# --- the canonical-text fast path (positions._DEPOSIT_RE / _HOLD_RE) ---------------------------


def _build_states(doc: dict) -> dict[tuple[int, str], tuple]:
    """positions.build on a document's entry values, with no base: every entry decoded."""
    from shareprice.backfill import positions

    values = {n: [e["value"] for e in doc[n]["entries"]] for n in ("deposits", "depositOnHold")}
    _, changes = positions.build(
        doc["epoch"], 0, None, values["deposits"], [], values["depositOnHold"],
        _chain_prices(doc), None,
    )  # fmt: skip
    return {(op, account): tuple(state[2:]) for op, account, state in changes.rows}


def test_the_chains_own_text_takes_the_fast_path_with_the_raw_fields(real):
    from shareprice.backfill import positions

    # The sample is the chain's canonical text: every entry is decoded by the expressions...
    assert all(positions._DEPOSIT_RE.fullmatch(e["value"]) for e in real["deposits"]["entries"])
    assert all(positions._HOLD_RE.fullmatch(e["value"]) for e in real["depositOnHold"]["entries"])
    # ... to the fields json.loads and int(x, 16) give (and the number 0 is in the sample).
    assert any(": 0" in json.dumps(_payload(e)) for e in real["deposits"]["entries"])
    assert _build_states(real) == raw_positions(real)


def _respelled(real: dict, respell) -> dict:
    doc = copy.deepcopy(real)
    for entry in doc["deposits"]["entries"][:5]:
        key = entry["value"].split(",", 1)[0]
        entry["value"] = key + "," + respell(_payload(entry))
    return doc


@pytest.mark.parametrize(
    "respell",
    [
        pytest.param(lambda p: json.dumps(p), id="whitespace"),
        pytest.param(lambda p: json.dumps(dict(reversed(p.items())), separators=(",", ":")),
                     id="keys-reordered"),
        pytest.param(lambda p: json.dumps({**p, "known": {
            "shares": "0x00" + format(_amount(p["known"]["shares"]), "032x"),
            "storageFeeDeposit": 7}}, separators=(",", ":")), id="long-hex-and-a-number"),
    ],
)  # fmt: skip
def test_other_spellings_are_decoded_strictly_to_the_same_fields(real, respell):
    from shareprice.backfill import positions

    doc = _respelled(real, respell)
    changed = doc["deposits"]["entries"][:5]
    assert not any(positions._DEPOSIT_RE.fullmatch(e["value"]) for e in changed)
    assert _build_states(doc) == raw_positions(doc)


@pytest.mark.parametrize(
    ("respell", "message"),
    [
        (lambda p: json.dumps({**p, "known": {**p["known"], "shares": "0xZZ"}}), "bad hex"),
        (lambda p: json.dumps({**p, "known": {**p["known"], "shares": -1}}), "negative"),
        (lambda p: json.dumps({"pending": p["pending"]}), "known"),
    ],
)
def test_a_malformed_deposit_is_still_refused(real, respell, message):
    from shareprice.backfill import positions

    doc = _respelled(real, respell)
    values = [e["value"] for e in doc["deposits"]["entries"]]
    with pytest.raises((ValueError, KeyError)) as info:
        positions.build(doc["epoch"], 0, None, values, [], [], {}, None)
    assert message in str(info.value)


def test_an_upper_case_key_is_refused_by_the_parts_path(real):
    from shareprice.backfill import positions

    entry = real["deposits"]["entries"][0]["value"]
    key, payload = entry.split(",", 1)
    upper = key[:PREFIX_LEN] + key[PREFIX_LEN:].upper() + "," + payload
    assert key[PREFIX_LEN:] != key[PREFIX_LEN:].upper()  # the sample key has hex letters
    with pytest.raises(ValueError, match="lower-case"):
        positions.build(real["epoch"], 0, None, [upper], [], [], {}, None)


def _rows_by_build(docs: dict[int, dict], changed_prices: str = "unknown") -> set:
    """positions.build over consecutive documents, each compared with the previous one's items,
    as rows in expected_rows' form. changed_prices: what build is told of the chain prices
    that moved since the previous document: "unknown" (None), "exact" (the keys whose price
    differs), "none" (an empty set, wrong when one moved: a negative control)."""
    from shareprice.backfill import positions

    base, rows, before = None, set(), None
    for epoch in sorted(docs):
        doc = docs[epoch]
        values = {
            n: [e["value"] for e in doc[n]["entries"]]
            for n in ("deposits", "depositOnHold", "withdrawals")
        }
        prices = _chain_prices(doc)
        told = None
        if before is not None and changed_prices == "exact":
            told = {k for k in prices.keys() | before.keys() if prices.get(k) != before.get(k)}
        elif before is not None and changed_prices == "none":
            told = set()
        before = prices
        base, changes = positions.build(
            epoch, 0, None, values["deposits"], values["withdrawals"], values["depositOnHold"],
            prices, base, changed_prices=told,
        )  # fmt: skip
        for op, account, state in changes.rows:
            rows.add((op, account, epoch, (None,) * 8 if state is None else tuple(state[2:])))
    return rows


def test_a_half_removed_position_and_a_changed_chain_price_write_exactly_their_changes(real):
    """E-1 -> E: a hold removed (its deposit stays), a deposit removed (its hold stays), and the
    chain price of an ended pending epoch changed (the deposits' texts unchanged); E -> E+1:
    the hold comes back. Expected rows: the 042 rule on the raw JSON (expected_rows)."""
    d48 = successor(real, 2648)
    deps, holds = _entries(d48, "deposits"), _entries(d48, "depositOnHold")
    hold_gone, deposit_gone = _split(deps[2]["value"])[:2], _split(deps[3]["value"])[:2]
    kept_hold = next(e for e in holds if _split(e["value"])[:2] == hold_gone)
    _set_entries(d48, "depositOnHold", [e for e in holds if e is not kept_hold])
    _set_entries(d48, "deposits", [e for e in deps if _split(e["value"])[:2] != deposit_gone])
    # The pending deposits of the sample wait on epoch 2646, which has ended: move its price.
    pending = [_payload(e)["pending"] for e in deps]
    ended = {p["effectiveDomainEpoch"][1] for p in pending if p is not None} & {2646}
    assert ended, "the sample has pending deposits of epoch 2646"
    chain = _entries(d48, "operatorEpochSharePrice")
    moved = 0
    for i, entry in enumerate(chain):
        key, value = entry["value"].split(",", 1)
        if int.from_bytes(bytes.fromhex(key[PREFIX_LEN + 24 : PREFIX_LEN + 32]), "little") == 2646:
            chain[i] = {"key": entry["key"], "value": f"{key},{int(value) + 10**15}"}
            moved += 1
    assert moved
    _set_entries(d48, "operatorEpochSharePrice", chain)
    d49 = successor(d48, 2649)
    _set_entries(d49, "depositOnHold", [*_entries(d49, "depositOnHold"), kept_hold])
    docs = {2647: real, 2648: d48, 2649: d49}

    expected, _, _ = expected_rows(docs)
    got = _rows_by_build(docs)
    assert got == expected
    # Told exactly which prices moved (as the reader's ChainDiff tells it), build revisits only
    # the pending deposits of those prices and of epochs that just ended: the same rows. Told
    # that none moved, the deposits settled on the moved price keep their old effective shares.
    assert _rows_by_build(docs, "exact") == expected
    missed = expected - _rows_by_build(docs, "none")
    assert missed and {r[2] for r in missed} == {2648}
    # The changes are really there: the hold's closing of its state, the price move, the return.
    at_2648 = {(r[0], r[1]) for r in expected if r[2] == 2648}
    assert hold_gone in at_2648 and deposit_gone in at_2648 and len(at_2648) > 2
    assert hold_gone in {(r[0], r[1]) for r in expected if r[2] == 2649}


# --- comparing with E-1 position by position, and the shares-only step ------------------------


def _canonical(entry: dict, payload: dict) -> dict:
    """The entry with this payload in the chain's own spelling (no spaces)."""
    key = entry["value"].split(",", 1)[0]
    return {"key": entry["key"], "value": key + "," + json.dumps(payload, separators=(",", ":"))}


def _shares_text(entry: dict, shares: str) -> dict:
    """The entry with only the digits of known.shares replaced (same length, same layout)."""
    value = entry["value"]
    at = value.index('"shares":"0x') + len('"shares":"0x')
    assert len(shares) == 32 and value[at + 32] == '"'
    return {"key": entry["key"], "value": value[:at] + shares + value[at + 32 :]}


def _builds(docs: dict[int, dict]) -> dict[int, tuple]:
    """positions.build over consecutive documents (as _rows_by_build), keeping each epoch's
    items, its rows and how many entries went through the per-entry decoder."""
    from shareprice.backfill import positions

    decoded = 0
    original = positions._decode_position

    def counting(*args, **kwargs):
        nonlocal decoded
        decoded += 1
        return original(*args, **kwargs)

    out, base, before = {}, None, None
    positions._decode_position = counting
    try:
        for epoch in sorted(docs):
            doc = docs[epoch]
            values = {
                n: [e["value"] for e in doc[n]["entries"]]
                for n in ("deposits", "depositOnHold", "withdrawals")
            }
            prices = _chain_prices(doc)
            told = None
            if before is not None:
                told = {k for k in prices.keys() | before.keys() if prices.get(k) != before.get(k)}
            before, decoded = prices, 0
            items, changes = positions.build(
                epoch, 0, None, values["deposits"], values["withdrawals"],
                values["depositOnHold"], prices, base, changed_prices=told,
            )  # fmt: skip
            rows = {
                (op, account, epoch, (None,) * 8 if state is None else tuple(state[2:]))
                for op, account, state in changes.rows
            }
            out[epoch] = (items, rows, decoded, base)
            base = items
    finally:
        positions._decode_position = original
    return out


def test_walked_items_and_shares_only_changes_give_the_raw_rows(real):
    """build compares each item with E-1's position by position (positions._walk: the keys
    and their map are E-1's objects while no entry is added or removed) and takes a deposit
    that differs from E-1's canonical text only in its 32 shares digits by the shares-only
    step. Entries added, removed and swapped, at the ends and in the middle; shares changed in
    the chain's spelling, in upper-case digits, and in a non-canonical E-1 text whose shares
    key appears twice (JSON takes the last): every epoch's rows are the raw 042 rule's."""
    from shareprice.backfill import positions

    fixed = [
        i for i, e in enumerate(_entries(real, "deposits")) if positions._fixed_layout(e["value"])
    ]
    assert len(fixed) >= 12, "the sample has deposits in the chain's padded spelling"
    rng = random.Random(7)

    def new_shares(entry: dict) -> str:
        return format(_amount(_payload(entry)["known"]["shares"]) + rng.randint(1, 10**9), "032x")

    # 2648: shares-only changes; one in upper-case digits; a hold changed.
    d48 = successor(real, 2648)
    deps = _entries(d48, "deposits")
    for i in fixed[:8]:
        deps[i] = _shares_text(deps[i], new_shares(deps[i]))
    deps[fixed[8]] = _shares_text(deps[fixed[8]], new_shares(deps[fixed[8]]).upper())
    holds = _entries(d48, "depositOnHold")
    key, amount = holds[3]["value"].split(",", 1)
    holds[3] = {"key": holds[3]["key"], "value": f"{key},{int(amount) + 5}"}
    # 2649: shares-only again (from 2648's texts), plus the first deposit and its hold removed,
    # one added in the middle (with a hold), one at the end, and two neighbours swapped.
    d49 = successor(d48, 2649)
    deps = _entries(d49, "deposits")
    for i in fixed[:4]:
        deps[i] = _shares_text(deps[i], new_shares(deps[i]))
    middle_op = _split(deps[len(deps) // 2]["value"])[0]
    gone = _split(deps[0]["value"])[:2]
    deps.insert(len(deps) // 2, {"key": ["x"], "value": _key(DEPOSITS, middle_op, "0" * 64)
             + ',{"known":{"shares":"0x' + "1" * 32 + '","storageFeeDeposit":0},"pending":null}'})  # fmt: skip
    deps.append({"key": ["x"], "value": _key(DEPOSITS, 2**40, "f" * 64)
                 + ',{"known":{"shares":"0x' + "2" * 32 + '","storageFeeDeposit":0},"pending":null}'})  # fmt: skip
    deps[20], deps[21] = deps[21], deps[20]
    del deps[0]
    _set_entries(d49, "deposits", deps)
    holds = [e for e in _entries(d49, "depositOnHold") if _split(e["value"])[:2] != gone]
    holds.insert(len(holds) // 2, {"key": ["x"], "value": _key(HOLDS, middle_op, "0" * 64) + ",7"})
    _set_entries(d49, "depositOnHold", holds)
    # 2650: one text respelled with its shares key twice (JSON: the last one counts).
    d50 = successor(d49, 2650)
    deps = _entries(d50, "deposits")
    twice = next(i for i, e in enumerate(deps) if positions._fixed_layout(e["value"]))
    value = deps[twice]["value"]
    last = value.index('"storageFeeDeposit"')
    deps[twice] = {"key": deps[twice]["key"], "value": value[:last]
                   + '"shares":"0x' + "3" * 32 + '",' + value[last:]}  # fmt: skip
    # 2651: its first shares digits changed (the state does not change), and the rest
    # shares-only changes on canonical texts only.
    d51 = successor(d50, 2651)
    deps = _entries(d51, "deposits")
    deps[twice] = _shares_text(deps[twice], "4" * 32)
    only = [
        i
        for i, e in enumerate(deps)
        if positions._fixed_layout(e["value"])
        and positions._DEPOSIT_RE.fullmatch(e["value"])  # not the upper-case one of 2648
        and i != twice
    ]
    for i in only[:10]:
        deps[i] = _shares_text(deps[i], new_shares(deps[i]))
    docs = {2647: real, 2648: d48, 2649: d49, 2650: d50, 2651: d51}

    expected, _, _ = expected_rows(docs)
    built = _builds(docs)
    for epoch in docs:
        assert built[epoch][1] == {r for r in expected if r[2] == epoch}, epoch
    assert len(built[2648][1]) == 10  # 8 + the upper-case one + the hold
    assert not any(r[0:2] == _split(deps[twice]["value"])[:2] for r in built[2651][1])
    # What the fast paths did: E-1's keys where nothing was added or removed, fresh ones
    # where it was; the shares-only changes of 2651 went through no per-entry decoder, and
    # 2648 decoded only the upper-case text and the changed hold.
    for epoch, same in ((2648, True), (2649, False), (2650, True), (2651, True)):
        items, _, _, base = built[epoch]
        assert (items.deposits.keys is base.deposits.keys) is same, epoch
        assert items.deposits.keys == [v[66:146] for v in items.deposits.values]
    assert built[2648][2] == 2
    assert built[2651][2] == 1  # the text whose E-1 spelling was not the chain's
