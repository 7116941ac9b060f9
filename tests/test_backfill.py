"""The backfill against the parser: exact values, incremental reruns, changed and bad documents,
the lock, parallel workers, and both real sample formats."""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest
from click.testing import CliRunner
from helpers.backfill import (
    actual,
    connect,
    expected_from_raw,
    insert_documents,
    run_cli,
    snapshot,
    start_cli,
)
from helpers.database import clone_database, drop_database

from shareprice import backfill
from shareprice.backfill import batch
from shareprice.backfill.writer import default_color, default_name
from shareprice.cli import main
from shareprice.ingest import generator
from shareprice.store import db


@pytest.fixture()
def raw_copy(pg_admin_url, raw_small_url):
    url = clone_database(pg_admin_url, raw_small_url)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture()
def normalized_copy(pg_admin_url, normalized_small_url):
    url = clone_database(pg_admin_url, normalized_small_url)
    yield url
    drop_database(pg_admin_url, url)


def test_every_normalized_value_equals_the_parser(normalized_small_url, raw_small_summary):
    expected = expected_from_raw(normalized_small_url)
    got = actual(normalized_small_url)
    assert not expected.failed
    assert len(got.prices) == raw_small_summary.operator_states == len(expected.prices)
    assert got.prices == expected.prices
    assert got.shares == expected.shares
    assert got.chain == expected.chain  # the earliest document each entry was seen in
    assert got.operator_counts == expected.operator_counts
    assert got.first_seen == expected.first_seen
    assert got.last_seen == expected.last_seen
    # Prices really are stake per share, exact: spot-check the definition on every row.
    for key, (stake, shares, *_rest) in got.shares.items():
        assert got.prices[key][0] == stake * 10**18 // shares


def test_metadata_defaults_activity_and_bookkeeping(normalized_small_url, raw_small_summary):
    with connect(normalized_small_url) as conn:
        latest = conn.execute("SELECT max(epoch) FROM epochs").fetchone()[0]
        meta = conn.execute(
            "SELECT operator_id, name, color, status, last_seen_epoch, is_active "
            "FROM operators_metadata"
        ).fetchall()
        run = conn.execute(
            "SELECT status, epochs_total, epochs_done, epochs_failed, rows_written, last_epoch, "
            "finished_at IS NOT NULL FROM backfill_runs"
        ).fetchall()
        revisions_match = conn.execute(
            "SELECT bool_and(n.revision = e.revision), count(*) FROM epochs e "
            "JOIN epoch_normalizations n USING (epoch)"
        ).fetchone()
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 (constants)
            for t in ("operator_share_prices", "operator_shares", "operator_chain_share_prices")
        }
    colors = set()
    for op, name, color, status, last_seen, active in meta:
        assert name == default_name(op) == f"Operator {op}"
        assert color == default_color(op)
        colors.add(color)
        assert active == (last_seen == latest and status == "registered")
    assert len(colors) == len(meta)  # distinct
    assert any(active for *_, active in meta) and not all(active for *_, active in meta)
    slashed = set(raw_small_summary.slashed)
    assert all(not active for op, *_, active in meta if op in slashed)
    assert revisions_match == (True, 80)
    [(status, total, done, failed, rows, last_epoch, finished)] = run
    assert (status, total, done, failed, last_epoch, finished) == ("succeeded", 80, 80, 0, 79, True)
    assert rows["operator_share_prices"] == counts["operator_share_prices"]
    assert rows["operator_shares"] == counts["operator_shares"]
    assert rows["operator_chain_share_prices"] >= counts["operator_chain_share_prices"]


def test_rerun_on_finished_data_changes_nothing(normalized_copy):
    before = snapshot(normalized_copy)
    with connect(normalized_copy) as conn:
        version = conn.execute("SELECT last_value FROM data_version_seq").fetchone()[0]
        runs = conn.execute("SELECT count(*) FROM backfill_runs").fetchone()[0]
    result = CliRunner().invoke(main, ["backfill", "--url", _url(normalized_copy)])
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output
    assert snapshot(normalized_copy) == before
    with connect(normalized_copy) as conn:
        assert conn.execute("SELECT last_value FROM data_version_seq").fetchone()[0] == version
        assert conn.execute("SELECT count(*) FROM backfill_runs").fetchone()[0] == runs
    assert backfill.pending_count(db.get_engine(normalized_copy)) == 0


