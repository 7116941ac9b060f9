"""`shareprice backfill`, `backup`, `restore`, `views ...` and `bench backfill`.

Exit status of `backfill`: 0 done (or nothing to do); 1 some epochs could not be normalized,
or the run failed; 3 another backfill holds the lock; 130 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import orjson

from shareprice.cli.common import engine_for, friendly_errors, url_option
from shareprice.store import config

EXIT_FAILED = 1
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130


class ProgressBar:
    """One line on stderr: done/total, percent, rate, rows and ETA (redrawn on a terminal,
    a line every few seconds otherwise, so logs stay readable)."""

    def __init__(self, stream=None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last = 0.0
        self.drawn = False

    def __call__(self, summary, result) -> None:  # ProgressCallback
        if not self.enabled:
            return
        now = time.monotonic()
        done = summary.epochs_done + summary.epochs_failed
        finished = done >= summary.epochs_total
        if not finished and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        total = max(summary.epochs_total, 1)
        remaining = max(summary.epochs_total - done, 0)
        eta = f"{remaining / rate:.0f}s" if rate > 0 else "?"
        width = 24
        filled = int(width * done / total)
        rows = sum(summary.rows.values())
        failed = f" {summary.epochs_failed} failed" if summary.epochs_failed else ""
        line = (
            f"backfill [{'#' * filled}{'.' * (width - filled)}] {done:,}/{summary.epochs_total:,} "
            f"epochs {100 * done / total:5.1f}%{failed}  {rate:,.0f} epochs/s  "
            f"{rows / elapsed:,.0f} rows/s  ETA {eta}"
        )
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _summary_lines(summary) -> list[str]:
    rows = summary.rows
    lines = []
    if summary.status == "nothing-to-do":
        lines.append("nothing to do: every epoch is normalized at its current revision")
    else:
        rate = (summary.epochs_done + summary.epochs_failed) / max(summary.seconds, 1e-6)
        lines.append(
            f"run {summary.run_id} {summary.status}: {summary.epochs_done:,} epochs normalized, "
            f"{summary.epochs_failed:,} failed, in {summary.seconds:.1f}s ({rate:,.0f} epochs/s)"
        )
        lines.append(
            f"rows written: {rows.get('operator_share_prices', 0):,} prices, "
            f"{rows.get('operator_shares', 0):,} operator states, "
            f"{rows.get('operator_chain_share_prices', 0):,} chain prices, "
            f"{rows.get('operators_metadata', 0):,} metadata upserts"
        )
    for epoch, reason in summary.failures[:10]:
        lines.append(f"  failed epoch {epoch}: {reason}")
    if summary.epochs_failed > 10:
        lines.append(f"  ... and {summary.epochs_failed - 10} more (see backfill_errors)")
    if summary.known_bad:
        lines.append(
            f"{summary.known_bad} epochs were rejected earlier at their current revision and "
            "were not retried (see backfill_errors; --retry-failed tries again)"
        )
    return lines


@click.command("backfill")
@url_option
@click.option("--from", "epoch_from", type=int, default=None, help="First epoch (inclusive).")
@click.option("--to", "epoch_to", type=int, default=None, help="Last epoch (inclusive).")
@click.option(
    "--batch-size", type=click.IntRange(1), default=None, help="Epochs per transaction [50]."
)
@click.option(
    "--workers", type=click.IntRange(1), default=None, help="Parallel worker processes [2]."
)
@click.option("--wait", is_flag=True, help="Wait for a running backfill instead of exiting.")
@click.option(
    "--follow", is_flag=True, help="Keep running: normalize new epochs as they arrive (Ctrl-C)."
)
@click.option(
    "--retry-failed", is_flag=True, help="Also retry epochs rejected earlier at this revision."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@friendly_errors
def backfill_cmd(
    url: str | None,
    epoch_from: int | None,
    epoch_to: int | None,
    batch_size: int | None,
    workers: int | None,
    wait: bool,
    follow: bool,
    retry_failed: bool,
    quiet: bool,
) -> None:
    """Normalize raw epochs into the share-price tables (only what is new or changed).

    Each batch commits atomically with its bookkeeping, so a killed run is finished by the next
    one; progress is in backfill_runs (the progress page), bad documents in backfill_errors.
    """
    from shareprice import backfill

    options = backfill.Options(
        epoch_from=epoch_from,
        epoch_to=epoch_to,
        batch_size=batch_size or backfill.DEFAULT_BATCH_SIZE,
        workers=workers or backfill.DEFAULT_WORKERS,
        wait=wait,
        follow=follow,
        retry_failed=retry_failed,
    )
    engine = engine_for(url)
    bar = ProgressBar(enabled=not quiet)
    try:
        summary = backfill.run_backfill(
            engine, options, progress=bar, on_notice=lambda t: click.echo(t, err=True)
        )
    except backfill.LockBusy as exc:
        bar.close()
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    except backfill.BackfillError as exc:
        bar.close()
        click.echo(f"Error: {config.mask_secrets(str(exc))}", err=True)
        sys.exit(EXIT_FAILED)
    bar.close()
    for line in _summary_lines(summary):
        click.echo(line)
    if summary.status == "interrupted":
        sys.exit(EXIT_INTERRUPTED)
    if not summary.ok:
        sys.exit(EXIT_FAILED)


# --- backups -------------------------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@click.command("backup")
@url_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("backups"),
    show_default=True,
    help="Parent directory; the backup goes into <out>/<UTC timestamp>/.",
)
@click.option(
    "--verify",
    "verify_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Check this backup instead (sha256, listing, test restore into a scratch database).",
)
@click.option("--no-restore-test", is_flag=True, help="With --verify: skip the test restore.")
@click.option(
    "--compress",
    default=None,
    help="pg_dump --compress value [gzip:1]; 'none' for speed over size.",
)
@friendly_errors
def backup_cmd(
    url: str | None,
    out: Path,
    verify_dir: Path | None,
    no_restore_test: bool,
    compress: str | None,
) -> None:
    """Dump the database (pg_dump custom format) with a manifest of row counts and checksums."""
    from shareprice.store import backup

    echo = lambda text: click.echo(text, err=True)  # noqa: E731
    try:
        if verify_dir is not None:
            engine = None if no_restore_test else engine_for(url)
            started = time.perf_counter()
            result = backup.verify_backup(verify_dir, engine, echo=echo)
            if not result.ok:
                for problem in result.problems:
                    click.echo(f"  {problem}", err=True)
                raise click.ClickException(f"{verify_dir}: backup does NOT verify")
            what = "sha256 and listing" if engine is None else "sha256, listing and test restore"
            click.echo(
                f"{verify_dir}: OK ({what}; {result.tables} tables, {result.rows:,} rows) "
                f"in {time.perf_counter() - started:.1f}s"
            )
            return
        engine = engine_for(url)
        result = backup.create_backup(
            engine, out, compression=compress or backup.DEFAULT_COMPRESSION, echo=echo
        )
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    tables = result.manifest["tables"]
    click.echo(
        f"backup {result.directory}: {_mb(result.dump_bytes)} dump, {len(tables)} tables, "
        f"{sum(t['rows'] for t in tables.values()):,} rows, in {result.seconds:.1f}s "
        f"(pg_dump {result.dump_seconds:.1f}s, checksums {result.checksum_seconds:.1f}s)"
    )


@click.command("restore")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--into", "into", required=True, help="URL of the (empty) database to restore into.")
@click.option("--force", is_flag=True, help="Restore even if the database is not empty.")
@click.option("--jobs", type=click.IntRange(1), default=2, show_default=True)
@friendly_errors
def restore_cmd(directory: Path, into: str, force: bool, jobs: int) -> None:
    """Restore a backup into a database and verify counts and checksums against its manifest."""
    from shareprice.store import backup

    try:
        result = backup.restore_backup(
            directory, into, force=force, jobs=jobs, echo=lambda t: click.echo(t, err=True)
        )
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    comparison = result.comparison
    if not comparison.ok:
        for problem in comparison.problems:
            click.echo(f"  {problem}", err=True)
        raise click.ClickException(
            f"restored into {result.database}, but it does NOT match the manifest"
        )
    click.echo(
        f"restored {directory} into {result.database} in {result.seconds:.1f}s "
        f"(pg_restore {result.restore_seconds:.1f}s); {comparison.tables} tables, "
        f"{comparison.rows:,} rows: counts and checksums match the manifest"
    )


# --- views ----------------------------------------------------------------------------------------


@click.group("views")
def views_group() -> None:
    """Which definition `comprehensive_analytics` uses (v1: raw JSON, v2: normalized tables)."""


@views_group.command("status")
@url_option
@click.option(
    "--compare",
    "compare_last",
    type=int,
    default=None,
    help="Also diff v1 and v2 on the last N epochs.",
)
@friendly_errors
def views_status(url: str | None, compare_last: int | None) -> None:
    """Show the installed definition (and optionally whether v1 and v2 agree)."""
    from shareprice.store import analytics_view

    engine = engine_for(url)
    state = analytics_view.state(engine)
    click.echo(state.describe())
    if compare_last is not None:
        with engine.connect() as conn:
            latest = conn.exec_driver_sql("SELECT max(epoch) FROM epochs").scalar()
        if latest is None:
            click.echo("no epochs to compare")
            return
        lo = max(0, latest - compare_last + 1)
        diff = analytics_view.differences(engine, lo, latest)
        if diff:
            for row in diff:
                click.echo(f"  {row}")
            raise click.ClickException(f"v1 and v2 differ on epochs {lo}-{latest}")
        click.echo(f"v1 and v2 agree on epochs {lo}-{latest}")


@views_group.command("use-v2")
@url_option
@click.option("--force", is_flag=True, help="Swap even while epochs are pending normalization.")
@friendly_errors
def views_use_v2(url: str | None, force: bool) -> None:
    """Swap comprehensive_analytics to v2 in one transaction (v1 kept as ..._old)."""
    from shareprice.store import analytics_view

    try:
        click.echo(analytics_view.use_v2(engine_for(url), force=force))
    except analytics_view.ViewSwapRefused as exc:
        raise click.ClickException(str(exc)) from None


@views_group.command("rollback")
@url_option
@friendly_errors
def views_rollback(url: str | None) -> None:
    """Swap comprehensive_analytics back to v1."""
    from shareprice.store import analytics_view

    try:
        click.echo(analytics_view.rollback(engine_for(url)))
    except analytics_view.ViewSwapRefused as exc:
        raise click.ClickException(str(exc)) from None


# --- bench ------------------------------------------------------------------------------------------


@click.command("backfill")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output).")
@click.option("--profile", default="seed-scale", show_default=True, help="Generator profile.")
@click.option(
    "--url",
    default=None,
    help="A database holding raw epochs to benchmark on (cloned first; never modified).",
)
@click.option("--workers", type=click.IntRange(1), default=None)
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option(
    "--keep-as",
    default=None,
    help="Keep the backfilled database under this name (e.g. seed_normalized).",
)
@friendly_errors
def bench_backfill(
    as_json: bool,
    profile: str,
    url: str | None,
    workers: int | None,
    batch_size: int | None,
    keep_as: str | None,
) -> None:
    """Time a full backfill against a plain COPY of the same output rows."""
    from shareprice import backfill
    from shareprice.bench import backfill as backfill_bench

    result = backfill_bench.run(
        source_url=url,
        profile=profile,
        workers=workers or backfill.DEFAULT_WORKERS,
        batch_size=batch_size or backfill.DEFAULT_BATCH_SIZE,
        keep_as=keep_as,
        echo=lambda t: click.echo(t, err=True),
    )
    click.echo(orjson.dumps(result).decode())


@click.command("follow")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output).")
@click.option("--url", default=None, help="Server to create the scratch database on.")
@click.option("--profile", default="seed-scale", show_default=True, help="Generator profile.")
@click.option("--inserts", type=click.IntRange(1), default=10, show_default=True)
@friendly_errors
def bench_follow(as_json: bool, url: str | None, profile: str, inserts: int) -> None:
    """Latency from inserting an epoch to its normalization by `backfill --follow`."""
    from shareprice.bench import backfill as backfill_bench

    result = backfill_bench.follow_latency(
        source_url=url, inserts=inserts, profile=profile, echo=lambda t: click.echo(t, err=True)
    )
    click.echo(orjson.dumps(result).decode())


commands: list[click.Command] = [backfill_cmd, backup_cmd, restore_cmd, views_group]
bench_commands: list[click.Command] = [bench_backfill, bench_follow]
