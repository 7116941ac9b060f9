"""`shareprice bench backfill` and `bench follow`: the numbers issue 4 asks for, from one run.

backfill: a scratch database with raw epochs (a clone of --url's database, or a freshly
generated profile), a full backfill timed while sampling the peak RSS of the process tree
(coordinator + workers), then the floor: the same output rows, dumped to a file first, COPY'd
into empty tables of the same shape (LIKE ... INCLUDING ALL: same keys, BRIN and checks),
nominator positions, withdrawals, epoch_positions and accounts included.

follow: a small generated database, `shareprice backfill --follow` in a subprocess, then epochs
inserted one at a time; latency = insert commit to its epoch_normalizations row being visible.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from shareprice.backfill import Options, run_backfill
from shareprice.bench import scratch
from shareprice.store import config, db, migrate

#: The tables a backfill writes, i.e. the rows the COPY floor copies.
OUTPUT_TABLES = (
    "operator_share_prices",
    "operator_shares",
    "operator_chain_share_prices",
    "operators_metadata",
    "epoch_normalizations",
    "nominator_positions",
    "nominator_withdrawals",
    "epoch_positions",
    "nominator_accounts",
)
_RESET = (
    "TRUNCATE operator_share_prices, operator_shares, operator_chain_share_prices, "
    "operators_metadata, epoch_normalizations, backfill_errors, backfill_runs, "
    "nominator_positions, nominator_withdrawals, epoch_positions, nominator_accounts"
)

Echo = Callable[[str], None]


def _generate(server: URL, name: str, profile: str, echo: Echo) -> URL:
    from shareprice.ingest import generator

    with scratch.admin(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = server.set(database=name)
    engine = db.get_engine(target)
    migrate.migrate(engine)
    echo(f"generating profile {profile} ...")
    generator.generate(engine, profile)
    return target


class _PeakRss:
    """Samples RSS of this process and all its descendants every 50 ms; keeps the peak sum.

    Also (for where-the-time-goes, not the target): the CPU seconds of the process tree, and
    of the server backends serving the backfill when the server runs on this machine (their
    /proc entries, found by application_name; the last sample before each one exits counts).
    """

    def __init__(self, url: URL | None = None) -> None:
        self.peak = 0
        self.url = url
        self.backend_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._me = psutil.Process()
        self._children: list[psutil.Process] = []
        self._children_at = -float("inf")
        self._cpu_at_start = self._tree_cpu()

    @staticmethod
    def _tree_cpu() -> float:
        me = psutil.Process()
        total = sum(me.cpu_times()[:4])  # user, system, children_user, children_system
        for child in me.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        return total

    client_cpu = 0.0

    @property
    def server_cpu(self) -> float:
        return sum(self.backend_cpu.values())

    def _sample_backends(self, conn: psycopg.Connection) -> None:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'shareprice backfill%'"
        ).fetchall()
        for (pid,) in pids:
            try:
                self.backend_cpu[pid] = sum(psutil.Process(pid).cpu_times()[:2])
            except psutil.Error:
                pass

    #: How often the list of descendants is refreshed. Finding them reads /proc/<pid>/stat of
    #: every process on the machine (~1.3 ms here): at every 50 ms sample that was ~3 % of a
    #: core, counted as the backfill's client CPU and taken from its workers. The workers live
    #: for the whole run, so a list a second old misses nothing but a process's first second.
    CHILDREN_REFRESH_S = 1.0

    def _sample(self) -> int:
        me = self._me
        now = time.monotonic()
        if now - self._children_at >= self.CHILDREN_REFRESH_S:
            self._children = me.children(recursive=True)
            self._children_at = now
        total = me.memory_info().rss
        for child in self._children:
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        conn = None
        if self.url is not None:
            try:
                conn = db.connect(self.url, autocommit=True)
            except psycopg.Error:
                conn = None
        tick = 0
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            if conn is not None and tick % 4 == 0:
                self._sample_backends(conn)
            tick += 1
            self._stop.wait(0.05)
        if conn is not None:
            conn.close()

    def __enter__(self) -> _PeakRss:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client_cpu = self._tree_cpu() - self._cpu_at_start


def _backend_cpu(pid: int) -> float:
    try:
        return sum(psutil.Process(pid).cpu_times()[:2])
    except psutil.Error:  # a server on another machine: not measured
        return 0.0


def _migrate_clone(engine, echo: Echo) -> None:
    """Bring the scratch clone to the current schema. A source made before a migration file was
    edited (checksum mismatch) is benchmarked as it is when it has what the backfill needs."""
    try:
        migrate.migrate(engine)
    except migrate.MigrationError as exc:
        with engine.connect() as conn:
            ready = conn.exec_driver_sql(
                "SELECT count(*) = 2 FROM information_schema.columns WHERE "
                "(table_name, column_name) IN (('operator_shares', 'status'), "
                "('backfill_errors', 'revision'))"
            ).scalar_one()
        if not ready:
            raise
        echo(f"note: {exc}; the clone has the backfill's schema, benchmarking it as it is")


def copy_floor(url: URL, echo: Echo) -> tuple[float, int, float, float]:
    """Seconds to COPY the output tables' rows into empty tables of the same shape, the rows,
    and the client and server CPU seconds those COPYs took."""
    conninfo = db.libpq_url(url)
    seconds = client_cpu = server_cpu = 0.0
    rows = 0
    with db.connect(conninfo) as conn, tempfile.TemporaryDirectory() as tmp:
        backend = db.one(conn.execute("SELECT pg_backend_pid()"))[0]
        conn.commit()
        for table in OUTPUT_TABLES:
            floor = f"copy_floor_{table}"
            path = Path(tmp) / f"{table}.copy"
            with conn.cursor() as cur, path.open("wb") as fh:
                with cur.copy(sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(table))) as copy:
                    for chunk in copy:
                        fh.write(chunk)
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(floor)))
                cur.execute(
                    sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                        sql.Identifier(floor), sql.Identifier(table)
                    )
                )
            conn.commit()
            started = time.perf_counter()
            cpu_started = (time.process_time(), _backend_cpu(backend))
            with conn.cursor() as cur, path.open("rb") as fh:
                with cur.copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(floor))) as copy:
                    while chunk := fh.read(1 << 20):
                        copy.write(chunk)
                n = cur.rowcount
            conn.commit()
            took = time.perf_counter() - started
            client_cpu += time.process_time() - cpu_started[0]
            server_cpu += _backend_cpu(backend) - cpu_started[1]
            seconds += took
            rows += max(n, 0)
            echo(f"  COPY {table}: {n:,} rows in {took:.2f}s")
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(floor)))
            conn.commit()
    return seconds, rows, client_cpu, server_cpu


def run(
    *,
    source_url: str | None,
    profile: str,
    workers: int,
    batch_size: int,
    keep_as: str | None,
    echo: Echo,
) -> dict[str, Any]:
    server = config.normalize_url(source_url) if source_url else db.resolve_url()
    name = f"bench_backfill_{os.getpid()}"
    if source_url:
        echo(f"cloning {server.database} into {name} ...")
        started = time.perf_counter()
        target = scratch.clone(server, name, echo)
        echo(f"  cloned in {time.perf_counter() - started:.1f}s")
    else:
        target = _generate(server, name, profile, echo)
    kept = False
    try:
        engine = db.get_engine(target)
        _migrate_clone(engine, echo)
        with db.connect(target, autocommit=True) as conn:
            conn.execute(_RESET)
            epochs = db.one(conn.execute("SELECT count(*) FROM epochs"))[0]
            conn.execute("CHECKPOINT")  # the clone's dirty pages are not the backfill's cost
        echo(f"backfill of {epochs:,} epochs, {workers} workers, batches of {batch_size} ...")
        with _PeakRss(target) as rss:
            started = time.perf_counter()
            summary = run_backfill(engine, Options(workers=workers, batch_size=batch_size))
            backfill_s = time.perf_counter() - started
        echo(
            f"  {summary.epochs_done:,} epochs ({summary.epochs_failed} failed) in {backfill_s:.1f}s"
        )
        with db.connect(target, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        echo("COPY floor of the same rows ...")
        floor_s, rows, floor_client_cpu, floor_server_cpu = copy_floor(target, echo)
        result = {
            "epochs": summary.epochs_done + summary.epochs_failed,
            "rows": rows,
            "backfill_s": round(backfill_s, 2),
            "copy_floor_s": round(floor_s, 2),
            "ratio": round(backfill_s / floor_s, 2) if floor_s else None,
            "rows_per_s": round(rows / backfill_s),
            "peak_rss_mb": round(rss.peak / 2**20, 1),
            "failed_epochs": summary.epochs_failed,
            # Where the batches' time went, summed over workers: fetch + parse vs write.
            # CPU seconds (load-independent, unlike wall times on a shared machine): the
            # backfill's processes and server backends, and the floor's.
            "client_cpu_s": round(rss.client_cpu, 1),
            "server_cpu_s": round(rss.server_cpu, 1),
            "floor_cpu_s": round(floor_client_cpu + floor_server_cpu, 1),
            "read_s": round(summary.read_seconds, 2),
            "write_s": round(summary.batch_seconds - summary.read_seconds, 2),
            "operator_states": summary.rows.get("operator_share_prices", 0),
            # Nominator positions (sql/042 change rows), part of `rows` and of the floor.
            "positions_rows": summary.rows.get("nominator_positions", 0),
            "withdrawal_rows": summary.rows.get("nominator_withdrawals", 0),
            "epoch_positions_rows": summary.rows.get("epoch_positions", 0),
            "accounts": summary.rows.get("nominator_accounts", 0),
            "workers": workers,
            "batch_size": batch_size,
            "source": str(server.database) if source_url else f"generated {profile}",
        }
        if keep_as:
            db.forget_engine(target)
            with scratch.admin(server) as conn:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(name), sql.Identifier(keep_as)
                    )
                )
            kept = True
            result["kept_as"] = keep_as
        return result
    finally:
        if not kept:
            scratch.drop(server, name)


# --- follow-mode latency ---------------------------------------------------------------------------


def follow_latency(
    *,
    source_url: str | None,
    inserts: int,
    echo: Echo,
    profile: str = "seed-scale",
    base_epochs: int = 60,
) -> dict[str, Any]:
    from shareprice.ingest import generator

    server = config.normalize_url(source_url) if source_url else db.resolve_url()
    name = f"bench_follow_{os.getpid()}"
    with scratch.admin(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = server.set(database=name)
    proc: subprocess.Popen | None = None
    try:
        migrate.migrate(db.get_engine(target))
        docs = list(generator.iter_documents(profile, epochs=base_epochs + inserts))
        conninfo = db.libpq_url(target)
        insert = (
            "INSERT INTO epochs (epoch, end_block, end_hash, indexed_at, data) "
            "VALUES (%s, %s, %s, %s, %s::jsonb)"
        )
        with db.connect(conninfo, autocommit=True) as conn:
            for doc in docs[:base_epochs]:
                conn.execute(
                    insert,
                    (doc.epoch, doc.end_block, doc.end_hash, doc.indexed_at, doc.data.decode()),
                )
            env = dict(
                os.environ, SHAREPRICE_DATABASE_URL=target.render_as_string(hide_password=False)
            )
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "shareprice",
                    "backfill",
                    "--follow",
                    "--workers",
                    "1",
                    "-q",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _wait_for(conn, base_epochs, proc)
            echo(f"follow mode caught up on {base_epochs} epochs; inserting {inserts} more ...")
            latencies = []
            for doc in docs[base_epochs:]:
                conn.execute(
                    insert,
                    (doc.epoch, doc.end_block, doc.end_hash, doc.indexed_at, doc.data.decode()),
                )
                started = time.perf_counter()
                while True:
                    row = conn.execute(
                        "SELECT 1 FROM epoch_normalizations WHERE epoch = %s", (doc.epoch,)
                    ).fetchone()
                    if row is not None:
                        break
                    if time.perf_counter() - started > 30:
                        raise RuntimeError(f"epoch {doc.epoch} not normalized within 30 s")
                    time.sleep(0.002)
                latencies.append(time.perf_counter() - started)
                time.sleep(0.2)
        return {
            "profile": profile,
            "operators_per_epoch": docs[-1].operator_states,
            "inserts": inserts,
            "latency_median_s": round(statistics.median(latencies), 3),
            "latency_max_s": round(max(latencies), 3),
            "latency_min_s": round(min(latencies), 3),
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        scratch.drop(server, name)


def _wait_for(conn: psycopg.Connection, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"backfill --follow exited: {stderr[-500:]}")
        n = db.one(conn.execute("SELECT count(*) FROM epoch_normalizations"))[0]
        if n >= count:
            return
        time.sleep(0.05)
    raise RuntimeError("backfill --follow did not catch up within 120 s")
