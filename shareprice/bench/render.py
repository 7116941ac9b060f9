"""Render benchmark: the explorer's first view against a bare Streamlit page with one plotly chart.

    shareprice bench render --url demo=URL --url seed=URL [--runs 5] [--json]
    shareprice bench render --page nominators --address SS58 --url real=URL [--runs 5] [--json]

One run measures every database given (demo data, seed scale) side by side with the bare page
(`bare_plotly_page.py`, 4 lines x 3,700 points: what the old dashboard drew), interleaved, so
machine noise hits all alike. In headless system Chromium, each view opens in a fresh browser
context and is timed from navigation to "the app's run finished and the chart's traces are in
the DOM". Also: bytes the first view receives over Streamlit's websocket (the app's data; the
static JS bundle is the same for every Streamlit app and cached), HTTP bytes, and the server
time of widget reruns (presets and mode switches; the page prints its own server time in its
last caption), as median and p95. The ratio explorer / bare is the number the issue sets a goal
for (1.5x). `--page nominators --address A` measures the Nominators page instead (issue 14: its
first view within 1.5x of the same yardstick), opened on one nominator (`?address=A`): the
position cards, the value chart and the operator's holders; no widget reruns there.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from shareprice.bench.load import SERVER_TIME
from shareprice.bench.streamlit_server import (
    CHROMIUM,
    CHROMIUM_ARGS,
    RunningServer,
    streamlit_server,
)

BARE_PAGE = Path(__file__).with_name("bare_plotly_page.py")
#: The widget reruns measured after each first view: range presets and mode switches.
RERUNS: tuple[tuple[str, str], ...] = (
    ("preset", "200"),
    ("mode", "Change per epoch (bps)"),
    ("preset", "1000"),
    ("mode", "Absolute"),
    ("preset", "All"),
)


#: What each measurable page needs drawn before its first view counts: (path and query, number of
#: plotly traces in the DOM, text of its last caption).
PAGES = ("explorer", "nominators")


def page_target(page: str, address: str | None) -> tuple[str, int, str]:
    """(path with query, traces, done text) of a page's first view."""
    if page == "explorer":
        return "/", 8, "Server time"
    if page == "nominators":
        if not address:
            raise ValueError("the nominators page needs an address (--address SS58 or 0x hex)")
        # the value chart (one line per operator) and the holders' count chart
        return "/nominators?" + urlencode({"address": address}), 2, "Server time"
    raise ValueError(f"page {page!r} is not one of {', '.join(PAGES)}")


@contextlib.contextmanager
def bare_server(log_path: Path) -> Iterator[RunningServer]:
    """The bare plotly page on a free port (no database)."""
    with streamlit_server(None, log_path, script=BARE_PAGE) as server:
        yield server


