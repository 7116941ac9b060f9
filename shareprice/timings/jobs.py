"""The job protocol behind the timings page: a detailed run in its own process, followed and stopped.

A v1 run can take tens of seconds at seed scale; in a child process it can be stopped at once,
its parsing cannot hold the dashboard's GIL, and its tracemalloc peak is its own. Both halves
of the protocol live here:

- the parent (`TimingJob`, `job_arguments`, `job_progress`, `job_outcome`, `progress_text`,
  `custom_prefill`): builds the `shareprice timings --events` argv from the page's choices,
  starts the child with the database URL in its environment (never in argv), reads its JSON
  lines, stops it with SIGTERM (then a kill after a grace period) and tells how it ended;
- the child (`set_statement_timeout`, `stop_on_sigterm`, `custom_request`, `event_line`): what
  `shareprice timings` does before and while measuring: the statement timeout for every
  connection through PGOPTIONS, SIGTERM turned into a recorded 'stopped', the custom shape from
  the same flags `job_arguments` writes, one JSON line per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from shareprice import queries
from shareprice.timings.shape_catalog import CUSTOM_SHAPE


@dataclass
class TimingJob:
    """`shareprice timings --events` in a child process, its JSON lines in a file.

    A process, not a thread: it can be stopped at once (SIGTERM records 'stopped'; a kill after
    a grace period if it does not listen), its parsing cannot hold the dashboard's GIL, and its
    tracemalloc peak is its own. The database URL travels in the environment, never in argv.
    """

    process: Any
    output_path: str
    started: float
    time_limit_s: float
    #: Why the page ended the child: None (it finished by itself), 'stopped' or 'timed_out'.
    ended_by: str | None = None

    @classmethod
    def start(cls, url: str, args: list[str], time_limit_s: float) -> TimingJob:
        import os
        import subprocess
        import sys
        import tempfile

        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the child writes it after we return
            prefix="shareprice-timings-", suffix=".jsonl", delete=False
        )
        env = {k: v for k, v in os.environ.items() if k != "SHAREPRICE_READONLY_URL"}
        env["SHAREPRICE_DATABASE_URL"] = url
        command = [
            sys.executable,
            "-m",
            "shareprice.cli",
            "timings",
            "--events",
            "--source",
            "dashboard",
            "--time-limit",
            str(time_limit_s),
            *args,
        ]
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        handle.close()
        return cls(process, handle.name, time.monotonic(), time_limit_s)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def events(self) -> list[dict[str, Any]]:
        """Every complete JSON event so far (other output lines are kept as 'output' events)."""
        try:
            with open(self.output_path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                event = {"event": "output", "text": line.decode(errors="replace")}
            if isinstance(event, dict):
                out.append(event)
        return out

    def stop(self, grace_s: float = 5.0, reason: str = "stopped") -> None:
        import subprocess

        if not self.running:
            return
        self.ended_by = reason
        self.process.terminate()
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=grace_s)

    def enforce_time_limit(self, grace_s: float = 30.0) -> bool:
        """Stop the child when it overran its wall-clock limit (it checks only between runs,
        and one v1 run can be long); True when it had to be stopped."""
        if self.running and self.elapsed_s > self.time_limit_s + grace_s:
            self.stop(reason="timed_out")
            return True
        return False

    def cleanup(self) -> None:
        import contextlib
        import os

        self.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.output_path)


def job_outcome(job: TimingJob) -> tuple[str, str | None]:
    """(status, error) of a finished job, also when the child could not say it itself (killed,
    or it failed before measuring: its last output line is the reason)."""
    state = job_progress(job.events())
    if state["result"] is not None:
        return state["result"]["status"], state["result"].get("error")
    if job.ended_by is not None:
        return job.ended_by, f"{job.ended_by.replace('_', ' ')} from the timings page"
    return "failed", (
        state["output"][-1] if state["output"] else f"exit status {job.process.returncode}"
    )


def job_progress(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a job is: fraction done, the latest step, the run id, the final result if any."""
    start = next((e for e in events if e.get("event") == "start"), None)
    steps = [e for e in events if e.get("event") == "step"]
    done = next((e for e in reversed(events) if e.get("event") == "done"), None)
    total = int(start["total_steps"]) if start and start.get("total_steps") else 0
    current = next((e for e in reversed(events) if e.get("event") in ("step", "shape")), None)
    errors = [e["text"] for e in events if e.get("event") == "output"]
    return {
        "fraction": min(len(steps) / total, 1.0) if total else 0.0,
        "steps": len(steps),
        "total_steps": total,
        "current": current,
        "run_id": start.get("run_id") if start else None,
        "not_saved": start.get("not_saved") if start else "",
        "result": done["run"] if done else None,
        "shapes_done": [e["result"] for e in events if e.get("event") == "shape_done"],
        "output": errors,
    }


