"""`shareprice bench load`: many simultaneous sessions on the explorer, without browsers.

Ten Chromium tabs on two cores measure the browsers as much as the dashboard, and 50 or 100 tabs
do not fit at all. A Streamlit session is a websocket speaking protobuf messages Streamlit ships
itself (`streamlit.proto`), so each session here is that websocket and nothing else:

1. connect to `/_stcore/stream` (subprotocol "streamlit", as the frontend does);
2. send a `rerun_script` BackMsg (an empty `ClientState`: the first view of the default page);
3. read ForwardMsgs until `script_finished`: the deltas carry every element the page drew,
   among them the range presets' button group (its widget id and option labels) and the
   explorer's own caption "Server time N ms";
4. "click" a preset: a `rerun_script` whose `ClientState.widget_states` carries every widget's
   value, as the frontend's widget manager holds them (the server's value when a delta sets
   one, else the one held, else the default), with the preset's new value (a string array of
   the option's label, as the frontend serializes a segmented control); then wait for
   `script_finished` again. A widget left out of the state loses its session state, and the
   page would fall back to the link's state.

While a session "thinks" between clicks (`--think`), the explorer's live fragment reruns on
the timer its `auto_rerun` message sets, as a browser's would (`live_polls` in the output).

Per rerun the server time is the page's own caption (script start to its last element);
the client latency (send to `script_finished`) is reported beside it. An exception element, an
error alert or a run that does not finish in time makes the session an error. Server memory is
the dashboard process's RSS, sampled every 0.25 s; each level gets a fresh dashboard, so its peak
is that level's own.

`--browser` keeps the previous mode: real Chromium tabs (Playwright), for a few sessions, to
check that what the protocol client measures is what a browser sees.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from shareprice.bench.streamlit_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server
from shareprice.errors import ShareError

SERVER_TIME = re.compile(r"Server time (\d+) ms")
PRESETS = ["50", "100", "200", "1000", "All"]
#: The explorer's range presets: the segmented control keyed "ex_preset".
PRESET_KEY = "ex_preset"
PRESET_LABEL = "Range (epochs)"
#: Element types whose value the client keeps and sends back (the explorer's widgets; buttons
#: and download buttons are triggers, true only in the run they fire).
WIDGETS_WITH_STATE = ("button_group", "multiselect", "slider", "checkbox")


@dataclass
class SessionResult:
    first_view_s: float
    first_server_ms: int
    rerun_server_ms: list[int] = field(default_factory=list)
    rerun_client_ms: list[float] = field(default_factory=list)
    live_poll_ms: list[float] = field(default_factory=list)
    error: str | None = None


def _server_ms(caption: str) -> int:
    """The explorer's own 'Server time N ms' from its caption (a RunFailed if it is missing)."""
    found = SERVER_TIME.search(caption)
    if found is None:
        raise RunFailed(f"no server time in the page's caption: {caption[:120]!r}")
    return int(found[1])


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# --- the protocol client ---------------------------------------------------------------------


class RunFailed(ShareError):
    """The page showed an exception or an error, or the run did not finish."""


@dataclass
class PresetWidget:
    widget_id: str
    labels: list[str]


@dataclass
class RunSeen:
    """What one script run sent: the caption's server time and the preset widget."""

    server_ms: int | None = None
    preset: PresetWidget | None = None
    captions: list[str] = field(default_factory=list)