def measure_view(browser: Any, url: str, min_traces: int, done_text: str) -> dict:
    """Open url in a fresh context; time until the run finished and the chart is drawn."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    received: dict[str, Any] = {"ws": 0, "http": 0, "runs": 0, "server_caption": ""}

    def on_frame(payload: bytes | str) -> None:
        received["ws"] += len(payload)
        caption = server_caption(payload)
        if caption is not None:
            received["runs"] += 1
            received["server_caption"] = caption

    def on_ws(ws: Any) -> None:
        ws.on("framereceived", on_frame)

    def on_response(response: Any) -> None:
        with contextlib.suppress(Exception):
            received["http"] += int(response.headers.get("content-length") or 0)

    page.on("websocket", on_ws)
    page.on("response", on_response)
    started = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded", timeout=120_000)
    page.wait_for_function(
        """([n, text]) => document.querySelectorAll('.js-plotly-plot .scatterlayer .trace, '
              + '.js-plotly-plot .barlayer .trace, .js-plotly-plot .gl-container canvas')
              .length >= n
            && !document.querySelector('[data-testid="stStatusWidget"]')
            && [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
                 .some(e => e.innerText.includes(text))""",
        arg=[min_traces, done_text],
        timeout=180_000,
        polling=20,
    )
    elapsed = (time.perf_counter() - started) * 1000
    # the view's own counters (`received`), live: rerun() waits on its run count
    return {"ms": elapsed, "page": page, "context": context, "received": received, **received}


def server_caption(payload: bytes | str) -> str | None:
    """The "Server time ..." caption if this websocket frame carries it (one per full run of the
    page; the live fragment's runs do not send it), else None."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    if isinstance(payload, str) or b"Server time" not in payload:
        return None
    msg = ForwardMsg()
    msg.ParseFromString(payload)
    if msg.WhichOneof("type") != "delta" or msg.delta.WhichOneof("type") != "new_element":
        return None
    element = msg.delta.new_element
    if element.WhichOneof("type") != "markdown" or "Server time" not in element.markdown.body:
        return None
    return element.markdown.body


def server_ms(caption: str) -> int:
    """The N of the explorer's "Server time N ms" (the load benchmark's pattern)."""
    found = SERVER_TIME.search(caption)
    if found is None:
        raise ValueError(f"no server time in the caption {caption[:120]!r}")
    return int(found[1])


def rerun(view: dict, kind: str, label: str) -> dict:
    """Click a range preset or a mode; time until that run's caption has arrived and the page is
    idle; the page's own server time from that caption.

    Counts runs by their caption frames, not by the caption's text changing: two runs with the
    same server time (e.g. 31 ms twice) left the text as it was, and the wait never ended."""
    page, received = view["page"], view["received"]
    before = received["runs"]
    started = time.perf_counter()
    # presets and modes are both segmented controls (radio buttons); their labels are unique
    page.locator('[data-testid="stButtonGroup"]').get_by_role(
        "radio", name=label, exact=True
    ).click()
    deadline = started + 60
    while received["runs"] == before or page.locator('[data-testid="stStatusWidget"]').count():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no run finished within 60 s after clicking {kind} {label!r}")
        page.wait_for_timeout(10)  # lets Playwright deliver the websocket frames
    return {
        "ms": (time.perf_counter() - started) * 1000,
        "server_ms": server_ms(received["server_caption"]),
    }


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def run(
    databases: Mapping[str, str],
    runs: int = 5,
    screenshot_dir: Path | None = None,
    *,
    page: str = "explorer",
    address: str | None = None,
) -> dict[str, Any]:
    """Measure each database's explorer (label -> URL), or its Nominators page on `address`,
    against the bare page, interleaved."""
    from playwright.sync_api import sync_playwright

    path, min_traces, done_text = page_target(page, address)
    explorer = page == "explorer"
    load_at_start = os.getloadavg()  # 1, 5, 15 min: a ratio is only as good as the machine's quiet

    logs = Path(tempfile.mkdtemp(prefix="shareprice-render-"))
    bare: dict[str, list[float]] = {"ms": [], "ws": [], "http": []}
    per_db: dict[str, dict[str, Any]] = {
        label: {"ms": [], "ws": [], "http": [], "rerun_ms": [], "rerun_server_ms": [], "cold": None}
        for label in databases
    }
    with contextlib.ExitStack() as stack:
        servers = {
            label: stack.enter_context(streamlit_server(url, logs / f"{label}.log"))
            for label, url in databases.items()
        }
        bare_page = stack.enter_context(bare_server(logs / "bare.log"))
        p = stack.enter_context(sync_playwright())
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        stack.callback(browser.close)
        for index in range(runs + 1):  # each explorer's first view is cold (empty cache)
            for label, server in servers.items():
                view = measure_view(browser, server.url + path, min_traces, done_text)
                stats = per_db[label]
                if index == 0:
                    stats["cold"] = {
                        "ms": view["ms"],
                        "server_ms": server_ms(view["server_caption"]),
                    }
                    if screenshot_dir is not None:
                        view["page"].screenshot(
                            path=str(screenshot_dir / f"shareprice-render-{page}-{label}.png"),
                            full_page=not explorer,
                        )
                else:
                    stats["ms"].append(view["ms"])
                    stats["ws"].append(view["ws"])
                    stats["http"].append(view["http"])
                    for kind, name in RERUNS if explorer else ():
                        result = rerun(view, kind, name)
                        stats["rerun_ms"].append(result["ms"])
                        stats["rerun_server_ms"].append(result["server_ms"])
                view["context"].close()
            view = measure_view(browser, bare_page.url + "/", 1, "bare page drawn")
            if index:
                bare["ms"].append(view["ms"])
                bare["ws"].append(view["ws"])
                bare["http"].append(view["http"])
            view["context"].close()
    bare_ms = statistics.median(bare["ms"])
    report: dict[str, Any] = {
        "page": page,
        "runs": runs,
        "bare_plotly_4x3700_ms": round(bare_ms, 1),
        "bare_page_websocket_bytes": int(statistics.median(bare["ws"])),
        "bare_page_http_bytes": int(statistics.median(bare["http"])),
        "bare_runs_ms": [round(ms, 1) for ms in bare["ms"]],
        "load_average_start": [round(x, 2) for x in load_at_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    for label, stats in per_db.items():
        first = statistics.median(stats["ms"])
        if not explorer:
            report[label] = {
                f"{page}_first_view_ms": round(first, 1),
                f"{page}_over_bare": round(first / bare_ms, 3),
                f"{page}_first_view_runs_ms": [round(ms, 1) for ms in stats["ms"]],
                f"{page}_first_view_cold_cache_ms": round(stats["cold"]["ms"], 1),
                f"{page}_cold_server_ms": stats["cold"]["server_ms"],
                "first_view_websocket_bytes": int(statistics.median(stats["ws"])),
                "first_view_http_bytes": int(statistics.median(stats["http"])),
            }
            continue
        report[label] = {
            "explorer_first_view_ms": round(first, 1),
            "explorer_over_bare": round(first / bare_ms, 3),
            "explorer_first_view_runs_ms": [round(ms, 1) for ms in stats["ms"]],
            "explorer_first_view_cold_cache_ms": round(stats["cold"]["ms"], 1),
            "explorer_cold_server_ms": stats["cold"]["server_ms"],
            "first_view_websocket_bytes": int(statistics.median(stats["ws"])),
            "first_view_http_bytes": int(statistics.median(stats["http"])),
            "rerun_ms_median": round(statistics.median(stats["rerun_ms"]), 1),
            "rerun_server_ms_median": round(statistics.median(stats["rerun_server_ms"]), 1),
            "rerun_server_ms_p95": round(p95(stats["rerun_server_ms"]), 1),
            "reruns": len(stats["rerun_server_ms"]),
        }
    report["logs"] = str(logs)
    return report


def default_screenshot_dir() -> Path:
    return Path(os.environ.get("TMPDIR", tempfile.gettempdir()))
