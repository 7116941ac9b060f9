"""`shareprice bench load`'s protocol client against a real dashboard: it speaks Streamlit's
websocket protocol well enough that a preset click draws that preset's epochs, the other widgets
keep their values, and a level of sessions reports what was served."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from shareprice.bench import load
from shareprice.bench.streamlit_server import streamlit_server
from shareprice.cli import main

SMALL_EPOCHS = 80  # normalized_small_url: epochs 0..79


def _url(url) -> str:
    return url.render_as_string(hide_password=False)


async def _click_through(base_url: str) -> list[tuple[str, tuple[int, int] | None, str]]:
    from websockets.asyncio.client import connect

    seen = []
    ws_url = base_url.replace("http://", "ws://") + "/_stcore/stream"
    async with connect(ws_url, subprotocols=["streamlit"], max_size=None) as ws:
        session = load.ProtocolSession(ws, timeout_s=60)
        first = await session.rerun()
        assert first.preset is not None and first.server_ms is not None
        seen.append(("first", load.shown_window(first), " ".join(first.captions)))
        for label in ("50", "100", "All", "50"):
            run = await session.rerun([load.preset_state(first.preset, label)])
            seen.append((label, load.shown_window(run), " ".join(run.captions)))
    return seen


def test_a_preset_click_over_the_protocol_draws_that_preset(normalized_small_url, tmp_path: Path):
    with streamlit_server(_url(normalized_small_url), tmp_path / "streamlit.log") as server:
        seen = asyncio.run(_click_through(server.url))
    last = SMALL_EPOCHS - 1
    assert [(label, window) for label, window, _ in seen] == [
        ("first", (0, last)),
        ("50", (last - 49, last)),
        ("100", (0, last)),  # fewer epochs than the preset: all of them
        ("All", (0, last)),
        ("50", (last - 49, last)),
    ]
    # The operator selection survives every click (the client sends every widget's value).
    operators = {text.split(" operators ·")[0].rsplit(" ", 1)[-1] for _, _, text in seen}
    assert operators == {"8"}, operators


def test_a_level_of_sessions_is_served_and_measured(normalized_small_url):
    level = load.run_level(_url(normalized_small_url), 3, reruns=3, timeout_s=120)
    assert level["errors"] == 0, level["error_samples"]
    assert level["ok"] == 3 and level["reruns_measured"] == 9
    assert 0 < level["rerun_p50_ms"] <= level["rerun_p95_ms"]
    assert level["client_rerun_p95_ms"] >= level["rerun_p50_ms"]
    assert level["first_view_p95_ms"] > 0
    assert level["rss_peak_mb"] >= level["rss_idle_mb"] > 0


def test_sessions_option_rejects_a_bad_level():
    result = CliRunner().invoke(main, ["bench", "load", "--sessions", "10,x"])
    assert result.exit_code == 2
    assert "--sessions" in result.output and "'x' is not a positive whole number" in result.output
    browser = CliRunner().invoke(main, ["bench", "load", "--sessions", "50", "--browser"])
    assert browser.exit_code == 2 and "at most 20" in browser.output
