"""Integrity checks on real samples: clean data passes, the CLI gates on failures, runs persist."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa
from sqlalchemy import text

from shareprice import checks, config, parser

SHAREPRICE = [sys.executable, "-m", "shareprice.cli"]


def _load_real_samples(engine, shared_data) -> None:
    """Both real formats: the flat export (with its duplicate epoch once) and the 2647 dump."""
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


def _normalize(engine) -> None:
    """Write the normalized tables from the parser, as the backfill does (stand-in until the
    backfill lands: the checks judge the tables, not who wrote them)."""
    meta: dict[int, list] = {}
    with engine.begin() as conn:
        for r in conn.execute(
            text("SELECT epoch, revision, data::text AS d FROM epochs ORDER BY epoch")
        ).all():
            record = parser.parse_document(r.d)
            for op in record.operators:
                conn.execute(
                    text("INSERT INTO operator_share_prices VALUES (:o, :e, :p, :s)"),
                    {
                        "o": op.operator_id,
                        "e": r.epoch,
                        "p": op.share_price_perq,
                        "s": record.format,
                    },
                )
                conn.execute(
                    text("INSERT INTO operator_shares VALUES (:o, :e, :st, :sh, :f, :rw)"),
                    {
                        "o": op.operator_id,
                        "e": r.epoch,
                        "st": op.stake,
                        "sh": op.shares,
                        "f": op.storage_fee,
                        "rw": op.rewards,
                    },
                )
                seen = meta.setdefault(op.operator_id, [r.epoch, r.epoch, op.status])
                seen[1:] = [r.epoch, op.status]
            for c in record.chain_prices:
                conn.execute(
                    text(
                        "INSERT INTO operator_chain_share_prices VALUES (:o, :d, :de, :v, :s) "
                        "ON CONFLICT DO NOTHING"
                    ),
                    {
                        "o": c.operator_id,
                        "d": c.domain_id,
                        "de": c.domain_epoch,
                        "v": c.shares_per_stake_perq,
                        "s": r.epoch,
                    },
                )
            conn.execute(
                text(
                    "INSERT INTO epoch_normalizations (epoch, revision, operator_count) "
                    "VALUES (:e, :r, :n)"
                ),
                {"e": r.epoch, "r": r.revision, "n": len(record.operators)},
            )
        for op, (first, last, status) in meta.items():
            conn.execute(
                text(
                    "INSERT INTO operators_metadata (operator_id, name, color, status, "
                    "first_seen_epoch, last_seen_epoch) VALUES (:o, :n, '#336699', :s, :f, :l)"
                ),
                {"o": op, "n": f"Operator {op}", "s": status, "f": first, "l": last},
            )


@pytest.fixture()
def real_db(db_url, engine, shared_data):
    _load_real_samples(engine, shared_data)
    _normalize(engine)
    return engine


def _by_name(run) -> dict[str, checks.CheckResult]:
    return {r.name: r for r in run.results}


def test_clean_real_samples_pass_every_check(real_db):
    run = checks.run_checks(real_db)
    assert [r.name for r in run.results] == checks.check_names()
    assert run.status == "pass", checks.format_table(run)
    results = _by_name(run)
    # The checks looked at something: prices compared, and the chain pairing the data confirms.
    assert "439 prices compared" in results["prices_match_raw"].note
    chain = results["chain_prices_agree"].note
    assert "2 paired with the dump of the next epoch, 2 agree" in chain
    assert "0 of 0 would agree" in chain  # no record of 2647 itself: E+1 is the pairing
    assert "skip numbers in 2 place(s)" in results["epochs_normalized"].note


def test_sample_is_seeded_and_said(real_db):
    first = checks.run_checks(real_db, only=["prices_match_raw"], sample=10, seed=7)
    again = checks.run_checks(real_db, only=["prices_match_raw"], sample=10, seed=7)
    other = checks.run_checks(real_db, only=["prices_match_raw"], sample=10, seed=8)
    assert first.scope.sample == again.scope.sample
    assert first.scope.sample != other.scope.sample
    assert len(first.scope.sample) == 10
    assert "a seeded sample of 10 of 221 normalized epochs (seed 7)" in first.results[0].note


def test_unknown_check_name_is_refused(real_db):
    with pytest.raises(ValueError, match="unknown check"):
        checks.run_checks(real_db, only=["no_such_check"])


def test_cli_exit_status_json_and_history(real_db, db_url):
    ok = subprocess.run(
        [*SHAREPRICE, "check", "--json"], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert [c["name"] for c in data["checks"]] == checks.check_names()
    for item in data["checks"]:
        assert set(item) >= {"name", "status", "count", "examples", "seconds"}
        assert item["status"] == "pass"

    with real_db.begin() as conn:
        conn.execute(
            text("UPDATE operators_metadata SET last_seen_epoch = 2700 WHERE operator_id = 1")
        )
    bad = subprocess.run([*SHAREPRICE, "check"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "metadata_seen_range    FAIL" in bad.stdout
    assert "operator_id=1" in bad.stdout and "metadata_last=2700" in bad.stdout

    only = subprocess.run(
        [*SHAREPRICE, "check", "--only", "price_formula", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert only.returncode == 0
    assert [c["name"] for c in json.loads(only.stdout)["checks"]] == ["price_formula"]

    past = checks.history(real_db)
    assert [r.status for r in past] == ["pass", "fail", "pass"]
    assert past[1].checks["metadata_seen_range"][:2] == ("fail", 1)
    latest = checks.load_results(real_db)
    assert latest is not None and [r.name for r in latest[1]] == ["price_formula"]


def test_read_only_connection_skips_saving_with_a_reason(real_db, db_url):
    run = checks.run_checks(real_db, only=["epochs_normalized"])
    reader = sa.create_engine(
        config.normalize_url(db_url),
        connect_args={"options": "-c default_transaction_read_only=on"},
    )
    try:
        saved = checks.save_run(reader, run, source="dashboard")
    finally:
        reader.dispose()
    assert not saved.saved
    assert "read-only" in saved.message
    assert checks.history(real_db) == []
