"""Run `streamlit run dashboard.py` as a subprocess on a free port, for browser tests and benches.

Not used by the dashboard itself: this is how tests and `shareprice bench load` get a real server
with a given database URL, a log file, and a clean stop.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: dashboard.py and pages/ live there
CHROMIUM = Path("/usr/bin/chromium")
# Without these, Chromium hangs on this closed network (background services retry forever).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(server: RunningServer, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"streamlit exited with {server.process.returncode}:\n{tail}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"streamlit did not become healthy within {timeout:.0f}s")


@contextlib.contextmanager
def streamlit_server(
    database_url: str | None,
    log_path: Path,
    readonly_url: str | None = None,
    *,
    script: Path = ROOT / "dashboard.py",
    **env: str,
) -> Iterator[RunningServer]:
    """Start the dashboard (or another Streamlit `script`) against `database_url`; stop it (and
    wait) on exit."""
    environment = dict(os.environ)
    for var in ("SHAREPRICE_DATABASE_URL", "DATABASE_URL", "SHAREPRICE_READONLY_URL"):
        environment.pop(var, None)
    if database_url:
        environment["SHAREPRICE_DATABASE_URL"] = database_url
    if readonly_url:
        environment["SHAREPRICE_READONLY_URL"] = readonly_url
    environment.update(env)
    port = free_port()
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", str(script),
            "--server.port", str(port), "--server.address", "127.0.0.1",
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
        ],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = RunningServer(process, port, log_path)
    try:
        wait_healthy(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
