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


@click.command("timings")
@url_option
@click.option(
    "--shape",
    "shape_names",
    multiple=True,
    metavar="NAME",
    help="Named shape (repeatable; default: all named shapes unless a custom one is given).",
)
@click.option("--operators", default=None, help="Custom shape: operator ids, comma-separated.")
@click.option("--epoch-from", type=int, default=None, help="Custom shape: first epoch.")
@click.option("--epoch-to", type=int, default=None, help="Custom shape: last epoch.")
@click.option("--last-epochs", type=int, default=None, help="Custom shape: the last N epochs.")
@click.option("--runs", type=int, default=3, show_default=True, help="Runs of v2 and the floor.")
@click.option("--v1-runs", type=int, default=1, show_default=True, help="Runs of v1 (slow).")
@click.option("--no-cold", is_flag=True, help="Warm runs only.")
@click.option("--no-memory", is_flag=True, help="Skip the tracemalloc runs.")
@click.option("--no-explain", is_flag=True, help="Skip EXPLAIN (ANALYZE, BUFFERS).")
@click.option(
    "--time-limit",
    type=float,
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="Wall-clock limit of the whole run (checked between runs).",
)
@click.option(
    "--statement-timeout",
    type=float,
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="PostgreSQL statement_timeout of every query the run makes.",
)
@click.option("--no-save", is_flag=True, help="Do not record the run in timing_runs.")
@click.option("--source", default="cli", hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--events", is_flag=True, help="Print JSON lines as the run goes (for the page).")
@friendly_errors
def timings_cmd(
    url: str | None,
    shape_names: tuple[str, ...],
    operators: str | None,
    epoch_from: int | None,
    epoch_to: int | None,
    last_epochs: int | None,
    runs: int,
    v1_runs: int,
    no_cold: bool,
    no_memory: bool,
    no_explain: bool,
    time_limit: float,
    statement_timeout: float,
    no_save: bool,
    source: str,
    as_json: bool,
    events: bool,
) -> None:
    """v1 vs v2 vs floor in detail: cold and warm, rows, bytes, Python peak memory, equality,
    EXPLAIN (ANALYZE, BUFFERS); recorded in timing_runs (what the timings page shows).

    `shareprice bench queries` is the quick benchmark; this is its detailed, recorded form.
    """
    import os
    import signal

    from shareprice import queries, timings

    custom = any(v is not None for v in (operators, epoch_from, epoch_to, last_epochs))
    unknown = [n for n in shape_names if n not in timings.SHAPE_NAMES]
    if unknown:
        raise click.UsageError(
            f"unknown shape(s) {unknown}; known: {', '.join(timings.SHAPE_NAMES)}"
        )
    # Every connection of this process gets the statement timeout (libpq reads PGOPTIONS).
    os.environ["PGOPTIONS"] = (
        os.environ.get("PGOPTIONS", "") + f" -c statement_timeout={int(statement_timeout * 1000)}"
    ).strip()
    engine = engine_for(url)
    selected = timings.shapes(engine, shape_names or (() if custom else timings.SHAPE_NAMES))
    if custom:
        try:
            request = queries.SeriesRequest(
                operators=tuple(int(o) for o in operators.split(",") if o.strip())
                if operators
                else None,
                epoch_from=epoch_from,
                epoch_to=epoch_to,
                last_epochs=last_epochs,
            )
        except (ValueError, queries.RequestError) as exc:
            raise click.UsageError(f"custom shape: {exc}") from None
        selected.append(timings.custom_shape(request))

    stopping: list[bool] = []

    def on_term(signum, frame):  # the page's Stop button: record 'stopped', then exit
        stopping.append(True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    def emit(event: dict) -> None:
        if events:
            _echo_json(event)
            sys.stdout.flush()
        elif not as_json and event["event"] == "step":
            click.echo(
                f"… {event['shape']} {event['variant']} {event['cache']} "
                f"{event['run']}/{event['of']}: {event['ms']:.1f} ms",
                err=True,
            )

    run = timings.run_detailed(
        engine,
        selected,
        runs=runs,
        v1_runs=v1_runs,
        cold=not no_cold,
        memory=not no_memory,
        explain=not no_explain,
        time_limit_s=time_limit,
        save=not no_save,
        source=source,
        on_event=emit,
        stop_requested=lambda: bool(stopping),
    )
    if events:
        return
    if as_json:
        _echo_json(run.to_json_dict())
        return
    header = (
        f"{'shape':<26} {'path':<5} {'cache':<5} {'median ms':>10} {'min ms':>9} {'max ms':>9} "
        f"{'rows':>9} {'bytes':>12} {'py peak MB':>10} {'v1/v2':>7} equal"
    )
    click.echo(header)
    for row in timings.detailed_table(run.shapes):

        def cell(value, fmt):
            return format(value, fmt) if value is not None else "-"

        click.echo(
            f"{row['shape']:<26} {row['path']:<5} {row['cache']:<5} "
            f"{cell(row['median ms'], '10.1f'):>10} {cell(row['min ms'], '9.1f'):>9} "
            f"{cell(row['max ms'], '9.1f'):>9} {cell(row['rows'], ','):>9} "
            f"{cell(row['bytes'], ','):>12} {cell(row['python peak MB'], '.1f'):>10} "
            f"{cell(row['v1/v2'], '.1f'):>7} {row['equal'] if row['equal'] is not None else '-'}"
        )
    click.echo(f"status: {run.status}" + (f" ({run.error})" if run.error else ""))
    click.echo(f"cold: {run.cold_method}" if run.cold_method else "warm runs only")
    if run.run_id is not None:
        click.echo(f"recorded as timing run {run.run_id}")
    elif run.not_saved:
        click.echo(run.not_saved, err=True)
    if run.status != "completed":
        sys.exit(1)


commands: list[click.Command] = [progress_cmd, check_cmd, timings_cmd]
bench_commands: list[click.Command] = []