def _url(url) -> str:
    return url.render_as_string(hide_password=False)


def test_changed_document_is_renormalized_and_only_it(normalized_copy):
    with connect(normalized_copy) as conn:
        # The latest epoch is the sharpest case: the dropped operator's row must vanish, its
        # last_seen_epoch move back and it stop being active.
        epoch, text = conn.execute(
            "SELECT epoch, data::text FROM epochs ORDER BY epoch DESC LIMIT 1"
        ).fetchone()
        before_at = dict(conn.execute("SELECT epoch, normalized_at FROM epoch_normalizations"))
    doc = orjson.loads(text)
    entries = doc["operators"]["entries"]
    dropped_value = entries.pop(0)["value"]
    doc["operators"]["count"] = len(entries)
    dropped = int.from_bytes(bytes.fromhex(dropped_value[66:82]), "little")
    first = orjson.loads(entries[0]["value"].split(",", 1)[1])
    first["currentTotalStake"] = f"0x{int(first['currentTotalStake'], 16) + 12345:032x}"
    entries[0]["value"] = entries[0]["value"].split(",", 1)[0] + "," + orjson.dumps(first).decode()
    before = snapshot(normalized_copy)
    with connect(normalized_copy) as conn:
        conn.execute(
            "UPDATE epochs SET data = %s::jsonb WHERE epoch = %s",
            (orjson.dumps(doc).decode(), epoch),
        )
    summary = backfill.run_backfill(db.get_engine(normalized_copy), backfill.Options(workers=1))
    assert (summary.epochs_total, summary.epochs_done) == (1, 1)
    after = snapshot(normalized_copy)
    expected = expected_from_raw(normalized_copy)
    got = actual(normalized_copy)
    assert got.prices == expected.prices and got.shares == expected.shares
    assert (dropped, epoch) not in got.prices
    assert got.first_seen == expected.first_seen and got.last_seen == expected.last_seen
    assert got.last_seen[dropped][0] < epoch
    with connect(normalized_copy) as conn:
        assert conn.execute(
            "SELECT is_active FROM operators_metadata WHERE operator_id = %s", (dropped,)
        ).fetchone() == (False,)
    # Every other epoch's rows and bookkeeping are untouched.
    for table in ("operator_share_prices", "operator_shares"):
        assert [r for r in after[table] if r[1] != epoch] == [
            r for r in before[table] if r[1] != epoch
        ]
    with connect(normalized_copy) as conn:
        after_at = dict(conn.execute("SELECT epoch, normalized_at FROM epoch_normalizations"))
    assert {e for e in after_at if after_at[e] != before_at[e]} == {epoch}


def test_names_and_colours_a_person_set_are_kept(normalized_copy):
    with connect(normalized_copy) as conn:
        op = conn.execute("SELECT min(operator_id) FROM operators_metadata").fetchone()[0]
        conn.execute(
            "UPDATE operators_metadata SET name = 'Alice', color = '#123456' WHERE operator_id = %s",
            (op,),
        )
        conn.execute("UPDATE epochs SET data = data || '{\"touched\": 1}' WHERE epoch < 10")
    summary = backfill.run_backfill(db.get_engine(normalized_copy), backfill.Options(workers=1))
    # Epochs 0-9, and 10: its positions were compared with epoch 9's old revision (sql/042).
    assert summary.epochs_done == 11
    with connect(normalized_copy) as conn:
        assert conn.execute(
            "SELECT name, color FROM operators_metadata WHERE operator_id = %s", (op,)
        ).fetchone() == ("Alice", "#123456")


def test_parallel_workers_write_the_same_tables(raw_copy, normalized_small_url):
    summary = backfill.run_backfill(
        db.get_engine(raw_copy), backfill.Options(workers=2, batch_size=7)
    )
    assert summary.status == "succeeded" and summary.epochs_done == 80
    assert snapshot(raw_copy) == snapshot(normalized_small_url)


