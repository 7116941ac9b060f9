"""The operations pages (progress, integrity, timings) render real data without exceptions."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text
from streamlit.testing.v1 import AppTest

from shareprice import checks

ROOT = Path(__file__).resolve().parent.parent


def _page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / name), default_timeout=120)


def _texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "success", "warning", "error", "metric"):
        for element in getattr(at, kind):
            parts.append(str(getattr(element, "value", "")))
            label = getattr(element, "label", None)
            if label:
                parts.append(str(label))
    return "\n".join(parts)


def test_progress_page_shows_percent_coverage_and_interrupted_run(engine):
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO epochs (epoch, data) VALUES (:e, CAST(:d AS jsonb))"),
            [{"e": e, "d": json.dumps({"epoch": e})} for e in range(8)],
        )
        run = conn.execute(
            text(
                "INSERT INTO backfill_runs (status, epochs_total, epochs_done, epochs_failed, "
                "heartbeat_at) VALUES ('running', 8, 6, 0, now() - interval '2 minutes') "
                "RETURNING run_id"
            )
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO epoch_normalizations (epoch, revision, operator_count, run_id) "
                "SELECT epoch, revision, 1, :r FROM epochs WHERE epoch NOT IN (3, 7)"
            ),
            {"r": run},
        )
    at = _page("progress.py").run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Raw epochs"] == "8"
    assert metrics["Normalized epochs"] == "6"
    assert metrics["Normalized"] == "75.0%"
    assert metrics["Latest normalized epoch"] == "6"
    assert "Not normalized: 3, 7" in _texts(at)
    assert any("Interrupted" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 1


def test_integrity_page_runs_checks_and_records_history(engine, shared_data):
    from test_checks import _load_real_samples, _normalize

    _load_real_samples(engine, shared_data)
    _normalize(engine)
    at = _page("integrity.py").run()
    assert not at.exception, at.exception
    assert any("No checks have run yet" in i.value for i in at.info)

    at.button[0].click().run()  # the form's "Run checks"
    assert not at.exception, at.exception
    assert any("Recorded as integrity run" in s.value for s in at.success)
    table = at.dataframe[0].value
    assert list(table["check"]) == checks.check_names()
    assert set(table["status"]) == {"✅ pass"}
    # History now has the run; a fresh session shows it as the latest recorded run.
    again = _page("integrity.py").run()
    assert not again.exception, again.exception
    assert any("Latest recorded run" in s.value for s in again.subheader)
