"""Integrity checks: clean data passes, each planted fault trips its own check and no other,
`shareprice check` gates on failures, runs persist (or say why not on a read-only role)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.engine import Engine

from shareprice import backfill, checks
from shareprice.store import config

SHAREPRICE = [sys.executable, "-m", "shareprice.cli"]
SLASHED_WARNING = "prices_never_decrease"  # the small data set slashes one operator: a warning


@pytest.fixture()
def small(normalized_small_copy: Engine) -> Engine:
    return normalized_small_copy


def _cli_check(*args: str) -> tuple[int, dict]:
    out = subprocess.run(
        [*SHAREPRICE, "check", "--json", "--no-save", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ,
    )
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def _statuses(data: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in data["checks"]}


def _one(conn, sql: str, **params):
    row = conn.execute(text(sql), params).first()
    assert row is not None, f"the small data set has no row for: {sql}"
    return row


# --- raw edits (a fault in the data itself, re-normalized the way production would) -----------


def _edit_raw(engine: Engine, epoch: int, edit: Callable[[dict], None]) -> None:
    with engine.begin() as conn:
        raw = conn.execute(
            text("SELECT data::text FROM epochs WHERE epoch = :e"), {"e": epoch}
        ).scalar_one()
        doc = orjson.loads(raw)
        edit(doc[0] if isinstance(doc, list) else doc)
        conn.execute(
            text("UPDATE epochs SET data = CAST(:d AS jsonb) WHERE epoch = :e"),
            {"d": orjson.dumps(doc).decode(), "e": epoch},
        )


def _operator_entries(doc: dict) -> dict[int, int]:
    """operator id (from the storage key) -> index in operators.entries."""
    return {
        int.from_bytes(bytes.fromhex(e["value"][66:82]), "little"): i
        for i, e in enumerate(doc["operators"]["entries"])
    }


def _set_payload(doc: dict, operator_id: int, **fields) -> None:
    entry = doc["operators"]["entries"][_operator_entries(doc)[operator_id]]
    key, payload = entry["value"].split(",", 1)
    state = orjson.loads(payload)
    state.update(fields)
    entry["value"] = key + "," + orjson.dumps(state).decode()


def _renormalize(engine: Engine) -> None:
    summary = backfill.run_backfill(engine, backfill.Options(workers=1))
    assert summary.status == "succeeded" and summary.epochs_failed == 0, summary


# Two registered operators in a middle epoch, with different prices and stakes.
_PAIR = """
SELECT a.operator_id AS x, b.operator_id AS y, a.epoch
FROM operator_shares a
JOIN operator_shares b ON b.epoch = a.epoch AND b.operator_id > a.operator_id
JOIN operator_share_prices pa ON pa.operator_id = a.operator_id AND pa.epoch = a.epoch
JOIN operator_share_prices pb ON pb.operator_id = b.operator_id AND pb.epoch = b.epoch
WHERE a.status = 'registered' AND b.status = 'registered'
  AND pa.share_price_perq <> pb.share_price_perq AND a.stake_raw <> b.stake_raw
  AND a.epoch BETWEEN 30 AND 60
ORDER BY a.epoch, a.operator_id, b.operator_id
LIMIT 1
"""

# A registered operator in a middle epoch E of its life, present at E-1 and E+1, with no chain
# record for E-1 (which the dump of E would have to agree with).
_INNER_ROW = """
SELECT s.operator_id AS x, s.epoch
FROM operator_shares s
JOIN operators_metadata m ON m.operator_id = s.operator_id
WHERE s.status = 'registered' AND s.epoch > m.first_seen_epoch + 1
  AND s.epoch < m.last_seen_epoch - 1
  AND NOT EXISTS (SELECT 1 FROM operator_chain_share_prices c
                  WHERE c.operator_id = s.operator_id AND c.domain_epoch = s.epoch - 1)
