"""`shareprice bench api`: the HTTP API's old endpoints against the old way, and under load."""

from __future__ import annotations

import click
import orjson

from shareprice.cli.common import friendly_errors, url_option


def _operator_ids(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    ids = []
    for part in value.split(","):
        if not part.strip().isdigit():
            raise click.BadParameter(
                f"{part!r} is not an operator id; give ids like 0,1,2,3", ctx=ctx, param=param
            )
        ids.append(int(part))
    return tuple(sorted(set(ids)))


@click.command("api")
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output).")
@click.option(
    "--operators",
    default="0,1,2,3",
    show_default=True,
    callback=_operator_ids,
    help="Operators the requests narrow the maps to (the old frontend drew 0-3).",
)
@click.option("--repeat", type=click.IntRange(1), default=5, show_default=True)
@click.option(
    "--v1-repeat", type=click.IntRange(1), default=1, show_default=True, help="Runs of the v1 path."
)
@click.option("--clients", type=click.IntRange(1), default=50, show_default=True)
@click.option(
    "--per-client", type=click.IntRange(1), default=8, show_default=True, help="Requests each."
)
@friendly_errors
def bench_api(
    url: str | None,
    as_json: bool,
    operators: tuple[int, ...],
    repeat: int,
    v1_repeat: int,
    clients: int,
    per_client: int,
) -> None:
    """Medians of /api/epochs-v2 (limit 50, 200, all; sample 1000) beside the v1 path, and
    p50/p95/errors under concurrent clients, on a real dashboard server."""
    from shareprice.bench import api as api_bench

    result = api_bench.run(
        url,
        operators=operators,
        repeat=repeat,
        v1_repeat=v1_repeat,
        clients=clients,
        per_client=per_client,
        echo=lambda t: click.echo(t, err=True),
    )
    click.echo(orjson.dumps(result).decode())


commands: list[click.Command] = []
bench_commands: list[click.Command] = [bench_api]
