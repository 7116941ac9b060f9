"""The progress summary: exact where it says exact, islands of coverage, stale heartbeats."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import text

from shareprice.backfill import status


def _raw_epochs(engine, epochs) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO epochs (epoch, data) VALUES (:e, CAST(:d AS jsonb))"),
            [{"e": e, "d": json.dumps({"epoch": e})} for e in epochs],
        )


def _normalized(engine, epochs, run_id=None, stale=()) -> None:
    """Mark epochs normalized at their current revision (or an older one for `stale`)."""
    with engine.begin() as conn:
        for e in epochs:
            conn.execute(
                text(
                    "INSERT INTO epoch_normalizations (epoch, revision, operator_count, run_id) "
                    "SELECT epoch, revision - CASE WHEN :stale THEN 1 ELSE 0 END, 2, :run "
                    "FROM epochs WHERE epoch = :e"
                ),
                {"e": e, "run": run_id, "stale": e in stale},
            )


def _run(engine, **values) -> int:
    columns = ", ".join(values)
    params = ", ".join(f":{k}" for k in values)
    with engine.begin() as conn:
        return conn.execute(
            text(f"INSERT INTO backfill_runs ({columns}) VALUES ({params}) RETURNING run_id"),  # noqa: S608
            values,
        ).scalar_one()


def test_empty_database(engine):
    summary = status.summarize(engine)
    assert summary.raw_epochs == 0
    assert summary.normalized_epochs == 0
    assert summary.percent == 0.0
    assert summary.coverage == []
    assert summary.current_run is None
    assert {t.table for t in summary.tables} == set(status.NORMALIZED_TABLES)
    assert all(t.rows == 0 and not t.estimated for t in summary.tables)
    assert "raw epochs:         0" in status.format_text(summary)


def test_coverage_islands_show_every_gap(engine):
    _raw_epochs(engine, range(100, 112))
    run = _run(engine, status="failed", epochs_total=12, epochs_done=9, epochs_failed=1)
    _normalized(engine, [100, 101, 102, 103, 106, 107, 108, 109, 110], run_id=run, stale=[108])
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO backfill_errors (run_id, epoch, reason) VALUES (:r, 105, :m)"),
            {"r": run, "m": "epoch 105: operators entry 3: currentTotalShares is not hex"},
        )
    summary = status.summarize(engine)
    states = [(r.first_epoch, r.last_epoch, r.state) for r in summary.coverage]
    assert states == [
        (100, 103, "normalized"),
        (104, 104, "pending"),
        (105, 105, "failed"),
        (106, 107, "normalized"),
        (108, 108, "stale"),
        (109, 110, "normalized"),
        (111, 111, "pending"),
    ]
    assert summary.raw_epochs == 12
    assert summary.normalized_epochs == 8
    assert summary.stale_epochs == 1
    assert summary.failed_epochs == 1
    assert summary.pending_epochs == 2
    assert summary.latest_normalized_epoch == 110
    assert round(summary.percent, 2) == round(800 / 12, 2)
    assert [(f.epoch, f.run_id) for f in summary.failures] == [(105, run)]
    assert "currentTotalShares is not hex" in summary.failures[0].reason
    text_out = status.format_text(summary)
    assert "not normalized:     104-105, 108, 111" in text_out
    merged = [(r.first_epoch, r.last_epoch, r.state) for r in summary.missing_ranges]
    assert merged == [(104, 105, "pending+failed"), (108, 108, "stale"), (111, 111, "pending")]
    assert "epoch 105" in text_out


def test_failure_fixed_by_a_later_run_is_no_longer_listed(engine):
    _raw_epochs(engine, [1, 2])
    first = _run(engine, status="failed", epochs_total=2, epochs_done=1, epochs_failed=1)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO backfill_errors (run_id, epoch, reason) VALUES (:r, 2, 'bad')"),
            {"r": first},
        )
    assert [f.epoch for f in status.summarize(engine).failures] == [2]
    second = _run(engine, status="succeeded", epochs_total=1, epochs_done=1)
    _normalized(engine, [1, 2], run_id=second)
    summary = status.summarize(engine)
    assert summary.failures == []
    assert [r.state for r in summary.coverage] == ["normalized"]
    assert summary.percent == 100.0


def test_running_run_rate_eta_and_stale_heartbeat(engine):
    _raw_epochs(engine, range(10))
    fresh = _run(
        engine,
        status="running",
        epochs_total=1000,
        epochs_done=250,
        epochs_failed=0,
        rows_written=json.dumps({"operator_share_prices": 5000, "operator_shares": 5000}),
    )
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE backfill_runs SET started_at = clock_timestamp() - interval '50 seconds', "
                "heartbeat_at = clock_timestamp() WHERE run_id = :r"
            ),
            {"r": fresh},
        )
    run = status.summarize(engine).current_run
    assert run.run_id == fresh and run.effective_status == "running"
    assert 4.5 < run.epochs_per_s < 5.5  # 250 epochs in ~50 s
    assert 180 < run.rows_per_s < 220  # 10,000 rows in ~50 s
    assert 135 < run.eta_s < 165  # 750 epochs left at ~5/s
    assert run.percent == 25.0
    assert run.heartbeat_age_s < 5

    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE backfill_runs SET heartbeat_at = clock_timestamp() - interval '45 seconds' "
                "WHERE run_id = :r"
            ),
            {"r": fresh},
        )
    run = status.summarize(engine).current_run
    assert run.status == "running"
    assert run.effective_status == "interrupted"
    assert run.eta_s is None
    assert "interrupted (recorded 'running', no heartbeat for 45" in status.run_line(run)


def test_big_tables_are_estimated_and_say_so(engine):
    _raw_epochs(engine, [1])
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO operator_share_prices (operator_id, epoch, share_price_perq, source) "
                "SELECT o, 1, 1000000000000000000, 'storage_dump' FROM generate_series(0, 499) o"
            )
        )
        # Publish this backend's statistics now instead of within the next second.
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
    exact = {t.table: t for t in status.summarize(engine).tables}
    assert exact["operator_share_prices"].rows == 500
    assert not exact["operator_share_prices"].estimated
    # Force the estimate path (as for a 3.5 M-row table): the statistics know about the insert.
    summary = status.summarize(engine, exact_max_pages=0)
    estimated = {t.table: t for t in summary.tables}
    assert estimated["operator_share_prices"].estimated
    assert estimated["operator_share_prices"].rows == 500  # n_live_tup counts the insert
    assert any("estimate" in note for note in summary.notes)
    assert "estimate" in status.format_text(summary)


def test_cli_progress_json(db_url, engine):
    _raw_epochs(engine, range(4))
    run = _run(engine, status="succeeded", epochs_total=4, epochs_done=3)
    _normalized(engine, [0, 1, 3], run_id=run)
    out = subprocess.run(
        [sys.executable, "-m", "shareprice.cli", "progress", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["raw_epochs"] == 4 and data["normalized_epochs"] == 3
    assert data["percent"] == 75.0
    assert [r["state"] for r in data["coverage"]] == ["normalized", "pending", "normalized"]
    assert data["current_run"]["run_id"] == run
    assert data["current_run"]["effective_status"] == "succeeded"

    out = subprocess.run(
        [sys.executable, "-m", "shareprice.cli", "progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "normalized epochs:  3 (75.0%), 1 pending" in out.stdout
    assert "not normalized:     2" in out.stdout