ORDER BY s.epoch DESC, s.operator_id
LIMIT 1
"""


def fault_missing_epoch(engine: Engine) -> None:
    """A middle epoch was never normalized (no operator starts or ends there)."""
    with engine.begin() as conn:
        epoch = _one(
            conn,
            """
            SELECT n.epoch FROM epoch_normalizations n
            WHERE n.epoch BETWEEN 20 AND 60 AND NOT EXISTS (
                SELECT 1 FROM operators_metadata m
                WHERE n.epoch IN (m.first_seen_epoch, m.last_seen_epoch))
            ORDER BY n.epoch LIMIT 1
            """,
        ).epoch
        for table in ("operator_share_prices", "operator_shares", "epoch_normalizations"):
            conn.execute(text(f"DELETE FROM {table} WHERE epoch = :e"), {"e": epoch})  # noqa: S608


def fault_recorded_count(engine: Engine) -> None:
    """The backfill's bookkeeping claims another operator count than it wrote."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE epoch_normalizations SET operator_count = operator_count + 1 "
                "WHERE epoch = 40"
            )
        )


def fault_dropped_row(engine: Engine) -> None:
    """An operator's row of the last epoch was dropped (metadata adjusted to match)."""
    with engine.begin() as conn:
        row = _one(
            conn,
            """
            SELECT p.operator_id AS x, p.epoch FROM operator_share_prices p
            JOIN operators_metadata m ON m.operator_id = p.operator_id
            WHERE p.epoch = (SELECT max(epoch) FROM epoch_normalizations)
              AND m.first_seen_epoch < p.epoch
            ORDER BY p.operator_id LIMIT 1
            """,
        )
        for table in ("operator_share_prices", "operator_shares"):
            conn.execute(
                text(f"DELETE FROM {table} WHERE operator_id = :x AND epoch = :e"),  # noqa: S608
                {"x": row.x, "e": row.epoch},
            )
        conn.execute(
            text("UPDATE operators_metadata SET last_seen_epoch = :e - 1 WHERE operator_id = :x"),
            {"x": row.x, "e": row.epoch},
        )


def fault_swapped_states(engine: Engine) -> None:
    """Normalized rows hold the wrong operator's state: in the raw document two registered
    operators' states are swapped (totals, counts and the price spread stay the same, so only
    a row-by-row comparison can see it), and the bookkeeping believes it is current."""
    with engine.begin() as conn:
        pair = _one(conn, _PAIR)

    def swap(doc: dict) -> None:
        index = _operator_entries(doc)
        entries = doc["operators"]["entries"]
        a, b = entries[index[pair.x]], entries[index[pair.y]]
        key_a, payload_a = a["value"].split(",", 1)
        key_b, payload_b = b["value"].split(",", 1)
        a["value"], b["value"] = key_a + "," + payload_b, key_b + "," + payload_a

    _edit_raw(engine, pair.epoch, swap)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE epoch_normalizations n SET revision = e.revision FROM epochs e "
                "WHERE e.epoch = n.epoch AND n.epoch = :e"
            ),
            {"e": pair.epoch},
        )


def fault_moved_shares(engine: Engine) -> None:
    """Shares moved between two operators' rows: totals unchanged, both prices now wrong."""
    with engine.begin() as conn:
        pair = _one(conn, _PAIR)
        delta = conn.execute(
            text(
                "SELECT least(a.shares_raw, b.shares_raw) / 1000 FROM operator_shares a, "
                "operator_shares b WHERE a.operator_id = :x AND b.operator_id = :y "
                "AND a.epoch = :e AND b.epoch = :e"
            ),
            {"x": pair.x, "y": pair.y, "e": pair.epoch},
        ).scalar_one()
        for op, sign in ((pair.x, 1), (pair.y, -1)):
            conn.execute(
                text(
                    "UPDATE operator_shares SET shares_raw = shares_raw + :d "
                    "WHERE operator_id = :o AND epoch = :e"
                ),
                {"d": sign * int(delta), "o": op, "e": pair.epoch},
            )


