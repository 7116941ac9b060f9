"""The served dashboard's Streamlit settings that the load bench showed matter.

Checked through Streamlit's own config loader, run where `make run` and the benches start the
server (the project root), so a renamed option (a Streamlit upgrade) or a dropped line fails here
instead of showing up as 50 viewers waiting seconds per click."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OPTIONS = {
    # gc.collect(2) after every script run, under the interpreter lock: 62 % of server CPU at
    # 50 sessions (shareprice bench load), reruns queued behind it.
    "runner.postScriptGC": False,
    # The watcher resolves every module's path after each run: 16 % of server CPU at 50 sessions.
    "server.fileWatcherType": "none",
    "server.runOnSave": False,
    # Never a traceback in the browser.
    "client.showErrorDetails": "none",
}


def test_the_served_dashboard_runs_without_forced_gc_or_file_watcher():
    probe = (
        "import json, sys; from streamlit import config; "
        "print(json.dumps({k: config.get_option(k) for k in json.loads(sys.argv[1])}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(list(OPTIONS))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == OPTIONS
