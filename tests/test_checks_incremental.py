"""Incremental integrity checks: after a verified run the raw-reading checks re-read only the
epochs whose raw document or normalized rows changed, a fault planted in the normalized tables
after a verification is still caught, `--full` re-reads everything (also on worker processes),
and the integrity page offers both."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from streamlit.testing.v1 import AppTest

from shareprice import backfill, checks
from shareprice.cli import check_cmds

ROOT = Path(__file__).resolve().parent.parent
SHAREPRICE = [sys.executable, "-m", "shareprice.cli"]
RAW_CHECKS = [c.name for c in checks.CHECKS if c.reads_raw]


@pytest.fixture()
def small(normalized_small_copy: Engine) -> Engine:
    return normalized_small_copy


def _cli(*args: str) -> tuple[int, dict]:
    out = subprocess.run(
        [*SHAREPRICE, "check", "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ,
    )
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def _normalized(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(text("SELECT epoch FROM epoch_normalizations ORDER BY epoch")).scalars()
        )


def _verified_run(engine: Engine, **kwargs) -> checks.CheckRun:
    run = checks.run_checks(engine, full=True, **kwargs)
    assert checks.save_run(engine, run).saved
    return run


def _raw_results(data: dict) -> dict[str, dict]:
    return {c["name"]: c for c in data["checks"] if c["name"] in RAW_CHECKS}


def test_incremental_after_a_full_run_rereads_nothing(small):
    epochs = _normalized(small)
    assert len(epochs) == 80
    code, full = _cli("--full")
    assert code == 0, full
    assert full["scope"]["mode"] == "full"
    assert full["scope"]["raw_checked_epochs"] == len(epochs)
    assert full["verified_epochs"] == len(epochs)
    with small.connect() as conn:
        recorded = conn.execute(
            text("SELECT count(*), count(DISTINCT run_id) FROM epoch_verifications")
        ).one()
    assert tuple(recorded) == (80, 1)

    code, again = _cli()
    assert code == 0, again
    assert again["scope"]["mode"] == "incremental"
    assert again["scope"]["raw_checked_epochs"] == 0
    raw = _raw_results(again)
    assert set(raw) == set(RAW_CHECKS)
    assert all(r["status"] == "pass" for r in raw.values())
    assert "0 of 80 normalized epochs" in raw["prices_match_raw"]["note"]
    assert "0 prices compared" in raw["prices_match_raw"]["note"]
    # The SQL-only checks still cover everything: same results as the full run.
    sql_only = {c["name"]: (c["status"], c["count"]) for c in again["checks"]}
    assert sql_only == {c["name"]: (c["status"], c["count"]) for c in full["checks"]}


def test_incremental_rereads_exactly_the_new_and_rebackfilled_epochs(small):
    # Hold the last 3 raw epochs back (as if not indexed yet), verify the rest.
    new = [77, 78, 79]
    with small.begin() as conn:
        conn.execute(text("CREATE TABLE held AS SELECT epoch, data FROM epochs WHERE epoch >= 77"))
        for table in ("operator_share_prices", "operator_shares", "epoch_normalizations"):
            conn.execute(text(f"DELETE FROM {table} WHERE epoch >= 77"))  # noqa: S608
        conn.execute(text("DELETE FROM epochs WHERE epoch >= 77"))
    first = _verified_run(small)
    assert len(first.verified) == 77

    # The held epochs arrive and one old epoch's document is re-indexed (a new revision).
    rebackfilled = 12
    with small.begin() as conn:
        conn.execute(text("INSERT INTO epochs (epoch, data) SELECT epoch, data FROM held"))
        kind = conn.execute(
            text("SELECT jsonb_typeof(data) FROM epochs WHERE epoch = :e"), {"e": rebackfilled}
        ).scalar_one()
        path = "{0,reindexedBy}" if kind == "array" else "{reindexedBy}"
        conn.execute(
            text("UPDATE epochs SET data = jsonb_set(data, :p, '\"test\"') WHERE epoch = :e"),
            {"p": path, "e": rebackfilled},
        )
        # Positions of 13 are changes from 12's revision (sql/042): 13 is renormalized too.
        rebased = list(
            conn.execute(
                text(
                    "SELECT epoch FROM epoch_positions "
                    "WHERE epoch = :e + 1 AND base_revision IS NOT NULL"
                ),
                {"e": rebackfilled},
            ).scalars()
        )
    summary = backfill.run_backfill(small, backfill.Options(workers=1))
    assert summary.status == "succeeded", summary
    assert summary.epochs_done == 4 + len(rebased), summary

    run = checks.run_checks(small)
    assert run.scope.mode == "incremental"
    assert run.scope.epochs == sorted([rebackfilled, *rebased, *new])
    assert {r.name: r.status for r in run.results if r.name in RAW_CHECKS} == dict.fromkeys(
        RAW_CHECKS, "pass"
    )
    # Recomputed independently: the 4 epochs' priced operators are what prices_match_raw saw.
    with small.connect() as conn:
        priced = conn.execute(
            text("SELECT count(*) FROM operator_share_prices WHERE epoch = ANY(:e)"),
            {"e": run.scope.epochs},
        ).scalar_one()
    note = next(r.note for r in run.results if r.name == "prices_match_raw")
    assert f"{priced:,} prices compared" in note
    assert checks.save_run(small, run).saved
    assert checks.run_checks(small).scope.epochs == []


def test_a_fault_planted_after_verification_fails_the_next_incremental_run(small):
    _verified_run(small)
    with small.begin() as conn:
        planted = conn.execute(
            text(
                "SELECT operator_id, epoch FROM operator_share_prices WHERE epoch = 50 "
                "ORDER BY operator_id LIMIT 1"
            )
        ).one()
        conn.execute(
            text(
                "UPDATE operator_share_prices SET share_price_perq = share_price_perq + 1 "
                "WHERE operator_id = :o AND epoch = :e"
            ),
            {"o": planted.operator_id, "e": planted.epoch},
        )
    for _ in range(2):  # a failed epoch is not recorded as verified: the next run fails too
        code, data = _cli()
        assert code == 1
        assert data["scope"]["raw_checked_epochs"] == 1
        prices = _raw_results(data)["prices_match_raw"]
        assert prices["status"] == "fail" and prices["count"] == 1
        assert [(e["epoch"], e["operator_id"]) for e in prices["examples"]] == [
            (planted.epoch, planted.operator_id)
        ]
        assert data["verified_epochs"] == 0


def test_full_rereads_everything_and_workers_agree_with_one_connection(small):
    _verified_run(small)
    code, data = _cli("--full")
    assert code == 0 and data["scope"]["raw_checked_epochs"] == 80

    # A fault the raw checks see in two epochs, found the same on two worker processes.
    with small.begin() as conn:
        conn.execute(
            text(
                "UPDATE epoch_normalizations SET operator_count = operator_count + 1 "
                "WHERE epoch IN (5, 70)"
            )
        )
    serial = checks.run_checks(small, full=True, workers=1)
    parallel = checks.run_checks(small, full=True, workers=2, parallel_from=1)
    assert parallel.workers == 2 and serial.workers == 1
    assert [r.to_json() | {"seconds": 0} for r in serial.results] == [
        r.to_json() | {"seconds": 0} for r in parallel.results
    ]
    counts = next(r for r in parallel.results if r.name == "operator_counts")
    assert counts.status == "fail" and [e["epoch"] for e in counts.examples] == [5, 70]
    assert sorted(v.epoch for v in parallel.verified) == [e for e in range(80) if e not in (5, 70)]


def test_sample_and_full_exclude_each_other(small):
    out = subprocess.run(
        [*SHAREPRICE, "check", "--full", "--sample", "5"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "exclude each other" in out.stderr
    run = checks.run_checks(small, sample=5, seed=3)
    assert run.scope.mode == "sample" and run.scope.epochs == checks.sample_epochs(
        list(range(80)), 5, 3
    )
    assert sorted(v.epoch for v in run.verified) == run.scope.epochs


def test_only_some_raw_checks_verifies_nothing(small):
    run = checks.run_checks(small, only=["prices_match_raw"])
    assert run.verified == [] and "did not run" in run.verification_note


def test_progress_bar_after_a_second_only(monkeypatch):
    stream = io.StringIO()
    bar = check_cmds.CheckProgress(stream=stream)
    bar.on_progress(10, 100)
    assert stream.getvalue() == ""  # under BAR_AFTER_S: nothing drawn
    monkeypatch.setattr(check_cmds, "BAR_AFTER_S", 0.0)
    bar.last = 0.0
    bar.on_progress(50, 200)
    line = stream.getvalue()
    assert "50/200 raw epoch reads" in line and " 25.0%" in line


def test_integrity_page_offers_incremental_and_full(small):
    at = AppTest.from_file(str(ROOT / "pages" / "integrity.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    options = at.radio[0].options
    assert len(options) == 3 and options[0].startswith("Incremental")
    assert at.radio[0].value == options[0]
    assert any("0 epoch(s) have a recorded verification" in c.value for c in at.caption)

    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("80 epoch(s) recorded as verified" in s.value for s in at.success)
    assert any("Covered (incremental)" in i.value and "read 80 epoch" in i.value for i in at.info)

    at.button[0].click().run()  # nothing changed: nothing re-read
    assert any("Covered (incremental)" in i.value and "read 0 epoch" in i.value for i in at.info)

    at.radio[0].set_value(options[1])
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("Covered (full)" in i.value and "read 80 epoch" in i.value for i in at.info)
    history = at.dataframe[-1].value
    assert list(history["scope"]) == ["all", "incremental (0 re-read)", "incremental (80 re-read)"]


def test_a_fall_into_an_unchanged_neighbour_keeps_the_changed_epoch_unverified(small):
    """A price lifted (with its stake, so the formula holds) in epoch N falls into N+1: the
    per-epoch check judging only N finds the step N -> N+1 and names N at fault too, so N is
    not verified while N+1 (unchanged, verified) alone would never be judged again."""
    from shareprice.checks.definitions import _prices_never_decrease
    from shareprice.checks.registry import Scope

    with small.begin() as conn:
        row = conn.execute(
            text(
                "SELECT p.operator_id, p.epoch FROM operator_share_prices p "
                "JOIN operator_shares s USING (operator_id, epoch) "
                "JOIN operator_share_prices q ON q.operator_id = p.operator_id "
                "AND q.epoch = p.epoch + 1 "
                "WHERE p.epoch BETWEEN 40 AND 60 AND s.status = 'registered' "
                "ORDER BY p.epoch, p.operator_id LIMIT 1"
            )
        ).one()
        conn.execute(
            text(
                "UPDATE operator_shares SET stake_raw = stake_raw * 2 "
                "WHERE operator_id = :o AND epoch = :e"
            ),
            {"o": row.operator_id, "e": row.epoch},
        )
        conn.execute(
            text(
                "UPDATE operator_share_prices p SET share_price_perq = "
                "div(s.stake_raw * 1000000000000000000, s.shares_raw) FROM operator_shares s "
                "WHERE s.operator_id = p.operator_id AND s.epoch = p.epoch "
                "AND p.operator_id = :o AND p.epoch = :e"
            ),
            {"o": row.operator_id, "e": row.epoch},
        )
    scope = Scope(80, 80, None, None, 0, mode="incremental", epochs=[row.epoch])
    with small.connect() as conn:
        outcome = _prices_never_decrease(conn, scope)
    assert outcome.status == "fail"
    # The slashed operator's fall is listed too, as always (a warning).
    assert [(e["previous_epoch"], e["epoch"]) for e in outcome.examples if not e["slashed"]] == [
        (row.epoch, row.epoch + 1)
    ]
    assert outcome.bad_epochs == {row.epoch, row.epoch + 1}