def fault_chain_record(engine: Engine) -> None:
    """One chain-recorded price that the computed price of the next dump contradicts."""
    with engine.begin() as conn:
        row = _one(
            conn,
            """
            SELECT c.operator_id, c.domain_id, c.domain_epoch FROM operator_chain_share_prices c
            JOIN operator_share_prices p
              ON p.operator_id = c.operator_id AND p.epoch = c.domain_epoch + 1
            ORDER BY c.domain_epoch DESC LIMIT 1
            """,
        )
        conn.execute(
            text(
                "UPDATE operator_chain_share_prices "
                "SET shares_per_stake_perq = shares_per_stake_perq - 1000000000 "
                "WHERE operator_id = :o AND domain_id = :d AND domain_epoch = :e"
            ),
            {"o": row.operator_id, "d": row.domain_id, "e": row.domain_epoch},
        )


def fault_phantom_operator(engine: Engine) -> None:
    """An operator stored under an id no raw document registers (the old position-as-id bug)."""
    with engine.begin() as conn:
        x = _one(
            conn,
            "SELECT operator_id FROM operators_metadata WHERE status = 'registered' "
            "ORDER BY operator_id LIMIT 1",
        ).operator_id
        for table in (
            "operator_share_prices",
            "operator_shares",
            "operator_chain_share_prices",
            "operators_metadata",
        ):
            conn.execute(
                text(f"UPDATE {table} SET operator_id = :new WHERE operator_id = :x"),  # noqa: S608
                {"x": x, "new": x + 4_000_000},
            )


def fault_price_falls(engine: Engine) -> None:
    """The chain data itself has a registered operator's price falling for one epoch
    (stake cut by 0.1% in the raw document, then normalized as production would)."""
    with engine.begin() as conn:
        row = _one(conn, _INNER_ROW)
        stake = conn.execute(
            text("SELECT stake_raw FROM operator_shares WHERE operator_id = :x AND epoch = :e"),
            {"x": row.x, "e": row.epoch},
        ).scalar_one()
    cut = int(stake) * 999 // 1000
    _edit_raw(engine, row.epoch, lambda doc: _set_payload(doc, row.x, currentTotalStake=hex(cut)))
    _renormalize(engine)


def fault_metadata_first_seen(engine: Engine) -> None:
    """operators_metadata says an operator appeared one epoch later than the data shows."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE operators_metadata SET first_seen_epoch = first_seen_epoch + 1 "
                "WHERE operator_id = (SELECT min(operator_id) FROM operators_metadata "
                "WHERE last_seen_epoch > first_seen_epoch + 1)"
            )
        )


def fault_rewards(engine: Engine) -> None:
    """One operator's rewards differ from the raw summary (the state row and the analytics totals)."""
    with engine.begin() as conn:
        row = _one(
            conn,
            "SELECT operator_id, epoch FROM operator_shares WHERE rewards_raw IS NOT NULL "
            "AND epoch = 45 ORDER BY operator_id LIMIT 1",
        )
        conn.execute(
            text(
                "UPDATE operator_shares SET rewards_raw = rewards_raw + 1 "
                "WHERE operator_id = :o AND epoch = :e"
            ),
            {"o": row.operator_id, "e": row.epoch},
        )


def fault_operator_gap(engine: Engine) -> None:
    """The raw data has a registered operator missing for one epoch in the middle of its life
    (zero stake and shares: no price), normalized as production would."""
    with engine.begin() as conn:
        row = _one(conn, _INNER_ROW)
    _edit_raw(
        engine,
        row.epoch,
        lambda doc: _set_payload(doc, row.x, currentTotalStake=0, currentTotalShares=0),
    )
    _renormalize(engine)


def fault_digest_bookkeeping(engine: Engine) -> None:
    """Every epoch verified, then epoch 40's rows no longer hash to its verified digest with
    no change mark naming it (as a write behind the triggers would leave it), while the rows
    themselves stay right: only the digests' own check can tell."""
    run = checks.run_checks(engine, full=True)
    assert checks.save_run(engine, run).saved and len(run.verified) == 80
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE epoch_verifications SET rows_digest = rows_digest || '.' WHERE epoch = 40")
        )


