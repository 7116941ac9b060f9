"""`shareprice progress`: the progress page's terminal twin (`check` is in check_cmds)."""

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


commands: list[click.Command] = [progress_cmd]
bench_commands: list[click.Command] = []