def _bad_documents(good: dict) -> dict[int, tuple[str, str]]:
    """epoch -> (document text, words its reason must contain); each broken in one way."""

    def with_operator(epoch: int, field: str, value) -> str:
        doc = orjson.loads(orjson.dumps(good))
        doc["epoch"] = epoch
        key, payload = doc["operators"]["entries"][1]["value"].split(",", 1)
        payload = orjson.loads(payload)
        payload[field] = value
        doc["operators"]["entries"][1]["value"] = key + "," + orjson.dumps(payload).decode()
        return orjson.dumps(doc).decode()

    missing = dict(good, epoch=101)
    del missing["operators"]
    miscounted = orjson.loads(orjson.dumps(good))
    miscounted["epoch"] = 107
    miscounted["operators"]["count"] += 1
    no_value = orjson.loads(orjson.dumps(good))
    no_value["epoch"] = 108
    del no_value["operators"]["entries"][2]["value"]
    chain_miscounted = orjson.loads(orjson.dumps(good))
    chain_miscounted["epoch"] = 109
    chain_miscounted["operatorEpochSharePrice"]["count"] = 1
    return {
        100: (with_operator(100, "currentTotalStake", "0xZZ"), "bad hex"),
        101: (orjson.dumps(missing).decode(), "operators"),
        102: (with_operator(102, "currentTotalShares", "0x0"), "zero"),
        103: ('"just a string"', "not a JSON object"),
        104: (with_operator(104, "currentTotalStake", "0x" + "f" * 40), "u128"),
        105: (with_operator(105, "currentTotalStake", -5), "negative"),
        106: (orjson.dumps(dict(good, epoch=999)).decode(), "stored as epoch 106"),
        107: (orjson.dumps(miscounted).decode(), "entries"),
        108: (orjson.dumps(no_value).decode(), "operators.entries[2]: missing field 'value'"),
        109: (orjson.dumps(chain_miscounted).decode(), "operatorEpochSharePrice: count 1"),
    }


def test_bad_epochs_are_recorded_and_the_rest_normalized(db_url):
    docs = list(generator.iter_documents("small", seed=3, epochs=30))
    insert_documents(db_url, [(d.epoch, d.data.decode()) for d in docs])
    good = orjson.loads(docs[-1].data)
    bad = _bad_documents(good)
    insert_documents(db_url, [(e, text) for e, (text, _) in bad.items()])
    with connect(db_url) as conn:
        raw_before = conn.execute("SELECT epoch, md5(data::text), revision FROM epochs").fetchall()

    result = CliRunner().invoke(main, ["backfill", "--workers", "1", "--batch-size", "4"])
    assert result.exit_code == 1, result.output
    assert f"{len(bad)} failed" in result.output
    for epoch in bad:
        assert f"failed epoch {epoch}:" in result.output

    with connect(db_url) as conn:
        errors = dict(conn.execute("SELECT epoch, reason FROM backfill_errors").fetchall())
        normalized = {r[0] for r in conn.execute("SELECT epoch FROM epoch_normalizations")}
        run = conn.execute(
            "SELECT status, epochs_done, epochs_failed FROM backfill_runs"
        ).fetchone()
        raw_after = conn.execute("SELECT epoch, md5(data::text), revision FROM epochs").fetchall()
    assert set(errors) == set(bad)
    for epoch, (_, words) in bad.items():
        assert words in errors[epoch], errors[epoch]
        assert errors[epoch].startswith(f"epoch {epoch}"), errors[epoch]
    assert "operators.entries[1]" in errors[100]  # the entry is named
    assert normalized == {d.epoch for d in docs}
    assert run == ("failed", 30, len(bad))
    assert sorted(raw_after) == sorted(raw_before)  # raw data never modified
    expected = expected_from_raw(db_url)
    assert actual(db_url).prices == expected.prices
    # The parser's own message for the whole document, whichever path read it.
    for epoch in set(bad) - {106}:
        assert errors[epoch].endswith(expected.failed[epoch]), (errors[epoch], expected.failed)

    # Known-bad documents are not retried until they change (or --retry-failed).
    again = CliRunner().invoke(main, ["backfill", "--workers", "1"])
    assert again.exit_code == 0, again.output
    assert f"{len(bad)} epochs were rejected earlier" in again.output
    retried = CliRunner().invoke(main, ["backfill", "--workers", "1", "--retry-failed"])
    assert retried.exit_code == 1 and f"{len(bad)} failed" in retried.output
    fixed = docs[-1].data.decode().replace(f'"epoch":{good["epoch"]}', '"epoch":106', 1)
    with connect(db_url) as conn:
        conn.execute("UPDATE epochs SET data = %s::jsonb WHERE epoch = 106", (fixed,))
    healed = CliRunner().invoke(main, ["backfill", "--workers", "1"])
    assert healed.exit_code == 0, healed.output
    assert "1 epochs normalized" in healed.output


