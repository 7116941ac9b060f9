"""The backfill's worker processes, and the signals that stop them cleanly.

N spawned processes, each with its own connection, take batches from a queue and send back
results per batch; a worker dies with its parent (prctl PDEATHSIG on Linux), so no orphan keeps
writing after the next run took over. SIGINT/SIGTERM: the first asks to stop after the batches
in flight, the second stops at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from shareprice.backfill.batch import (
    BackfillError,
    BatchResult,
    ConnectionLost,
    connect,
    process_batch,
)
from shareprice.backfill.writer import (
    prepare_connection,
)
from shareprice.errors import describe, error_line

# --- worker processes ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the coordinator dies (kill -9 included), so no orphan
    keeps writing after the next run took over. Elsewhere the barrier lock still protects."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(url: str, run_id: int, worker: int, tasks: Any, results: Any, parent: int) -> None:
    _die_with_parent()
    # Ctrl-C reaches the whole process group: the coordinator decides, the batch in flight ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if os.getppid() != parent:
        return
    try:
        conn = connect(url, f"run {run_id} worker {worker}")
        prepare_connection(conn)
    except Exception as exc:
        results.put(("error", describe_failure(exc)))
        return
    with conn:
        while True:
            epochs = tasks.get()
            if epochs is None or os.getppid() != parent:
                return
            try:
                results.put(("ok", process_batch(conn, epochs, run_id)))
            except Exception as exc:
                results.put(("error", describe_failure(exc, connection_gone=_gone(conn))))
                return


def _gone(conn: psycopg.Connection) -> bool:
    """Whether the server side of `conn` is gone (terminated, crashed, network)."""
    return conn.closed or conn.broken or conn.pgconn.status == psycopg.pq.ConnStatus.BAD


def describe_failure(exc: BaseException, *, connection_gone: bool = False) -> str:
    """What a worker reports of a failed batch (one masked line; a lost connection says so).

    A backend terminated in the middle of a server-side cursor's FETCH can surface as a protocol
    InternalError ("received 2 results from command FETCH ...") rather than an OperationalError:
    when the connection is gone afterwards, that is a lost connection too."""
    if isinstance(exc, psycopg.OperationalError | ConnectionLost) or (
        connection_gone and isinstance(exc, psycopg.Error)
    ):
        return f"database connection lost: {error_line(exc)}"
    if isinstance(exc, BackfillError):
        return str(exc)
    return describe(exc)


class Interrupt:
    """SIGINT/SIGTERM: the first asks to stop after the batches in flight, the second stops."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None


class Pool:
    """N spawned worker processes fed batches through a queue; results come back per batch."""

    def __init__(self, url: str, run_id: int, workers: int) -> None:
        ctx = mp.get_context("spawn")
        self.tasks = ctx.Queue()
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(
                target=_worker_main,
                args=(url, run_id, i, self.tasks, self.results, os.getpid()),
                daemon=True,
                name=f"backfill-worker-{i}",
            )
            for i in range(workers)
        ]
        for proc in self.procs:
            proc.start()

    def run(
        self,
        batches: Iterator[list[int]],
        on_result: Callable[[BatchResult], None],
        interrupt: Interrupt,
    ) -> None:
        in_flight = 0
        limit = 2 * len(self.procs)
        exhausted = False
        while True:
            while not exhausted and in_flight < limit and not interrupt.requested:
                task = next(batches, None)
                if task is None:
                    exhausted = True
                    break
                self.tasks.put(task)
                in_flight += 1
            if in_flight == 0:
                return
            try:
                kind, payload = self.results.get(timeout=0.5)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise BackfillError(
                        f"worker {dead[0].name} ended unexpectedly (exit code {dead[0].exitcode})"
                    ) from None
                continue
            in_flight -= 1
            if kind == "error":
                if payload.startswith("database connection lost"):
                    raise ConnectionLost(payload)
                raise BackfillError(f"a worker failed: {payload}")
            on_result(payload)

    def close(self, *, hard: bool = False) -> None:
        if not hard:
            for _ in self.procs:
                self.tasks.put(None)
            deadline = time.monotonic() + 10
            for proc in self.procs:
                proc.join(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self.tasks.close()
        self.results.close()