#: fault -> the checks it must fail (every other check keeps its clean status).
FAULTS: list[tuple[Callable[[Engine], None], set[str]]] = [
    (fault_missing_epoch, {"epochs_normalized"}),
    (fault_recorded_count, {"operator_counts"}),
    (fault_swapped_states, {"prices_match_raw"}),
    # Moved shares break the formula and no longer equal the raw shares (prices_match_raw
    # compares the whole state row since issue 13: the analytics check may sample).
    (fault_moved_shares, {"price_formula", "prices_match_raw"}),
    (fault_chain_record, {"chain_prices_agree"}),
    (fault_phantom_operator, {"no_phantom_operators"}),
    (fault_price_falls, {"prices_never_decrease"}),
    (fault_metadata_first_seen, {"metadata_seen_range"}),
    (fault_rewards, {"prices_match_raw", "comprehensive_analytics_agree"}),
    (fault_operator_gap, {"operator_continuity"}),
    # A dropped row is a wrong operator count AND wrong per-epoch totals: both checks that
    # compare counts with the raw data see it, by design.
    (fault_dropped_row, {"operator_counts", "comprehensive_analytics_agree"}),
    (fault_digest_bookkeeping, {"verified_digests_hold"}),
]


def test_every_check_has_a_planted_fault():
    """Here for the price checks; the nominator checks' faults are in test_checks_nominators."""
    covered = set().union(*(expected for _, expected in FAULTS))
    nominator = {n for n in checks.check_names() if n.startswith("nominator_")}
    assert nominator and covered == set(checks.check_names()) - nominator


def test_clean_small_data_passes(small):
    code, data = _cli_check()
    assert code == 0, data
    statuses = _statuses(data)
    assert list(statuses) == checks.check_names()
    # The one slashed operator's falling price is a warning, not a failure.
    assert {n for n, s in statuses.items() if s != "pass"} == {SLASHED_WARNING}
    warn = next(c for c in data["checks"] if c["name"] == SLASHED_WARNING)
    assert warn["count"] == 1 and warn["examples"][0]["slashed"] is True
    notes = {c["name"]: c["note"] for c in data["checks"]}
    # The data confirms DOMAIN.md's pairing: a chain record of E agrees with the dump of E+1.
    with small.connect() as conn:
        pairs = conn.execute(
            text(
                "SELECT count(*) FROM operator_chain_share_prices c JOIN operator_share_prices p "
                "ON p.operator_id = c.operator_id AND p.epoch = c.domain_epoch + 1"
            )
        ).scalar_one()
    assert pairs > 50
    assert (
        f"{pairs} paired with the dump of the next epoch, {pairs} agree"
        in notes["chain_prices_agree"]
    )
    assert "718 prices compared" in notes["prices_match_raw"]


@pytest.mark.parametrize("fault, expected", FAULTS, ids=[f.__name__ for f, _ in FAULTS])
def test_planted_fault_trips_its_check_only(small, fault, expected):
    # The nominator checks compare positions with these operator states and chain prices, so
    # a fault planted in those legitimately trips them too; among the price checks, one fault
    # trips its own check only (the nominator checks' faults: test_checks_nominators).
    fault(small)
    # --full: the digests' own check compares only in full runs (an incremental run relies on
    # them); with nothing verified yet both modes read every epoch alike.
    code, data = _cli_check("--full")
    assert code == 1
    price_checks = [c for c in data["checks"] if not c["name"].startswith("nominator_")]
    failed = {c["name"] for c in price_checks if c["status"] == "fail"}
    assert failed == expected, json.dumps([c for c in price_checks if c["status"] == "fail"])
    for item in price_checks:
        if item["name"] in expected:
            assert item["count"] > 0 and item["examples"], item
        elif item["name"] != SLASHED_WARNING:
            assert item["status"] == "pass" and item["count"] == 0, item


