"""`shareprice bench load`: many simultaneous browser sessions on the explorer.

Each session is a real Chromium tab (one browser, one context per session, so no shared
cookies or websocket), which opens the explorer, waits for the chart, then clicks through the
range presets. The explorer prints its own server time per run ("Server time N ms"), which is
what the p50/p95 rerun figures are made of; the client-observed latency (click to new caption)
is reported beside it. Server memory is the streamlit process's RSS sampled during the run.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from shareprice.bench.streamlit_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server

SERVER_TIME = re.compile(r"Server time (\d+) ms")
PRESETS = ["50", "100", "200", "1000", "All"]


@dataclass
class SessionResult:
    first_view_s: float
    first_server_ms: int
    rerun_server_ms: list[int] = field(default_factory=list)
    rerun_client_ms: list[float] = field(default_factory=list)
    error: str | None = None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _captions(page) -> str:
    return " | ".join(await page.locator('[data-testid="stCaptionContainer"]').all_inner_texts())


async def _wait_idle_captions(page, previous: str | None, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = await _captions(page)
        # Streamlit keeps the previous run's elements on screen, marked stale, until the new
        # run replaces them: a caption read while any element is stale may be the old one.
        stale = await page.locator('[data-stale="true"]').count()
        if SERVER_TIME.search(text) and text != previous and not stale:
            return text
        await asyncio.sleep(0.05)
    raise TimeoutError("the explorer did not finish a run in time")


async def _session(browser, url: str, reruns: int, timeout_s: float) -> SessionResult:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    started = time.perf_counter()
    try:
        await page.goto(url, wait_until="domcontentloaded")
        await page.locator(".js-plotly-plot").first.wait_for(timeout=timeout_s * 1000)
        text = await _wait_idle_captions(page, None, timeout_s)
        result = SessionResult(time.perf_counter() - started, int(SERVER_TIME.search(text)[1]))
        for i in range(reruns):
            label = PRESETS[i % len(PRESETS)]
            clicked = time.perf_counter()
            await (
                page.locator('[data-testid="stButtonGroup"]')
                .get_by_role("radio", name=label, exact=True)
                .click()
            )
            text = await _wait_idle_captions(page, text, timeout_s)
            result.rerun_client_ms.append(1000 * (time.perf_counter() - clicked))
            result.rerun_server_ms.append(int(SERVER_TIME.search(text)[1]))
        return result
    except Exception as exc:  # a failed session is reported, not fatal for the others
        return SessionResult(
            time.perf_counter() - started, -1, error=f"{type(exc).__name__}: {exc}"
        )
    finally:
        await context.close()


async def _run_sessions(url: str, sessions: int, reruns: int, timeout_s: float):
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        # launch() always starts Chromium with a fresh temporary profile (its user data dir).
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            return await asyncio.gather(
                *(_session(browser, url, reruns, timeout_s) for _ in range(sessions))
            )
        finally:
            await browser.close()


def _rss_mb(pid: int) -> float:
    try:
        process = psutil.Process(pid)
        return (
            sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20
        )
    except psutil.NoSuchProcess:
        return 0.0


def run_load(
    database_url: str | None, sessions: int = 10, reruns: int = 5, timeout_s: float = 120.0
) -> dict:
    """Start a dashboard, drive `sessions` tabs at once, return the figures as a dict."""
    log_path = Path(tempfile.mkdtemp(prefix="shareprice-load-")) / "streamlit.log"
    with streamlit_server(database_url, log_path) as server:
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(_rss_mb(server.process.pid))
                stop.wait(0.25)

        idle_rss = _rss_mb(server.process.pid)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        results = asyncio.run(_run_sessions(server.url, sessions, reruns, timeout_s))
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
        after_rss = _rss_mb(server.process.pid)

    ok = [r for r in results if r.error is None]
    server_ms = [ms for r in ok for ms in r.rerun_server_ms]
    client_ms = [ms for r in ok for ms in r.rerun_client_ms]
    first_views = [r.first_view_s for r in ok]
    return {
        "sessions": sessions,
        "sessions_ok": len(ok),
        "errors": [r.error for r in results if r.error],
        "reruns_per_session": reruns,
        "first_view_s_p50": _round(statistics.median(first_views) if first_views else None),
        "first_view_s_max": _round(max(first_views) if first_views else None),
        "first_server_ms_p50": _round(_percentile([r.first_server_ms for r in ok], 0.5)),
        "rerun_server_ms_p50": _round(_percentile(server_ms, 0.5)),
        "rerun_server_ms_p95": _round(_percentile(server_ms, 0.95)),
        "rerun_client_ms_p50": _round(_percentile(client_ms, 0.5)),
        "rerun_client_ms_p95": _round(_percentile(client_ms, 0.95)),
        "server_rss_mb_idle": _round(idle_rss),
        "server_rss_mb_peak": _round(max(samples, default=after_rss)),
        "server_rss_mb_after": _round(after_rss),
        "wall_s": _round(wall),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
