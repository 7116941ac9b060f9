"""`shareprice bench check`: the numbers issue 13 asks of `shareprice check`, from one run.

On a clone of a backfilled database (the database pointed at is never modified):

- the floor: every raw document read as JSON text and parsed with orjson, by as many processes
  as the full run has workers, each on its share of the epochs. Any check that re-reads all the
  raw JSON does at least this; the full run is compared with it.
- a full run (`shareprice check --full`: every check, raw JSON re-read on all workers), saved,
  so every epoch is verified, with each check's seconds;
- the incremental run after N new epochs, as a follow batch leaves them: the last N epochs'
  normalizations and verifications removed and backfilled again, then `shareprice check`
  (the CLI, start-up included, --no-save so each repeat re-reads the same epochs); median;
- the incremental run with nothing changed (after one saved run), median.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson
from sqlalchemy import text

from shareprice import backfill, checks
from shareprice.bench import scratch
from shareprice.store import config, db


def _read_share(conninfo: str, share: int, shares: int) -> tuple[int, int]:
    """(documents, bytes) of every epoch with epoch % shares == share, read and parsed."""
    documents = size = 0
    with db.connect(conninfo) as conn, conn.cursor(name="floor") as cur:
        cur.itersize = 8
        cur.execute(
            "SELECT data::text FROM epochs WHERE epoch %% %s = %s ORDER BY epoch", (shares, share)
        )
        for (document,) in cur:
            orjson.loads(document)
            documents += 1
            size += len(document)
    return documents, size


def read_floor(conninfo: str, workers: int) -> dict[str, Any]:
    """Every raw document read and parsed once, on `workers` processes."""
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        pool.submit(int, 0).result()  # the processes are up before the clock starts
        started = time.perf_counter()
        parts = list(
            pool.map(_read_share, [conninfo] * workers, range(workers), [workers] * workers)
        )
        seconds = time.perf_counter() - started
    return {
        "floor_read_s": round(seconds, 2),
        "documents": sum(p[0] for p in parts),
        "json_mb": round(sum(p[1] for p in parts) / 1e6, 1),
    }


def _cli_check(url: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "shareprice.cli",
            "check",
            "--url",
            url,
            "--json",
            "-q",
            "--no-save",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ,
    )
    seconds = time.perf_counter() - started
    if out.returncode not in (0, 1):
        raise RuntimeError(f"shareprice check failed: {out.stderr.strip()[-300:]}")
    return seconds, orjson.loads(out.stdout)


def run(
    *, url: str | None, new_epochs: int, repeats: int, workers: int, echo: scratch.Echo
) -> dict[str, Any]:
    source = config.normalize_url(url) if url else db.resolve_url()
    name = f"bench_check_{os.getpid()}"
    echo(f"cloning {source.database} into {name} ...")
    target = scratch.clone(source, name, echo)
    try:
        engine = db.get_engine(target)
        with engine.begin() as conn:
            normalized = list(
                conn.execute(
                    text("SELECT epoch FROM epoch_normalizations ORDER BY epoch")
                ).scalars()
            )
            conn.exec_driver_sql("CHECKPOINT")
        if len(normalized) <= new_epochs:
            raise ValueError(f"the database has {len(normalized)} normalized epochs: too few")
        result: dict[str, Any] = {"epochs": len(normalized), "workers": workers}

        echo("floor: every raw document read and parsed ...")
        result.update(read_floor(db.libpq_url(target), workers))

        echo("check --full ...")
        full = checks.run_checks(engine, full=True, workers=workers)
        saved = checks.save_run(engine, full)
        result.update(
            {
                "full_s": round(full.seconds, 1),
                "full_over_floor": round(full.seconds / result["floor_read_s"], 2),
                "full_status": full.status,
                "full_verified_epochs": len(full.verified),
                "full_checks_s": {r.name: round(r.seconds, 2) for r in full.results},
            }
        )
        if not saved.saved:
            raise RuntimeError(saved.message)

        fresh = normalized[-new_epochs:]
        echo(f"{new_epochs} new epochs ({fresh[0]}-{fresh[-1]}) backfilled anew ...")
        with engine.begin() as conn:
            for table in ("epoch_verifications", "epoch_normalizations"):
                conn.execute(
                    text(f"DELETE FROM {table} WHERE epoch = ANY(:e)"),  # noqa: S608
                    {"e": fresh},
                )
        summary = backfill.run_backfill(engine, backfill.Options(workers=1))
        if not summary.ok or summary.epochs_done != new_epochs:
            raise RuntimeError(f"backfill of the new epochs: {summary}")
        cli_url = target.render_as_string(hide_password=False)
        runs = []
        for _ in range(repeats):
            seconds, data = _cli_check(cli_url)
            runs.append((seconds, data["seconds"], data["scope"]["raw_checked_epochs"]))
        result.update(
            {
                "new_epochs": new_epochs,
                "incremental_cli_s": round(statistics.median(r[0] for r in runs), 2),
                "incremental_run_s": round(statistics.median(r[1] for r in runs), 2),
                "incremental_reread_epochs": sorted({r[2] for r in runs}),
                "incremental_cli_runs_s": [round(r[0], 2) for r in runs],
            }
        )

        checks.save_run(engine, checks.run_checks(engine))
        quiet = [_cli_check(cli_url) for _ in range(repeats)]
        result.update(
            {
                "unchanged_cli_s": round(statistics.median(q[0] for q in quiet), 2),
                "unchanged_run_s": round(statistics.median(q[1]["seconds"] for q in quiet), 2),
                "unchanged_reread_epochs": sorted(
                    {q[1]["scope"]["raw_checked_epochs"] for q in quiet}
                ),
            }
        )
        return result
    finally:
        scratch.drop(source, name)