def test_fault_examples_say_where(small):
    fault_missing_epoch(small)
    fault_chain_record(small)
    run = checks.run_checks(small, only=["epochs_normalized", "chain_prices_agree"])
    gaps, chain = run.results
    assert gaps.count == 1 and gaps.examples[0]["why"] == "missing"
    assert gaps.examples[0]["count"] == 1
    bad = chain.examples[0]
    assert bad["dump_epoch"] == bad["domain_epoch"] + 1
    assert abs(int(bad["inverted"]) - int(bad["computed"])) > 1


def test_sample_is_seeded_and_said(small):
    first = checks.run_checks(small, only=["prices_match_raw"], sample=10, seed=7)
    again = checks.run_checks(small, only=["prices_match_raw"], sample=10, seed=7)
    other = checks.run_checks(small, only=["prices_match_raw"], sample=10, seed=8)
    assert first.scope.sample == again.scope.sample != other.scope.sample
    assert len(first.scope.sample) == 10
    assert "a seeded sample of 10 of 80 normalized epochs (seed 7)" in first.results[0].note


def test_sample_finds_a_fault_in_a_sampled_epoch_only(small):
    fault_swapped_states(small)
    full = checks.run_checks(small, only=["prices_match_raw"])
    faulty = full.results[0].examples[0]["epoch"]
    all_epochs = list(range(80))
    seed = next(s for s in range(100) if faulty not in checks.sample_epochs(all_epochs, 5, s))
    missed = checks.run_checks(small, only=["prices_match_raw"], sample=5, seed=seed)
    assert missed.results[0].status == "pass"  # honest: a sample can miss a fault
    hit_seed = next(s for s in range(1000) if faulty in checks.sample_epochs(all_epochs, 5, s))
    hit = checks.run_checks(small, only=["prices_match_raw"], sample=5, seed=hit_seed)
    assert hit.results[0].status == "fail"


