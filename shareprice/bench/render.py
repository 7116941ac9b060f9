"""Render benchmark: the explorer's first view vs a bare Streamlit page with one plotly chart.

    .venv/bin/python bench/explorer_render.py --url URL [--runs 5] [--json]

Starts two Streamlit servers (the dashboard against URL, and shareprice/bench/bare_plotly_page.py), then
in headless system Chromium, for each run, opens each page in a fresh browser context and
measures the time from navigation to "the app's run is finished and the chart's traces are in
the DOM". Also: bytes the first view receives over Streamlit's websocket (the app's data; the
static JS bundle is the same for every Streamlit app and cached), HTTP bytes, and the server
time of a rerun after a widget change (the page prints its own server time). Medians; both
pages are measured in the same run, interleaved, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from shareprice.bench.streamlit_server import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[2]  # the checkout: dashboard.py and pages/ live there


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(script: Path, env: dict[str, str]):
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="streamlit-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", str(script),
            "--server.port", str(port), "--server.headless", "true",
            "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
        ],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start; see {log.name}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health") as r:
                    if r.status == 200:
                        break
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def measure_view(browser, url: str, min_traces: int, done_text: str) -> dict:
    """Open url in a fresh context; time until the run finished and the chart is drawn."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    received = {"ws": 0, "http": 0}

    def on_ws(ws):
        ws.on(
            "framereceived",
            lambda payload: received.__setitem__("ws", received["ws"] + len(payload)),
        )

    def on_response(response):
        with contextlib.suppress(Exception):
            received["http"] += int(response.headers.get("content-length") or 0)

    page.on("websocket", on_ws)
    page.on("response", on_response)
    started = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded", timeout=120_000)
    page.wait_for_function(
        """([n, text]) => document.querySelectorAll('.js-plotly-plot .scatterlayer .trace, '
              + '.js-plotly-plot .gl-container canvas').length >= n
            && !document.querySelector('[data-testid="stStatusWidget"]')
            && [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
                 .some(e => e.innerText.includes(text))""",
        arg=[min_traces, done_text],
        timeout=180_000,
        polling=20,
    )
    elapsed = (time.perf_counter() - started) * 1000
    return {"ms": elapsed, "page": page, "context": context, **received}


def server_ms(page) -> float:
    text = page.locator('[data-testid="stCaptionContainer"]', has_text="Server time").inner_text()
    return float(text.split("Server time")[1].split("ms")[0].strip().replace(",", ""))


def rerun_after_preset(page, preset: str) -> dict:
    """Click a range preset; time until the new view is drawn; the page's own server time."""
    started = time.perf_counter()
    page.locator('[data-testid="stButtonGroup"]').get_by_role(
        "radio", name=preset, exact=True
    ).click()
    page.wait_for_function(
        "(p) => location.search.includes('range=' + p)"
        " && !document.querySelector('[data-testid=\"stStatusWidget\"]')",
        arg=preset,
        timeout=60_000,
    )
    page.wait_for_timeout(50)
    return {"ms": (time.perf_counter() - started) * 1000, "server_ms": server_ms(page)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="database URL (seed-scale, backfilled)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--screenshot", default=None, help="save the explorer's first view here")
    parser.add_argument("--page", default=str(ROOT / "dashboard.py"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    env = dict(os.environ, SHAREPRICE_DATABASE_URL=args.url)
    env.pop("SHAREPRICE_READONLY_URL", None)
    results: dict[str, list] = {
        k: []
        for k in (
            "explorer",
            "bare",
            "bare_gl",
            "ws",
            "http",
            "bare_ws",
            "bare_http",
            "rerun",
            "rerun_server",
        )  # fmt: skip
    }
    cold = None
    with (
        streamlit_server(Path(args.page), env) as dashboard,
        streamlit_server(Path(__file__).with_name("bare_plotly_page.py"), env) as bare,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            for run in range(args.runs + 1):  # the first explorer view is cold (empty cache)
                view = measure_view(browser, dashboard + "/", 8, "Server time")
                if run == 0:
                    cold = {"ms": view["ms"], "server_ms": server_ms(view["page"])}
                    if args.screenshot:
                        view["page"].screenshot(path=args.screenshot)
                else:
                    results["explorer"].append(view["ms"])
                    results["ws"].append(view["ws"])
                    results["http"].append(view["http"])
                    rerun = rerun_after_preset(view["page"], "200" if run % 2 else "1000")
                    results["rerun"].append(rerun["ms"])
                    results["rerun_server"].append(rerun["server_ms"])
                view["context"].close()
                for key, query in (("bare", ""), ("bare_gl", "?gl=1")):
                    view = measure_view(browser, bare + "/" + query, 1, "bare page drawn")
                    if run:
                        results[key].append(view["ms"])
                        if key == "bare":
                            results["bare_ws"].append(view["ws"])
                            results["bare_http"].append(view["http"])
                    view["context"].close()
        finally:
            browser.close()
    median = {k: statistics.median(v) for k, v in results.items()}
    report = {
        "runs": args.runs,
        "explorer_first_view_ms": round(median["explorer"], 1),
        "explorer_first_view_cold_cache_ms": round(cold["ms"], 1) if cold else None,
        "explorer_cold_server_ms": cold["server_ms"] if cold else None,
        "bare_plotly_4x3700_ms": round(median["bare"], 1),
        "bare_plotly_4x3700_scattergl_ms": round(median["bare_gl"], 1),
        "explorer_over_bare": round(median["explorer"] / median["bare"], 3),
        "first_view_websocket_bytes": int(median["ws"]),
        "first_view_http_bytes": int(median["http"]),
        "bare_page_websocket_bytes": int(median["bare_ws"]),
        "bare_page_http_bytes": int(median["bare_http"]),
        "rerun_preset_change_ms": round(median["rerun"], 1),
        "rerun_server_ms": median["rerun_server"],
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