def test_second_run_names_the_lock_holder_or_waits(raw_copy):
    holder = start_cli(raw_copy, "backfill", "--follow", "--workers", "1", "-q")
    try:
        with connect(raw_copy) as conn:
            deadline = time.monotonic() + 60
            while True:
                row = conn.execute(
                    "SELECT run_id, epochs_done FROM backfill_runs WHERE status = 'running'"
                ).fetchone()
                if row and row[1] == 80:
                    break
                assert time.monotonic() < deadline and holder.poll() is None, holder.stderr.read()
                time.sleep(0.05)
        run_id = row[0]
        second = run_cli(raw_copy, "backfill", "--workers", "1")
        assert second.returncode == 3, second.stderr
        assert f"another backfill is running: run {run_id} (pid {holder.pid}" in second.stderr
        waiting = start_cli(raw_copy, "backfill", "--workers", "1", "--wait")
        with connect(raw_copy) as conn:  # until it really waits for the lock
            deadline = time.monotonic() + 60
            while not conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()[0]:
                assert time.monotonic() < deadline and waiting.poll() is None, waiting.stderr.read()
                time.sleep(0.05)
        holder.send_signal(signal.SIGINT)
        assert holder.wait(timeout=30) == 130
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err
        assert "waiting for the running backfill" in err
        assert "nothing to do" in out
        with connect(raw_copy) as conn:
            status = conn.execute(
                "SELECT status, error FROM backfill_runs WHERE run_id = %s", (run_id,)
            ).fetchone()
        assert status == ("interrupted", "stopped by SIGINT")
    finally:
        for proc in (holder,):
            if proc.poll() is None:
                proc.kill()