def job_arguments(
    *,
    names: Iterable[str],
    operators: str | None = None,
    epoch_from: int | None = None,
    epoch_to: int | None = None,
    last_epochs: int | None = None,
    runs: int = 3,
    v1_runs: int = 1,
    statement_timeout_s: float = 120,
    cold: bool = True,
    memory: bool = True,
    explain: bool = True,
) -> list[str]:
    """`shareprice timings` arguments for the page's choices (named shapes, the custom one)."""
    args: list[str] = []
    for name in names:
        if name != CUSTOM_SHAPE:
            args += ["--shape", name]
    if CUSTOM_SHAPE in names:
        ids = ",".join(part.strip() for part in (operators or "").split(",") if part.strip())
        if ids:
            args += ["--operators", ids]
        for flag, value in (
            ("--epoch-from", epoch_from),
            ("--epoch-to", epoch_to),
            ("--last-epochs", last_epochs),
        ):
            if value is not None:
                args += [flag, str(int(value))]
        if not any(v is not None and v != "" for v in (ids, epoch_from, epoch_to, last_epochs)):
            args += ["--epoch-from", "0"]  # "everything", still a custom shape of its own
    args += ["--runs", str(int(runs)), "--v1-runs", str(int(v1_runs))]
    args += ["--statement-timeout", str(float(statement_timeout_s))]
    if not cold:
        args.append("--no-cold")
    if not memory:
        args.append("--no-memory")
    if not explain:
        args.append("--no-explain")
    return args


# --- the child's side: `shareprice timings` ----------------------------------------------------


def set_statement_timeout(seconds: float) -> None:
    """Give every connection this process opens the statement timeout (libpq reads PGOPTIONS)."""
    import os

    os.environ["PGOPTIONS"] = (
        os.environ.get("PGOPTIONS", "") + f" -c statement_timeout={int(seconds * 1000)}"
    ).strip()


def stop_on_sigterm() -> Callable[[], bool]:
    """Turn SIGTERM (the page's Stop) into a KeyboardInterrupt, so the run records 'stopped'
    and exits; returns whether a stop was asked (a cancelled statement then counts as one)."""
    import signal

    stopping: list[bool] = []

    def on_term(signum: int, frame: Any) -> None:
        stopping.append(True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    return lambda: bool(stopping)


def custom_request(
    operators: str | None,
    epoch_from: int | None,
    epoch_to: int | None,
    last_epochs: int | None,
) -> queries.SeriesRequest | None:
    """The custom shape's request from the flags `job_arguments` writes (None: no custom shape).
    Raises ValueError (a RequestError included) naming what is wrong."""
    if all(v is None for v in (operators, epoch_from, epoch_to, last_epochs)):
        return None
    return queries.SeriesRequest(
        operators=tuple(int(o) for o in operators.split(",") if o.strip()) if operators else None,
        epoch_from=epoch_from,
        epoch_to=epoch_to,
        last_epochs=last_epochs,
    )


def event_line(event: dict[str, Any]) -> str:
    """One event as the JSON line `TimingJob.events` reads back."""
    return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS).decode()


# --- the page's side: what it shows of a job ---------------------------------------------------


def custom_prefill(
    operators: Iterable[int] | None, epoch_range: Iterable[int | None] | None
) -> tuple[str, int | None, int | None]:
    """The custom shape's fields (operator ids text, first epoch, last epoch) from the explorer's
    selection, so a request seen there can be measured as it is; empty when there is none."""
    lo, hi = [None if v is None else int(v) for v in (list(epoch_range or ()) + [None, None])[:2]]
    return ", ".join(map(str, operators or ())), lo, hi


def progress_text(state: dict[str, Any], elapsed_s: float, time_limit_s: float) -> str:
    """One line under the progress bar: the step measured now, steps done, time used."""
    step = state["current"] or {}
    label = (
        f"{step.get('shape', '')} {step.get('variant', '')} {step.get('cache', '')} "
        f"run {step.get('run', '')}/{step.get('of', '')}"
        if step.get("event") == "step"
        else f"starting {step.get('shape', '')}"
    )
    return (
        f"{label} - {state['steps']}/{state['total_steps']} timed runs, "
        f"{elapsed_s:.0f} s of at most {time_limit_s:.0f} s"
    )
