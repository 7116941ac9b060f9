"""The `shareprice` command: a thin layer over the library.

Each area keeps its commands in its own module here and exports `commands` (top-level commands)
and `bench_commands` (subcommands of `shareprice bench`). Commands only parse options, call the
library and print; logic lives in `shareprice.*`.
"""

from __future__ import annotations

import click

from shareprice.cli import (
    api_cmds,
    backfill_cmds,
    backup_cmds,
    check_cmds,
    data_cmds,
    db_cmds,
    load_cmds,
    nominator_cmds,
    ops_cmds,
    query_cmds,
    render_cmds,
    timings_cmds,
    views_cmds,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="shareprice")
def main() -> None:
    """Operator share prices on Autonomys domain staking.

    With no database URL configured (SHAREPRICE_DATABASE_URL or DATABASE_URL), every command
    uses the embedded PostgreSQL in SHAREPRICE_DATA_DIR and starts it when needed.
    """


@main.group()
def bench() -> None:
    """Benchmarks at realistic scale; each prints one JSON object."""


for _module in (
    db_cmds,
    data_cmds,
    backfill_cmds,
    backup_cmds,
    views_cmds,
    query_cmds,
    nominator_cmds,
    ops_cmds,
    check_cmds,
    timings_cmds,
    load_cmds,
    render_cmds,
    api_cmds,
):
    for _command in getattr(_module, "commands", []):
        main.add_command(_command)
    for _command in getattr(_module, "bench_commands", []):
        bench.add_command(_command)