def test_real_samples_of_both_formats(db_url, shared_data):
    dump = (shared_data / "storage-dump-epoch-2647.json").read_text()
    flat = orjson.loads((shared_data / "flat-export-220-epochs.json").read_bytes())
    seen: dict[int, str] = {}
    for doc in flat:
        seen.setdefault(doc["epoch"], orjson.dumps(doc).decode())
    seen.pop(2619, None)  # keep the flat export to epochs 0-218, the dump is epoch 2647
    insert_documents(db_url, [(2647, dump), *sorted(seen.items())])
    summary = backfill.run_backfill(db.get_engine(db_url), backfill.Options(workers=1))
    assert summary.status == "succeeded", summary
    with connect(db_url) as conn:
        rows = conn.execute(
            "SELECT operator_id, share_price_perq, source FROM operator_share_prices "
            "WHERE epoch = 2647 ORDER BY 1"
        ).fetchall()
        chain = conn.execute(
            "SELECT count(*), array_agg(DISTINCT operator_id) FROM operator_chain_share_prices"
        ).fetchone()
        flat_row = conn.execute(
            "SELECT p.share_price_perq, p.source, s.shares_raw, s.status FROM operator_share_prices p "
            "JOIN operator_shares s USING (operator_id, epoch) WHERE epoch = 218 AND operator_id = 0"
        ).fetchone()
    assert [(op, int(price), src) for op, price, src in rows] == [
        (0, 1000036353676459997, "storage_dump"),
        (1, 1000041958130096238, "storage_dump"),
    ]
    assert chain == (2878, [0, 1])
    assert (int(flat_row[0]), flat_row[1], flat_row[2], flat_row[3]) == (
        1000000030344440529,
        "flat_export",
        None,
        None,
    )
    assert actual(db_url).prices == expected_from_raw(db_url).prices


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_lost_connection_ends_the_run_clearly(raw_copy, workers):
    proc = start_cli(raw_copy, "backfill", "--batch-size", "1", "--workers", workers, "-q")
    try:
        with connect(raw_copy) as conn:
            deadline = time.monotonic() + 60
            while conn.execute("SELECT count(*) FROM epoch_normalizations").fetchone()[0] < 5:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.01)
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'shareprice backfill%'"
            )
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, (out, err)
        assert "database connection lost" in err
        with connect(raw_copy) as conn:
            status, error = conn.execute("SELECT status, error FROM backfill_runs").fetchone()
        assert status == "interrupted" and "connection lost" in error
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_protocol_error_on_a_gone_connection_is_a_lost_connection():
    # What a backend terminated mid-FETCH raised once in CI (workers=2) instead of an
    # OperationalError: with the connection gone it must still read as a lost connection.
    import psycopg

    from shareprice.backfill.pool import describe_failure

    exc = psycopg.InternalError("received 2 results from command 'FETCH FORWARD 8'")
    assert describe_failure(exc, connection_gone=True).startswith("database connection lost: ")
    assert "connection lost" not in describe_failure(exc)  # a live connection: a real bug


def _mutations():
    from hypothesis import strategies as st

    junk = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=8),
        st.sampled_from(["0x", "0xzz", "0x" + "f" * 40, "1,2,3", "0x-1", "", "registered"]),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.sampled_from(["value", "count", "entries", "registered"]), st.none()),
    )
    return st.tuples(
        st.integers(min_value=0, max_value=10**6), st.sampled_from(["set", "del"]), junk
    )


def _paths(node, prefix=()):
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found


def test_the_fast_reader_agrees_with_parse_document_on_mutated_documents(db_url):
    """Whatever is broken where, the backfill's reader returns exactly what parse_document does
    for the whole stored document: the same rows, or the same error."""
    import copy
    import json
    from functools import partial

    from hypothesis import HealthCheck, given, settings

    from shareprice.backfill import reader
    from shareprice.chain import nominators
    from shareprice.chain.parser import ParseError, load_json, parse_document

    doc = orjson.loads(list(generator.iter_documents("small", seed=4, epochs=12))[-1].data)
    doc["epoch"] = 1
    # Fewer repeated entries keep each example fast; every kind of part stays.
    for name in ("operatorEpochSharePrice", "deposits", "withdrawals"):
        doc[name]["entries"] = doc[name]["entries"][:4]
        doc[name]["count"] = len(doc[name]["entries"])
    # Payloads are JSON inside strings: expose them as objects so mutations reach their fields.
    for entry in doc["operators"]["entries"]:
        key, payload = entry["value"].split(",", 1)
        entry["value"] = [key, orjson.loads(payload)]
    paths = _paths(doc)[1:]
    conn = connect(db_url)
    conn.autocommit = False
    reader.configure(conn)

    def whole(text):
        try:
            record = parse_document(text)
            if record.format == "storage_dump":  # the backfill also reads the positions
                # The parser's own loader (orjson: an integer beyond 64 bits is a float, and
                # the error says so), as parse_document loaded the text above.
                whole_doc = load_json(text)
                nominators.parse_positions(
                    whole_doc[0] if isinstance(whole_doc, list) else whole_doc, record.epoch
                )
        except ParseError as exc:
            return ("error", exc.reason, exc.entry)
        ops = [
            (
                o.operator_id,
                o.stake,
                o.shares,
                o.storage_fee,
                o.nomination_tax,
                o.status,
                o.share_price_perq,
                o.rewards,
            )
            for o in record.operators
        ]
        chain = sorted(
            (c.operator_id, c.domain_id, c.domain_epoch, c.shares_per_stake_perq)
            for c in record.chain_prices
        )
        return ("ok", record.epoch, ops, chain)

    examples = int(os.environ.get("SHAREPRICE_FUZZ_EXAMPLES", "150"))

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_mutations())
    def check(mutation):
        pick, how, junk = mutation
        mutated = copy.deepcopy(doc)
        path = paths[pick % len(paths)]
        parent = mutated
        for step in path[:-1]:
            parent = parent[step]
        if how == "del" and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = junk
        for entry in (
            mutated.get("operators", {}).get("entries", [])
            if isinstance(mutated.get("operators"), dict)
            and isinstance(mutated["operators"].get("entries"), list)
            else []
        ):
            value = entry.get("value") if isinstance(entry, dict) else None
            if isinstance(value, list) and len(value) == 2:
                entry["value"] = f"{value[0]},{json.dumps(value[1])}"
        text = json.dumps(mutated)
        with conn.transaction():
            conn.execute("DELETE FROM epochs")
            conn.execute("INSERT INTO epochs (epoch, data) VALUES (1, %s::jsonb)", (text,))
            stored = conn.execute("SELECT data::text FROM epochs").fetchone()[0]
            [parsed] = list(
                reader.parse_batch(reader.fetch(conn, [1]), partial(reader.load_document, conn))
            )
        expected = whole(stored)
        if parsed.error is not None:
            got = ("error", parsed.error.reason, parsed.error.entry)
        else:
            got = ("ok", parsed.epoch, parsed.operators, sorted(parsed.chain))
        if expected[0] == "ok" and expected[1] != 1:  # stored under another epoch
            assert got[0] == "error" and "stored as epoch 1" in got[1]
        else:
            assert got == expected

    try:
        check()
    finally:
        conn.close()


