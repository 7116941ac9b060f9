"""`shareprice progress` and `shareprice check`: the operations pages' terminal twins."""

from __future__ import annotations

import sys
import time

import click
import orjson

from shareprice.cli.common import engine_for, friendly_errors, url_option


def _echo_json(data: object) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode())


@click.command("progress")
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--watch",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Print again every SECONDS until interrupted (Ctrl-C).",
)
@friendly_errors
def progress_cmd(url: str | None, as_json: bool, watch: float | None) -> None:
    """How far the backfill has got: epochs, coverage, rows, current run, failures, past runs.

    Cheap enough to run every few seconds during a backfill: counts of the 3.5 M-row tables are
    statistics estimates (and say so), everything else comes from small bookkeeping tables.
    """
    from shareprice.backfill import status

    engine = engine_for(url)
    while True:
        summary = status.summarize(engine)
        if as_json:
            _echo_json(summary.to_json())
        else:
            click.echo(status.format_text(summary))
        if watch is None:
            return
        sys.stdout.flush()
        time.sleep(max(watch, 0.5))
        if not as_json:
            click.echo("")


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
    "--sample",
    type=int,
    default=None,
    metavar="N",
    help="Checks that read raw JSON look at a seeded sample of N normalized epochs.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --sample.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--no-save", is_flag=True, help="Do not record the run in integrity_runs.")
@click.option("--list", "list_checks", is_flag=True, help="List the checks and what each proves.")
@friendly_errors
def check_cmd(
    url: str | None,
    only: tuple[str, ...],
    sample: int | None,
    seed: int,
    as_json: bool,
    no_save: bool,
    list_checks: bool,
) -> None:
    """Prove the normalized tables agree with the raw epochs; exit 1 when any check fails.

    Prints one line per check (status, offending rows, seconds, what was covered) and examples
    of what failed; `--json` prints {"checks": [{"name", "status", "count", "examples",
    "seconds"}, ...]}. Warnings (e.g. a slashed operator's falling price) do not fail the run.
    """
    from shareprice import checks

    if list_checks:
        for item in checks.CHECKS:
            click.echo(f"{item.name}{' (reads raw JSON)' if item.reads_raw else ''}")
            click.echo(f"    {item.proves}")
        return
    try:
        checks.select_checks(only)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    engine = engine_for(url)
    progress_to_stderr = not as_json and sys.stderr.isatty()
    run = checks.run_checks(
        engine,
        only=only or None,
        sample=sample,
        seed=seed,
        on_start=(
            (lambda c: click.echo(f"running {c.name} ...", err=True))
            if progress_to_stderr
            else None
        ),
    )
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
            click.echo(f"recorded as integrity run {saved.run_id}")
        elif saved is not None:
            click.echo(saved.message, err=True)
    if run.failed:
        sys.exit(1)


commands: list[click.Command] = [progress_cmd, check_cmd]
bench_commands: list[click.Command] = []
