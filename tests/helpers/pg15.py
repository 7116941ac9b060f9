"""Debian's PostgreSQL 15 clusters for tests: a primary, and hot standbys streaming from it.

The embedded server is PostgreSQL 18 in one process; replication needs a second server that a
test controls (pause replay, watch LSNs), and the oldest version we support is 15. So these
clusters run from /usr/lib/postgresql/15/bin, as the `postgres` user when the tests run as root
(PostgreSQL refuses to run as root), on loopback ports with password (scram) authentication,
in a temp dir removed on stop.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

ADMIN = "admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")


@dataclass
class Cluster:
    bin_dir: Path
    base: Path
    data: Path
    port: int
    password: str

    @property
    def url(self) -> str:
        return f"postgresql://{ADMIN}:{self.password}@127.0.0.1:{self.port}/postgres"

    def env(self) -> dict[str, str]:
        # The password file lets a standby's walreceiver (libpq) authenticate to the primary.
        return {**os.environ, "LC_ALL": "C", "PGPASSFILE": str(self.base / "pgpass")}

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            _as_user([str(self.bin_dir / cmd[0]), *cmd[1:]]),
            capture_output=True,
            text=True,
            env=self.env(),
        )
        if done.returncode != 0:
            log = self.base / f"{self.data.name}.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr}\n{tail}")
        return done

    def start(self, *settings: str) -> None:
        options = " ".join(
            [f"-p {self.port}", f"-k {self.base}", "-c listen_addresses=127.0.0.1", *settings]
        )
        log = self.base / f"{self.data.name}.log"
        self.run("pg_ctl", "-D", str(self.data), "-w", "-l", str(log), "-o", options, "start")

    def stop(self) -> None:
        subprocess.run(
            _as_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]),
            capture_output=True,
            env=self.env(),
        )


def primary(bin_dir: Path) -> Cluster:
    """A new, started PostgreSQL 15 cluster that accepts replication connections."""
    base = Path(tempfile.mkdtemp(prefix="shareprice-pg15-repl-"))
    password = secrets.token_urlsafe(12)
    cluster = Cluster(bin_dir, base, base / "primary", free_port(), password)
    pwfile = base / "pw"
    pwfile.write_text(password)
    pgpass = base / "pgpass"
    pgpass.write_text(f"127.0.0.1:*:*:{ADMIN}:{password}\n")
    pgpass.chmod(0o600)
    for path in (base, pwfile, pgpass):
        _own(path)
    # initdb's default pg_hba.conf already allows replication from 127.0.0.1 with --auth.
    cluster.run(
        "initdb", "-D", str(cluster.data), "-U", ADMIN, "-E", "UTF8",
        "--auth=scram-sha-256", f"--pwfile={pwfile}",
    )  # fmt: skip
    cluster.start("-c wal_level=replica", "-c max_wal_senders=5")
    return cluster


def standby(of: Cluster) -> Cluster:
    """A hot standby of `of`: `pg_basebackup -R` (writes primary_conninfo and standby.signal),
    then started with streaming replication."""
    cluster = Cluster(of.bin_dir, of.base, of.base / "standby", free_port(), of.password)
    of.run(
        "pg_basebackup", "-h", "127.0.0.1", "-p", str(of.port), "-U", ADMIN,
        "-D", str(cluster.data), "-R", "-X", "stream", "-c", "fast",
    )  # fmt: skip
    cluster.start("-c hot_standby=on", "-c hot_standby_feedback=on")
    return cluster


def wait_caught_up(primary_engine: sa.Engine, standby_engine: sa.Engine, timeout: float) -> float:
    """Seconds until the standby has replayed everything the primary had written when called."""
    started = time.perf_counter()
    with primary_engine.connect() as conn:
        target = conn.execute(sa.text("SELECT pg_current_wal_lsn()::text")).scalar_one()
    deadline = time.monotonic() + timeout
    while True:
        with standby_engine.connect() as conn:
            done = conn.execute(
                sa.text("SELECT pg_last_wal_replay_lsn() >= CAST(:target AS pg_lsn)"),
                {"target": target},
            ).scalar_one()
        if done:
            return time.perf_counter() - started
        if time.monotonic() > deadline:
            raise TimeoutError(f"the standby did not replay up to {target} within {timeout}s")
        time.sleep(0.02)


def remove(*clusters: Cluster) -> None:
    for cluster in clusters:
        cluster.stop()
    if clusters:
        shutil.rmtree(clusters[0].base, ignore_errors=True)