class ProtocolSession:
    """One Streamlit session over its websocket, as the frontend would drive it."""

    def __init__(self, ws, timeout_s: float) -> None:
        self.ws = ws
        self.timeout_s = timeout_s
        self.page_script_hash = ""
        self.query_string = ""
        #: What the frontend's widget manager holds: every widget's current value, by id. The
        #: frontend sends all of them with each rerun; a widget left out loses its session state.
        self.widgets: dict[str, Any] = {}
        #: (interval s, fragment id) of a `run_every` fragment (the explorer's live status),
        #: which the frontend reruns on a timer; None when the page has none.
        self.auto_rerun: tuple[float, str] | None = None

    async def rerun(self, changes: list | None = None) -> RunSeen:
        """Send a rerun with every known widget's value, `changes` applied; read the run."""
        for change in changes or []:
            self.widgets[change.id] = change
        await self._send_rerun()
        return await self._read_run()

    async def poll_live(self) -> None:
        """The frontend's auto-rerun timer firing once: rerun the live fragment only."""
        assert self.auto_rerun is not None
        await self._send_rerun(fragment_id=self.auto_rerun[1])
        await self._read_run(fragment=True)

    async def _send_rerun(self, fragment_id: str = "") -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ClientState_pb2 import ClientState
        from streamlit.proto.WidgetStates_pb2 import WidgetStates

        state = ClientState(
            query_string=self.query_string,
            page_script_hash=self.page_script_hash,
            widget_states=WidgetStates(widgets=list(self.widgets.values())),
            fragment_id=fragment_id,
            is_auto_rerun=bool(fragment_id),
        )
        await self.ws.send(BackMsg(rerun_script=state).SerializeToString())

    def _remember(self, which: str, element, drawn: dict[str, Any]) -> None:
        """Keep a widget's value as the frontend does: the server's when it sets one, else the
        value already held, else the widget's default."""
        from streamlit.proto.Common_pb2 import DoubleArray, StringArray
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        widget = getattr(element, which)
        held = self.widgets.get(widget.id)
        if which in ("button_group", "multiselect"):
            if widget.set_value:
                values = list(widget.raw_values)
            elif held is not None:
                values = list(held.string_array_value.data)
            elif which == "button_group":
                values = [widget.options[i].content for i in widget.default]
            else:
                values = [widget.options[i] for i in widget.default]
            state = WidgetState(id=widget.id, string_array_value=StringArray(data=values))
        elif which == "slider":
            if widget.set_value or held is None:
                numbers = list(widget.value) if widget.set_value else list(widget.default)
            else:
                numbers = list(held.double_array_value.data)
            state = WidgetState(id=widget.id, double_array_value=DoubleArray(data=numbers))
        elif which == "checkbox":
            if widget.set_value or held is None:
                flag = widget.value if widget.set_value else widget.default
            else:
                flag = held.bool_value
            state = WidgetState(id=widget.id, bool_value=flag)
        else:
            return
        drawn[widget.id] = state

    async def _read_run(self, *, fragment: bool = False) -> RunSeen:
        from streamlit.proto.Alert_pb2 import Alert
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        seen = RunSeen()
        drawn: dict[str, Any] = {}
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunFailed(f"no script_finished within {self.timeout_s:.0f}s")
            try:
                data = await asyncio.wait_for(self.ws.recv(), remaining)
            except TimeoutError:
                raise RunFailed(f"no script_finished within {self.timeout_s:.0f}s") from None
            msg = ForwardMsg()
            msg.ParseFromString(data)
            kind = msg.WhichOneof("type")
            if kind == "new_session":
                self.page_script_hash = msg.new_session.page_script_hash
            elif kind == "page_info_changed":
                self.query_string = msg.page_info_changed.query_string
            elif kind == "auto_rerun":
                self.auto_rerun = (msg.auto_rerun.interval, msg.auto_rerun.fragment_id)
            elif kind == "stop_auto_rerun":
                self.auto_rerun = None
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                element = msg.delta.new_element
                which = element.WhichOneof("type")
                if which == "exception":
                    raise RunFailed(f"exception on the page: {element.exception.message[:200]}")
                if which == "alert" and element.alert.format == Alert.Format.ERROR:
                    raise RunFailed(f"error on the page: {element.alert.body[:200]}")
                if which == "markdown":
                    seen.captions.append(element.markdown.body)
                    match = SERVER_TIME.search(element.markdown.body)
                    if match:
                        seen.server_ms = int(match[1])
                elif which == "button_group":
                    group = element.button_group
                    if group.id.endswith(f"-{PRESET_KEY}") or group.label == PRESET_LABEL:
                        seen.preset = PresetWidget(group.id, [o.content for o in group.options])
                if which in WIDGETS_WITH_STATE:
                    self._remember(which, element, drawn)
            elif kind == "script_finished":
                status = msg.script_finished
                if status == ForwardMsg.ScriptFinishedStatus.FINISHED_EARLY_FOR_RERUN:
                    continue
                if status == ForwardMsg.ScriptFinishedStatus.FINISHED_WITH_COMPILE_ERROR:
                    raise RunFailed("the page failed to compile")
                if fragment:
                    self.widgets.update(drawn)
                    return seen
                if seen.server_ms is None:
                    raise RunFailed("the run finished without the explorer's 'Server time'")
                self.widgets = drawn  # widgets not drawn in this run are gone from the page
                return seen


