"""`shareprice timings`: the timings page's terminal twin, and the child process the page runs.

Thin: the flags become shapes and options, `shareprice.timings` measures and records, this
prints a table, one JSON object (`--json`) or JSON lines as the run goes (`--events`, what the
page's `TimingJob` reads). The child's side of the page's protocol (statement timeout through
PGOPTIONS, SIGTERM as a recorded stop, the custom shape's flags) is `timings.jobs`'s, so the
page's argv and this command's parsing live side by side.
"""

from __future__ import annotations

import sys

import click

from shareprice.cli.common import engine_for, friendly_errors, url_option


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
    from shareprice import timings
    from shareprice.display import timing_charts

    unknown = [n for n in shape_names if n not in timings.SHAPE_NAMES]
    if unknown:
        raise click.UsageError(
            f"unknown shape(s) {unknown}; known: {', '.join(timings.SHAPE_NAMES)}"
        )
    try:
        request = timings.custom_request(operators, epoch_from, epoch_to, last_epochs)
    except ValueError as exc:  # RequestError included
        raise click.UsageError(f"custom shape: {exc}") from None
    timings.set_statement_timeout(statement_timeout)
    engine = engine_for(url)
    named = shape_names or (() if request is not None else timings.SHAPE_NAMES)
    selected = timings.shapes(engine, named)
    if request is not None:
        selected.append(timings.custom_shape(request))
    stop_requested = timings.stop_on_sigterm()

    def emit(event: dict) -> None:
        if events:
            click.echo(timings.event_line(event))
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
        stop_requested=stop_requested,
    )
    if events:
        return
    if as_json:
        click.echo(timings.event_line(run.to_json_dict()))
        return
    header = (
        f"{'shape':<26} {'path':<5} {'cache':<5} {'median ms':>10} {'min ms':>9} {'max ms':>9} "
        f"{'rows':>9} {'bytes':>12} {'py peak MB':>10} {'v1/v2':>7} equal"
    )
    click.echo(header)
    for row in timing_charts.detailed_table(run.shapes):

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


commands: list[click.Command] = [timings_cmd]
bench_commands: list[click.Command] = []
