"""Check workers die with their coordinator (issue 13 part 3): a killed `shareprice check --full`
must not leave orphaned workers holding connections idle in transaction. Linux only: the
guarantee is the kernel's parent-death signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

# A coordinator stand-in: spawns one worker the way run_checks does (spawn context, the
# worker's first act is _die_with_parent), prints the worker's pid, then waits to be killed.
_COORDINATOR = """
import multiprocessing as mp, os, sys, time
from shareprice.checks.runs import _die_with_parent

def worker(parent):
    _die_with_parent(parent)
    time.sleep(120)

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=worker, args=(os.getpid(),))
    p.start()
    time.sleep(2)  # let the worker import and arm the signal
    print(p.pid, flush=True)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_worker_dies_when_its_coordinator_is_killed(sig: signal.Signals, tmp_path) -> None:
    script = tmp_path / "coordinator.py"
    script.write_text(_COORDINATOR)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        worker = int(proc.stdout.readline())
        assert _alive(worker)
        os.kill(proc.pid, sig)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), f"worker {worker} outlived its coordinator ({sig.name})"
    finally:
        proc.kill()
        proc.wait()


def test_worker_exits_when_its_parent_is_already_gone() -> None:
    """The race: the coordinator died before the worker armed the signal."""
    code = (
        "import os\nfrom shareprice.checks.runs import _die_with_parent\n"
        "_die_with_parent(os.getppid() + 1)\nprint('survived')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "survived" not in out.stdout
