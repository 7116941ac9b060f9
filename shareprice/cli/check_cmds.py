"""`shareprice check`: the integrity checks in a terminal, a deploy gate by exit status.

By default incremental: the checks that read raw JSON (gigabytes at seed scale) re-read only the
epochs whose raw document or normalized rows changed since they were last verified, so it is
cheap enough after every follow batch; `--full` re-reads everything on all cores. Runs over a
second draw a progress bar on stderr, as the backfill does.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

import click
import orjson

from shareprice.cli.common import StatusLine, bar, engine_for, friendly_errors, url_option

#: Draw nothing for runs shorter than this: a quick incremental run prints just its table.
BAR_AFTER_S = 1.0


class CheckProgress(StatusLine):
    """The checks' line on stderr: the current check, and the raw checks' epochs done/total
    with an ETA; nothing before BAR_AFTER_S has passed (a quick run prints just its table)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        super().__init__(stream, enabled, width=110)
        self.check = ""
        self.done = 0
        self.total = 0

    def on_start(self, item) -> None:
        self.check = item.name
        self.draw()

    def on_progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self.draw()

    def draw(self) -> None:
        if not self.due(after_s=BAR_AFTER_S):
            return
        rate = self.done / self.elapsed_s
        eta = f"{(self.total - self.done) / rate:.0f}s" if rate > 0 else "?"
        self.show(
            f"check {bar(self.done, self.total)} {self.done:,}/{self.total:,} "
            f"raw epoch reads {100 * self.done / max(self.total, 1):5.1f}%  ETA {eta}  {self.check}"
        )


def _echo_json(data: object) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode())


@click.command("check")
@url_option
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="NAME",
    help="Run only this check (repeatable). Names: see `shareprice check --list`.",
)
@click.option(
    "--full",
    is_flag=True,
    help="Checks that read raw JSON re-read every normalized epoch (default: only epochs whose "
    "raw document or normalized rows changed since they were last verified).",
)
@click.option(
    "--sample",
    type=int,
    default=None,
    metavar="N",
    help="Checks that read raw JSON look at a seeded sample of N normalized epochs instead.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --sample.")
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Processes for the raw-reading checks when many epochs are to be read [all cores].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--no-save",
    is_flag=True,
    help="Record nothing: neither the run in integrity_runs nor the epochs it verified.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--list", "list_checks", is_flag=True, help="List the checks and what each proves.")
@friendly_errors
def check_cmd(
    url: str | None,
    only: tuple[str, ...],
    full: bool,
    sample: int | None,
    seed: int,
    workers: int | None,
    as_json: bool,
    no_save: bool,
    quiet: bool,
    list_checks: bool,
) -> None:
    """Prove the normalized tables agree with the raw epochs; exit 1 when any check fails.

    Prints one line per check (status, offending rows, seconds, what was covered) and examples
    of what failed; `--json` prints {"checks": [{"name", "status", "count", "examples",
    "seconds"}, ...], "scope": {"mode", "raw_checked_epochs", ...}}. Warnings (e.g. a slashed
    operator's falling price) do not fail the run. A saved run records the epochs every raw
    check found correct (epoch_verifications), which the next incremental run skips while their
    raw revision and the digest of their normalized rows stay the same.
    """
    from shareprice import checks

    if list_checks:
        for item in checks.CHECKS:
            click.echo(f"{item.name}{' (reads raw JSON)' if item.reads_raw else ''}")
            click.echo(f"    {item.proves}")
        return
    if full and sample is not None:
        raise click.UsageError(
            "--full and --sample exclude each other: a sample is not every epoch"
        )
    if sample is not None and sample <= 0:
        raise click.UsageError("--sample must be a positive number of epochs")
    try:
        checks.select_checks(only)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    engine = engine_for(url)
    bar = CheckProgress(enabled=not quiet)
    try:
        run = checks.run_checks(
            engine,
            only=only or None,
            sample=sample,
            seed=seed,
            full=full,
            workers=workers or os.cpu_count() or 1,
            on_start=bar.on_start,
            on_progress=bar.on_progress,
        )
    finally:
        bar.close()
    saved = None if no_save else checks.save_run(engine, run, source="cli")
    if as_json:
        data = run.to_json()
        if saved is not None:
            data["saved_run_id"] = saved.run_id
            if saved.message:
                data["not_saved"] = saved.message
        _echo_json(data)
    else:
        click.echo(checks.format_table(run))
        if saved is not None and saved.saved:
            click.echo(
                f"recorded as integrity run {saved.run_id}"
                + (f"; {len(run.verified):,} epoch(s) verified" if run.verified else "")
            )
        elif saved is not None:
            click.echo(saved.message, err=True)
    if run.failed:
        sys.exit(1)


@click.command("check")
@click.option(
    "--url",
    default=None,
    help="A backfilled database to measure on (cloned first; never modified).",
)
@click.option(
    "--new-epochs",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Epochs backfilled anew before the incremental runs (a follow batch).",
)
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Processes of the full run and of the floor [all cores].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output).")
@friendly_errors
def bench_check(
    url: str | None, new_epochs: int, repeats: int, workers: int | None, as_json: bool
) -> None:
    """`check --full` against a floor (every raw document read and parsed once, on as many
    processes), and the incremental run after --new-epochs new epochs and with nothing changed."""
    from shareprice.bench import checks as checks_bench

    result = checks_bench.run(
        url=url,
        new_epochs=new_epochs,
        repeats=repeats,
        workers=workers or os.cpu_count() or 1,
        echo=lambda t: click.echo(t, err=True),
    )
    _echo_json(result)


commands: list[click.Command] = [check_cmd]
bench_commands: list[click.Command] = [bench_check]