def test_rows_flushed_mid_batch_give_the_same_tables(raw_copy, normalized_small_url, monkeypatch):
    """A batch COPYs its rows every FLUSH_ROWS (bounded memory whatever the batch size), also
    while re-normalizing changed epochs."""
    monkeypatch.setattr(batch, "FLUSH_ROWS", 7)
    engine = db.get_engine(raw_copy)
    first = backfill.run_backfill(engine, backfill.Options(workers=1, batch_size=80))
    assert first.epochs_done == 80
    assert snapshot(raw_copy) == snapshot(normalized_small_url)
    with connect(raw_copy) as conn:
        conn.execute("UPDATE epochs SET data = data || '{\"touched\": 1}' WHERE epoch % 3 = 0")
    again = backfill.run_backfill(engine, backfill.Options(workers=1, batch_size=80))
    # The 27 touched epochs and their successors (positions compared with the old revisions).
    assert again.epochs_done == 54
    after = snapshot(raw_copy)
    expected = snapshot(normalized_small_url)
    assert after["operator_share_prices"] == expected["operator_share_prices"]
    assert after["operator_shares"] == expected["operator_shares"]
    assert after["operators_metadata"] == expected["operators_metadata"]


_TOTALS_LIVE = """
SELECT n.epoch, count(s.epoch), sum(s.stake_raw), sum(s.storage_fee_raw), sum(s.rewards_raw)
FROM epoch_normalizations n LEFT JOIN operator_shares s ON s.epoch = n.epoch
GROUP BY n.epoch ORDER BY n.epoch
"""
_TOTALS_STORED = """
SELECT n.epoch, t.operators, t.total_stake, t.total_storage_fee, t.total_rewards
FROM epoch_normalizations n LEFT JOIN epoch_totals t ON t.epoch = n.epoch ORDER BY n.epoch
"""


