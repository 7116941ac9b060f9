"""`shareprice backfill`, `bench backfill` and `bench follow`.

Exit status of `backfill`: 0 done (or nothing to do); 1 some epochs could not be normalized,
or the run failed; 3 another backfill holds the lock; 130 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import sys

import click
import orjson

from shareprice.cli.common import StatusLine, bar, engine_for, friendly_errors, url_option
from shareprice.store import config

EXIT_FAILED = 1
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130


class ProgressBar(StatusLine):
    """The backfill's line on stderr: done/total, percent, rate, rows and ETA."""

    def __call__(self, summary, result) -> None:  # ProgressCallback
        done = summary.epochs_done + summary.epochs_failed
        if not self.due(final=done >= summary.epochs_total):
            return
        elapsed = self.elapsed_s
        rate = done / elapsed
        total = max(summary.epochs_total, 1)
        remaining = max(summary.epochs_total - done, 0)
        eta = f"{remaining / rate:.0f}s" if rate > 0 else "?"
        rows = sum(summary.rows.values())
        failed = f" {summary.epochs_failed} failed" if summary.epochs_failed else ""
        self.show(
            f"backfill {bar(done, total)} {done:,}/{summary.epochs_total:,} "
            f"epochs {100 * done / total:5.1f}%{failed}  {rate:,.0f} epochs/s  "
            f"{rows / elapsed:,.0f} rows/s  ETA {eta}"
        )


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
            f"{rows.get('operators_metadata', 0):,} metadata upserts, "
            f"{rows.get('nominator_positions', 0):,} position and "
            f"{rows.get('nominator_withdrawals', 0):,} withdrawal change rows"
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

    if epoch_from is not None and epoch_to is not None and epoch_from > epoch_to:
        raise click.BadParameter(
            f"--from {epoch_from} is after --to {epoch_to}: the range would be empty",
            param_hint="--from",
        )
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
    if summary.status != "interrupted":
        from shareprice import prepare

        # Whether comprehensive_analytics can move to v2 now (issue 12): coverage, last check.
        for line in prepare.view_advice(engine):
            click.echo(line)
    if summary.status == "interrupted":
        sys.exit(EXIT_INTERRUPTED)
    if not summary.ok:
        sys.exit(EXIT_FAILED)


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


commands: list[click.Command] = [backfill_cmd]
bench_commands: list[click.Command] = [bench_backfill, bench_follow]
