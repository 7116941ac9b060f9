"""The operations pages (progress, integrity, timings) on demo data, during a real backfill, and
on a read-only connection. (Their empty-database state is in test_pages_empty.py.)"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.database import TEMPLATE_DB, drop_database, new_database
from sqlalchemy import text
from sqlalchemy.engine import Engine
from streamlit.testing.v1 import AppTest

from shareprice import checks, timings
from shareprice.ingest import generator
from shareprice.store import roles

ROOT = Path(__file__).resolve().parent.parent


def _page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / name), default_timeout=120)


def _texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "success", "warning", "error", "subheader"):
        parts.extend(str(e.value) for e in getattr(at, kind))
    return "\n".join(parts)


@pytest.fixture()
def small(normalized_small_copy: Engine) -> Engine:
    return normalized_small_copy


# --- progress -----------------------------------------------------------------------------------


def test_progress_page_on_demo_data(small):
    at = _page("progress.py").run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Raw epochs"] == "80"
    assert metrics["Normalized epochs"] == "80"
    assert metrics["Normalized"] == "100.0%"
    assert metrics["Latest normalized epoch"] == "79"
    assert any("succeeded" in s.value for s in at.success)
    assert "Not normalized: none" in _texts(at)
    tables = at.dataframe[0].value
    assert dict(zip(tables["table"], tables["rows"], strict=True))["operator_share_prices"] == 718


def test_progress_page_shows_gaps_and_an_interrupted_run(small):
    with small.begin() as conn:
        conn.execute(text("DELETE FROM epoch_normalizations WHERE epoch IN (10, 11, 50)"))
        conn.execute(
            text(
                "INSERT INTO backfill_runs (status, epochs_total, epochs_done, heartbeat_at) "
                "VALUES ('running', 3, 1, now() - interval '2 minutes')"
            )
        )
    at = _page("progress.py").run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Normalized epochs"] == "77"
    assert "Not normalized: 10-11, 50" in _texts(at)
    assert any("Interrupted" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 1


def test_progress_page_moves_during_a_real_backfill(pg_admin_url, template_url, monkeypatch):
    """`shareprice backfill --batch-size 1` in a subprocess; the page, rerun as its fragment
    would every 2 s, shows a rising percentage and a running run."""
    url = new_database(pg_admin_url, TEMPLATE_DB)
    try:
        engine = sa.create_engine(url)
        generator.generate(engine, "small", seed=3, epochs=400, operators=8)
        engine.dispose()
        monkeypatch.setenv("SHAREPRICE_DATABASE_URL", url.render_as_string(hide_password=False))
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shareprice.cli",
                "backfill",
                "--batch-size",
                "1",
                "--workers",
                "1",
                "--quiet",
            ],
            env=os.environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        seen: list[float] = []
        statuses: set[str] = set()
        at = _page("progress.py")
        deadline = time.monotonic() + 120
        while worker.poll() is None and time.monotonic() < deadline:
            at.run()
            assert not at.exception, at.exception
            metrics = {m.label: m.value for m in at.metric}
            seen.append(float(metrics["Normalized"].rstrip("%")))
            statuses.update(
                i.value.split(":")[1].split(";")[0].strip()
                for i in at.info
                if i.value.startswith("run ")
            )
            time.sleep(0.2)
        assert worker.wait(timeout=60) == 0, worker.stderr.read() if worker.stderr else ""
        at.run()
        final = float({m.label: m.value for m in at.metric}["Normalized"].rstrip("%"))
        assert final == 100.0
        moving = [p for p in seen if 0 < p < 100]
        assert len(set(moving)) >= 2, seen  # it moved while we watched
        assert seen == sorted(seen), seen  # and never went backwards
        assert "running" in statuses
    finally:
        drop_database(pg_admin_url, url)


# --- integrity ----------------------------------------------------------------------------------


def test_integrity_page_runs_checks_and_records_history(small):
    at = _page("integrity.py").run()
    assert not at.exception, at.exception
    assert any("No checks have run yet" in i.value for i in at.info)

    at.button[0].click().run()  # the form's "Run checks"
    assert not at.exception, at.exception
    assert any("Recorded as integrity run" in s.value for s in at.success)
    table = at.dataframe[0].value
    assert list(table["check"]) == checks.check_names()
    statuses = dict(zip(table["check"], table["status"], strict=True))
    assert statuses.pop("prices_never_decrease") == "⚠️ warn"  # the slashed operator
    assert set(statuses.values()) == {"✅ pass"}

    # A fresh session shows the latest recorded run and the history.
    again = _page("integrity.py").run()
    assert not again.exception, again.exception
    assert any("Latest recorded run" in s.value for s in again.subheader)
    history = again.dataframe[-1].value
    assert list(history["status"]) == ["warn"]


def test_integrity_page_shows_a_failure_with_examples(small):
    with small.begin() as conn:
        conn.execute(
            text("UPDATE operators_metadata SET last_seen_epoch = 79 WHERE operator_id = 9")
        )
    at = _page("integrity.py").run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    statuses = dict(
        zip(at.dataframe[0].value["check"], at.dataframe[0].value["status"], strict=True)
    )
    assert statuses["metadata_seen_range"] == "❌ fail"
    examples = [d.value for d in at.dataframe if "metadata_last" in d.value.columns]
    assert examples and list(examples[0]["operator_id"]) == [9]


@pytest.fixture()
def reader_url(small, monkeypatch) -> str:
    """The dashboard on the SELECT-only role `shareprice db roles` creates (issue 7's set-up)."""
    password = "reader-" + secrets.token_urlsafe(12)
    roles.ensure_roles(small, reader_password=password)
    url = small.url.set(username=roles.READER, password=password)
    monkeypatch.setenv("SHAREPRICE_READONLY_URL", url.render_as_string(hide_password=False))
    return url


def test_integrity_page_on_a_read_only_connection_says_it_did_not_save(small, reader_url):
    at = _page("integrity.py").run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("not saved" in i.value and "read-only" in i.value for i in at.info)
    assert checks.history(small) == []


# --- timings ------------------------------------------------------------------------------------


def _wait_for_job(at: AppTest, limit_s: float = 240) -> AppTest:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(1)
        at.run()
        assert not at.exception, at.exception
        if any(s.value.startswith("This run") for s in at.subheader):
            return at
    raise AssertionError("the timing job did not finish: " + _texts(at))


def _set_number(at: AppTest, label: str, value) -> None:
    next(n for n in at.number_input if n.label == label).set_value(value)


def test_timings_page_runs_v1_v2_floor_and_they_agree(small):
    at = _page("timings.py").run()
    assert not at.exception, at.exception
    assert any("No timing runs yet" in i.value for i in at.info)
    at.multiselect[0].set_value(["one_operator", "last_100_epochs", "custom"])
    at.text_input[0].set_value("1, 2")
    _set_number(at, "Or the last N epochs", 30)
    _set_number(at, "Runs (v2, floor)", 2)
    at.button[0].click().run()
    assert not at.exception, at.exception
    _wait_for_job(at)

    equal = [s.value for s in at.success if "equal results" in s.value]
    assert len(equal) == 3, _texts(at)  # the equality check, for every shape
    assert not [e.value for e in at.error if "DIFFERENT" in e.value]
    table = at.dataframe[0].value
    assert set(table["path"]) == {"v1", "v2", "floor"}
    assert set(table["cache"]) == {"cold", "warm"}
    assert set(table["shape"]) == {"one_operator", "last_100_epochs", "custom"}
    custom = table[(table["shape"] == "custom") & (table["path"] == "v2")]
    assert set(custom["rows"]) == {60}  # 2 operators x the last 30 epochs
    assert all(table[table["path"] == "v1"]["equal"])
    assert (table["median ms"] > 0).all()
    assert len(at.expander) == 6  # EXPLAIN of v1 and v2 per shape
    assert any("Recorded as timing run" in c.value for c in at.caption)

    recorded = timings.load_run(small)
    assert recorded is not None and recorded["run"]["status"] == "completed"
    assert {s.name for s in recorded["shapes"]} == {"one_operator", "last_100_epochs", "custom"}
    assert all(s.equal for s in recorded["shapes"])
    assert (
        "Buffers" in recorded["shapes"][0].plans["v2"]
        or "Execution Time" in recorded["shapes"][0].plans["v2"]
    )
    # A fresh session shows the recorded run and its history.
    again = _page("timings.py").run()
    assert not again.exception, again.exception
    assert any("Latest recorded run" in s.value for s in again.subheader)


def test_timings_page_can_be_stopped(small):
    at = _page("timings.py").run()
    at.multiselect[0].set_value(list(timings.SHAPE_NAMES))
    _set_number(at, "Runs (v2, floor)", 50)
    _set_number(at, "Runs of v1 (0 = skip)", 20)
    at.button[0].click().run()
    job = at.session_state["timings_job"]
    deadline = time.monotonic() + 60
    # Stop once it is measuring (a run row exists and the first timed run is in).
    while time.monotonic() < deadline and not timings.job_progress(job.events())["steps"]:
        time.sleep(0.3)
    at.run()
    stop = next(b for b in at.button if b.label == "Stop")
    stop.click().run()
    assert not at.exception, at.exception
    assert not job.running
    at.run()
    assert any(s.value.startswith("This run (stopped)") for s in at.subheader), _texts(at)
    with small.connect() as conn:
        status = conn.execute(text("SELECT status FROM timing_runs")).scalar_one()
    assert status == "stopped"
    job.cleanup()


def test_timings_on_a_read_only_connection_say_they_did_not_save(small, reader_url):
    at = _page("timings.py").run()
    at.multiselect[0].set_value(["one_operator"])
    _set_number(at, "Runs (v2, floor)", 1)
    at.toggle[0].set_value(False)  # warm only: quicker
    at.button[0].click().run()
    _wait_for_job(at)
    assert any("not saved" in i.value and "read-only" in i.value for i in at.info), _texts(at)
    assert any("equal results" in s.value for s in at.success), _texts(at)
    with small.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM timing_runs")).scalar_one() == 0


def test_timings_cli_json(small):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "shareprice.cli",
            "timings",
            "--shape",
            "one_operator",
            "--runs",
            "1",
            "--no-cold",
            "--no-explain",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "completed" and data["run_id"] is not None
    (shape,) = data["shapes"]
    assert shape["equal"] is True and shape["v1_over_v2_warm"] > 0
    assert {t["variant"] for t in shape["timings"]} == {"v1", "v2", "floor"}


def test_timings_job_arguments_parse_back_into_the_custom_request():
    """The page's half of the job protocol writes the flags the child's half reads."""
    from shareprice import queries
    from shareprice.cli.timings_cmds import timings_cmd

    args = timings.job_arguments(
        names=["one_operator", timings.CUSTOM_SHAPE],
        operators=" 7, 3 ,, 5",
        epoch_from=10,
        epoch_to=20,
        runs=2,
        statement_timeout_s=9,
        cold=False,
    )
    params = timings_cmd.make_context("timings", args).params
    assert params["shape_names"] == ("one_operator",)
    assert params["runs"] == 2 and params["no_cold"] is True and params["statement_timeout"] == 9
    request = timings.custom_request(
        params["operators"], params["epoch_from"], params["epoch_to"], params["last_epochs"]
    )
    assert request == queries.SeriesRequest(operators=(3, 5, 7), epoch_from=10, epoch_to=20)
    # No custom fields: "everything", still a custom shape of its own.
    bare = timings_cmd.make_context("timings", timings.job_arguments(names=["custom"])).params
    assert timings.custom_request(
        bare["operators"], bare["epoch_from"], bare["epoch_to"], bare["last_epochs"]
    ) == queries.SeriesRequest(epoch_from=0)
    assert timings.custom_request(None, None, None, None) is None
    with pytest.raises(ValueError, match="epoch_from 9 is after epoch_to 3"):
        timings.custom_request(None, 9, 3, None)


def test_timings_statement_timeout_reaches_pgoptions(monkeypatch):
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=8MB")
    timings.set_statement_timeout(1.5)
    assert os.environ["PGOPTIONS"] == "-c work_mem=8MB -c statement_timeout=1500"


def test_timings_prefill_and_progress_text():
    assert timings.custom_prefill([4, 1], (100, 250)) == ("4, 1", 100, 250)
    assert timings.custom_prefill(None, None) == ("", None, None)
    state = {
        "current": {"event": "step", "shape": "one_operator", "variant": "v1", "cache": "cold"}
        | {"run": 2, "of": 3},
        "steps": 5,
        "total_steps": 12,
    }
    assert timings.progress_text(state, 41.6, 900) == (
        "one_operator v1 cold run 2/3 - 5/12 timed runs, 42 s of at most 900 s"
    )


def test_timing_figures_from_results_and_history():
    from shareprice.display import timing_charts

    shape = timings.DetailedShape(
        "one_operator",
        "",
        {},
        [
            timings.PathTiming("one_operator", "v1", "warm", [40.0, 50.0, 45.0]),
            timings.PathTiming("one_operator", "v2", "warm", [2.0, 4.0, 3.0]),
            timings.PathTiming("one_operator", "floor", "cold", []),  # no runs: no bar
        ],
        True,
        {},
    )
    fig = timing_charts.timings_figure([shape])
    assert [t.name for t in fig.data] == ["v1 warm", "v2 warm"]
    assert list(fig.data[1].y) == [3.0]
    assert list(fig.data[1].error_y.array) == [1.0] and list(fig.data[1].error_y.arrayminus) == [
        1.0
    ]
    assert fig.layout.yaxis.type == "log"
    rows = [
        {"run_id": 2, "shape": "s", "variant": "v2", "cache": "warm", "median_ms": 3.0},
        {"run_id": 1, "shape": "s", "variant": "v2", "cache": "warm", "median_ms": 2.0},
        {"run_id": 1, "shape": "s", "variant": "v2", "cache": "cold", "median_ms": 9.0},
        {"run_id": 1, "shape": "s", "variant": "floor", "cache": "warm", "median_ms": 1.0},
    ]
    (trace,) = timing_charts.history_figure(rows).data
    assert trace.name == "s v2" and list(trace.x) == [1, 2] and list(trace.y) == [2.0, 3.0]