def test_unknown_check_name_is_refused(small):
    with pytest.raises(ValueError, match="unknown check"):
        checks.run_checks(small, only=["no_such_check"])
    out = subprocess.run(
        [*SHAREPRICE, "check", "--only", "no_such_check"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "unknown check" in out.stderr


def test_cli_table_only_and_history(small):
    ok = subprocess.run([*SHAREPRICE, "check"], capture_output=True, text=True, timeout=180)
    assert ok.returncode == 0, ok.stderr
    passed = len(checks.CHECKS) - 1
    assert f"WARN: 0 failed, 1 warned, {passed} passed on all 80 normalized epochs" in ok.stdout
    fault_metadata_first_seen(small)
    bad = subprocess.run([*SHAREPRICE, "check"], capture_output=True, text=True, timeout=180)
    assert bad.returncode == 1
    assert "metadata_seen_range            FAIL" in bad.stdout
    assert "metadata_first=" in bad.stdout and "data_first=" in bad.stdout
    only = subprocess.run(
        [*SHAREPRICE, "check", "--only", "price_formula", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert only.returncode == 0
    assert [c["name"] for c in json.loads(only.stdout)["checks"]] == ["price_formula"]

    past = checks.history(small)
    assert [r.status for r in past] == ["pass", "fail", "warn"]
    assert past[1].checks["metadata_seen_range"][:2] == ("fail", 1)
    latest = checks.load_results(small)
    assert latest is not None and [r.name for r in latest[1]] == ["price_formula"]


def test_read_only_connection_skips_saving_with_a_reason(small):
    run = checks.run_checks(small, only=["epochs_normalized"])
    reader = sa.create_engine(
        config.normalize_url(small.url),
        connect_args={"options": "-c default_transaction_read_only=on"},
    )
    try:
        saved = checks.save_run(reader, run, source="dashboard")
    finally:
        reader.dispose()
    assert not saved.saved
    assert "read-only" in saved.message
    assert checks.history(small) == []


def test_real_samples_pass_and_confirm_the_chain_pairing(db_url, engine, shared_data):
    """Both real formats, normalized by the real backfill: every check passes."""
    flat = {
        d["epoch"]: d for d in json.loads((shared_data / "flat-export-220-epochs.json").read_text())
    }
    dump = (shared_data / "storage-dump-epoch-2647.json").read_text()
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO epochs (epoch, data) VALUES (:e, CAST(:d AS jsonb))"),
            [{"e": e, "d": json.dumps(d)} for e, d in sorted(flat.items())]
            + [{"e": 2647, "d": dump}],
        )
    _renormalize(engine)
    run = checks.run_checks(engine)
    assert run.status == "pass", checks.format_table(run)
    notes = {r.name: r.note for r in run.results}
    assert "439 prices compared" in notes["prices_match_raw"]
    # The record of 2646 agrees with the dump of 2647; none exists for 2647 itself.
    assert "2 paired with the dump of the next epoch, 2 agree" in notes["chain_prices_agree"]
    assert "0 of 0 would agree" in notes["chain_prices_agree"]
    assert "skip numbers in 2 place(s)" in notes["epochs_normalized"]


def test_registry_decoder_equals_sql_registry(small):
    """operator_counts / no_phantom_operators read the registry in Python (registry_of_values)
    for speed; on every small-data document it says exactly what sql/033's SQL says."""
    from shareprice.checks.definitions import registry_of_values

    with small.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT e.epoch, ARRAY(SELECT x ->> 'value' FROM jsonb_array_elements("
                "e.data -> 'operators' -> 'entries') x) AS vals, "
                "ARRAY(SELECT jsonb_build_array(r.operator_id, r.priced) "
                "FROM raw_operator_registry(e.data) r) AS sql_registry "
                "FROM epochs e WHERE jsonb_typeof(e.data -> 'operators' -> 'entries') = 'array' "
                "ORDER BY e.epoch"
            )
        ).all()
    assert len(rows) >= 50
    for r in rows:
        registry, priced = registry_of_values(list(r.vals))
        expected = {int(op): bool(p) for op, p in r.sql_registry}
        assert registry == expected, r.epoch
        assert priced == sum(expected.values()), r.epoch


def test_registry_decoder_follows_storage_keys_and_zero_rules():
    """Ids come from the key (not the position), both zero forms count as unpriced."""
    from shareprice.checks.definitions import _OPERATORS_PREFIX, registry_of_values

    def entry(op: int, stake, shares) -> str:
        key = _OPERATORS_PREFIX + op.to_bytes(8, "little").hex()
        return (
            key
            + ","
            + orjson.dumps({"currentTotalStake": stake, "currentTotalShares": shares}).decode()
        )

    values = [
        entry(7, "0x00000000000000000000000000000001", 0),
        entry(3, 0, "0x00000000000000000000000000000000"),
        entry(300, "0x0", 5),
        "0xffff,not an operator",
        None,
    ]
    assert registry_of_values(values) == ({7: True, 3: False, 300: True}, 2)
    with pytest.raises(ValueError):
        registry_of_values([_OPERATORS_PREFIX + "0700000000000000,{not json"])


def test_analytics_compares_a_seeded_sample_and_says_so(small, monkeypatch):
    """Over more than ANALYTICS_MAX_EPOCHS epochs the view agreement compares a seeded sample
    (the note says so, the sample is reproducible); a fault in a sampled epoch still fails."""
    from shareprice.checks import definitions

    monkeypatch.setattr(definitions, "ANALYTICS_MAX_EPOCHS", 10)
    fault_rewards(small)  # epoch 45
    runs = {
        seed: checks.run_checks(
            small, only=["comprehensive_analytics_agree"], full=True, seed=seed
        ).results[0]
        for seed in range(25)
    }
    for seed, result in runs.items():
        chosen = definitions.analytics_epochs(
            checks.Scope(80, 80, None, None, seed, mode="full"), list(range(80))
        )
        assert len(chosen) == 10
        assert f"a seeded sample (seed {seed}) of 10 of the 80 epochs" in result.note
        assert result.status == ("fail" if 45 in chosen else "pass"), (seed, result.note)
    assert {r.status for r in runs.values()} == {"pass", "fail"}