def test_stored_epoch_totals_equal_the_rows_after_every_kind_of_write(raw_copy, monkeypatch):
    """sql/070: a batch's totals come from its own inserted states (no scan of the table);
    split inserts add up, re-normalized epochs start over, UPDATE recomputes, TRUNCATE empties,
    and a mark whose count the stored row disagrees with is repaired from the table."""
    monkeypatch.setattr(batch, "FLUSH_ROWS", 7)  # every epoch's rows in several COPYs
    engine = db.get_engine(raw_copy)
    assert backfill.run_backfill(engine, backfill.Options(workers=1, batch_size=30)).ok

    def stored_equals_live() -> None:
        with connect(raw_copy) as conn:
            live = conn.execute(_TOTALS_LIVE).fetchall()
            assert conn.execute(_TOTALS_STORED).fetchall() == live
            # Both kinds: epochs without operator states (operators = 0, NULL sums) and with.
            assert len(live) == 80 and {n > 0 for _, n, *_ in live} == {False, True}

    stored_equals_live()
    with connect(raw_copy) as conn:
        conn.execute("UPDATE epochs SET data = data || '{\"touched\": 1}' WHERE epoch % 4 = 0")
    assert backfill.run_backfill(engine, backfill.Options(workers=1, batch_size=30)).ok
    stored_equals_live()
    with connect(raw_copy) as conn:
        conn.execute("UPDATE operator_shares SET stake_raw = stake_raw + 7 WHERE epoch = 5")
        conn.execute("UPDATE operator_shares SET rewards_raw = NULL WHERE epoch = 6")
    stored_equals_live()
    with connect(raw_copy) as conn:
        # An epoch's states deleted and inserted again in two statements: the parts add up.
        conn.execute("CREATE TEMP TABLE kept AS SELECT * FROM operator_shares WHERE epoch = 7")
        conn.execute("DELETE FROM operator_shares WHERE epoch = 7")
        # The first part carries no rewards: its NULL sum plus the second part's is the second's.
        conn.execute("UPDATE kept SET rewards_raw = NULL WHERE operator_id % 2 = 0")
        conn.execute("INSERT INTO operator_shares SELECT * FROM kept WHERE operator_id % 2 = 0")
        conn.execute("INSERT INTO operator_shares SELECT * FROM kept WHERE operator_id % 2 = 1")
        assert conn.execute("SELECT count(*) > 2 FROM kept").fetchone() == (True,)
    stored_equals_live()
    with connect(raw_copy) as conn:
        # A stored row that disagrees with its mark's count is recomputed when marked again.
        conn.execute("UPDATE epoch_totals SET operators = 1, total_stake = 1 WHERE epoch = 9")
        conn.execute("UPDATE epoch_normalizations SET revision = -1 WHERE epoch = 9")
        conn.execute("TRUNCATE operator_shares")
        assert conn.execute("SELECT count(*) FROM epoch_totals").fetchone() == (0,)
        conn.execute("TRUNCATE operator_share_prices, epoch_normalizations")
    assert backfill.run_backfill(engine, backfill.Options(workers=1, batch_size=30)).ok
    stored_equals_live()


def test_fetch_in_chunks_returns_what_one_query_returns(raw_copy):
    """reader.fetch sends one query per _ROWS_PER_FETCH epochs: the rows, bases included and
    just before their epochs, are exactly those of one query over all of them, in order, for
    epochs with gaps (a base inside the range) and a chunk boundary at a gap."""
    from shareprice.backfill import reader

    with connect(raw_copy) as conn:
        reader.configure(conn)
        epochs = [e for (e,) in conn.execute("SELECT epoch FROM epochs ORDER BY 1").fetchall()]
        assert len(epochs) > 3 * reader._ROWS_PER_FETCH
        wanted = [e for e in epochs if e not in (epochs[3], epochs[8], epochs[9], epochs[17])]
        wanted.reverse()  # any order in, epoch order out
        with conn.transaction():
            got = list(reader.fetch(conn, wanted))
            with conn.cursor(binary=True) as cur:
                cur.execute(
                    reader.FETCH_SQL,
                    {"epochs": wanted, "bases": reader.base_epochs(wanted)},
                )
                expected = [reader.RawEpoch(*row) for row in cur.fetchall()]
    assert got == expected
    # E-1 of the epoch after each gap (the missing E-1 of the first epoch has no row).
    assert [r.epoch for r in got if r.is_base] == [epochs[3], epochs[9], epochs[17]]
    assert [r.epoch for r in got] == sorted(r.epoch for r in got)