WINDOW = re.compile(r"epochs ([\d,]+)–([\d,]+)")


def shown_window(seen: RunSeen) -> tuple[int, int] | None:
    """The epoch range the explorer says it drew ("epochs 3,684–3,733" in its caption)."""
    for caption in seen.captions:
        match = WINDOW.search(caption)
        if match:
            return int(match[1].replace(",", "")), int(match[2].replace(",", ""))
    return None


def check_window(seen: RunSeen, label: str) -> None:
    """A click on preset N must draw the last N epochs (fewer only when the data starts later)."""
    window = shown_window(seen)
    if window is None:
        raise RunFailed("the explorer did not say which epochs it drew")
    if label.isdigit():
        lo, hi = window
        if hi - lo + 1 != int(label) and not (lo == 0 and hi - lo + 1 < int(label)):
            raise RunFailed(f"clicked {label} but the explorer drew epochs {lo}-{hi}")


def preset_state(widget: PresetWidget, label: str):
    """The WidgetState the frontend sends when the preset `label` is clicked."""
    from streamlit.proto.Common_pb2 import StringArray
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    return WidgetState(id=widget.widget_id, string_array_value=StringArray(data=[label]))


async def _think(
    session: ProtocolSession, seconds: float, result: SessionResult, live: bool = True
) -> None:
    """Wait `seconds` as a viewer does; a live page polls meanwhile, as its browser would
    (unless `live` is off: a viewer who switched the explorer's Live toggle off)."""
    until = time.monotonic() + seconds
    while live and session.auto_rerun is not None:
        due = time.monotonic() + session.auto_rerun[0]
        if due >= until:
            break
        await asyncio.sleep(due - time.monotonic())
        polled = time.perf_counter()
        await session.poll_live()
        result.live_poll_ms.append(1000 * (time.perf_counter() - polled))
    await asyncio.sleep(max(0.0, until - time.monotonic()))


async def _ws_session(
    ws_url: str, reruns: int, timeout_s: float, think_s: float, rng: random.Random, live: bool
) -> SessionResult:
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    started = time.perf_counter()
    try:
        async with connect(
            ws_url,
            subprotocols=[Subprotocol("streamlit")],
            max_size=None,
            open_timeout=timeout_s,
            ping_interval=None,  # a browser sends no websocket pings; a busy server may not pong
        ) as ws:
            session = ProtocolSession(ws, timeout_s)
            first = await session.rerun()
            assert first.server_ms is not None
            result = SessionResult(time.perf_counter() - started, first.server_ms)
            if first.preset is None:
                raise RunFailed("the explorer drew no range presets")
            preset = first.preset
            for i in range(reruns):
                if think_s:
                    pause = rng.uniform(0.5 * think_s, 1.5 * think_s)
                    await _think(session, pause, result, live)
                label = preset.labels[i % len(preset.labels)]
                clicked = time.perf_counter()
                seen = await session.rerun([preset_state(preset, label)])
                result.rerun_client_ms.append(1000 * (time.perf_counter() - clicked))
                assert seen.server_ms is not None
                check_window(seen, label)
                result.rerun_server_ms.append(seen.server_ms)
                preset = seen.preset or preset
            return result
    except Exception as exc:  # a failed session is reported, not fatal for the others
        return SessionResult(
            time.perf_counter() - started, -1, error=f"{type(exc).__name__}: {exc}"
        )


async def _run_ws_sessions(
    base_url: str, sessions: int, reruns: int, timeout_s: float, think_s: float, live: bool
) -> list[SessionResult]:
    ws_url = base_url.replace("http://", "ws://", 1) + "/_stcore/stream"
    rngs = [random.Random(i) for i in range(sessions)]
    return await asyncio.gather(
        *(_ws_session(ws_url, reruns, timeout_s, think_s, rngs[i], live) for i in range(sessions))
    )


# --- the browser client (--browser) -----------------------------------------------------------


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


async def _browser_session(
    browser, url: str, reruns: int, timeout_s: float, think_s: float
) -> SessionResult:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    started = time.perf_counter()
    try:
        await page.goto(url, wait_until="domcontentloaded")
        await page.locator(".js-plotly-plot").first.wait_for(timeout=timeout_s * 1000)
        text = await _wait_idle_captions(page, None, timeout_s)
        result = SessionResult(time.perf_counter() - started, _server_ms(text))
        for i in range(reruns):
            if think_s:
                await asyncio.sleep(think_s)
            label = PRESETS[i % len(PRESETS)]
            clicked = time.perf_counter()
            await (
                page.locator('[data-testid="stButtonGroup"]')
                .get_by_role("radio", name=label, exact=True)
                .click()
            )
            text = await _wait_idle_captions(page, text, timeout_s)
            result.rerun_client_ms.append(1000 * (time.perf_counter() - clicked))
            result.rerun_server_ms.append(_server_ms(text))
        return result
    except Exception as exc:  # a failed session is reported, not fatal for the others
        return SessionResult(
            time.perf_counter() - started, -1, error=f"{type(exc).__name__}: {exc}"
        )
    finally:
        await context.close()


async def _run_browser_sessions(
    url: str, sessions: int, reruns: int, timeout_s: float, think_s: float, live: bool
) -> list[SessionResult]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        # launch() always starts Chromium with a fresh temporary profile (its user data dir).
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            return await asyncio.gather(
                *(
                    _browser_session(browser, url, reruns, timeout_s, think_s)
                    for _ in range(sessions)
                )
            )
        finally:
            await browser.close()


# --- levels ------------------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    try:
        process = psutil.Process(pid)
        return (
            sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20
        )
    except psutil.NoSuchProcess:
        return 0.0


def run_level(
    database_url: str | None,
    sessions: int,
    *,
    reruns: int = 5,
    timeout_s: float = 120.0,
    think_s: float = 0.0,
    browser: bool = False,
    readonly_url: str | None = None,
    live: bool = True,
) -> dict:
    """Start a fresh dashboard, drive `sessions` sessions at once, return one level's figures."""
    log_path = Path(tempfile.mkdtemp(prefix="shareprice-load-")) / "streamlit.log"
    with streamlit_server(database_url, log_path, readonly_url=readonly_url) as server:
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
        drive = _run_browser_sessions if browser else _run_ws_sessions
        results = asyncio.run(drive(server.url, sessions, reruns, timeout_s, think_s, live))
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
        after_rss = _rss_mb(server.process.pid)

    ok = [r for r in results if r.error is None]
    server_ms = [ms for r in ok for ms in r.rerun_server_ms]
    client_ms = [ms for r in ok for ms in r.rerun_client_ms]
    first_views_ms = [1000 * r.first_view_s for r in ok]
    live_ms = [ms for r in ok for ms in r.live_poll_ms]
    errors = [r.error for r in results if r.error]
    return {
        "sessions": sessions,
        "ok": len(ok),
        "errors": len(errors),
        "rerun_p50_ms": _round(_percentile(server_ms, 0.5)),
        "rerun_p95_ms": _round(_percentile(server_ms, 0.95)),
        "first_view_p95_ms": _round(_percentile(first_views_ms, 0.95)),
        "rss_peak_mb": _round(max(samples, default=after_rss)),
        "client": "chromium" if browser else "websocket",
        "reruns_per_session": reruns,
        "think_s": think_s,
        "live": live,
        "reruns_measured": len(server_ms),
        "client_rerun_p50_ms": _round(_percentile(client_ms, 0.5)),
        "client_rerun_p95_ms": _round(_percentile(client_ms, 0.95)),
        "first_view_p50_ms": _round(statistics.median(first_views_ms) if first_views_ms else None),
        "live_polls": len(live_ms),
        "live_poll_p95_ms": _round(_percentile(live_ms, 0.95)),
        "first_server_p50_ms": _round(_percentile([r.first_server_ms for r in ok], 0.5)),
        "rss_idle_mb": _round(idle_rss),
        "rss_after_mb": _round(after_rss),
        "wall_s": _round(wall),
        "error_samples": sorted(set(errors))[:3],
    }


def run_load(
    database_url: str | None,
    levels: list[int],
    *,
    reruns: int = 5,
    timeout_s: float = 120.0,
    think_s: float = 0.0,
    browser: bool = False,
    readonly_url: str | None = None,
    live: bool = True,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """One level per entry of `levels` (sessions at once), each on a fresh dashboard."""
    out = []
    for sessions in levels:
        level = run_level(
            database_url,
            sessions,
            reruns=reruns,
            timeout_s=timeout_s,
            think_s=think_s,
            browser=browser,
            readonly_url=readonly_url,
            live=live,
        )
        out.append(level)
        if progress is not None:
            progress(level)
    return {"levels": out}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
