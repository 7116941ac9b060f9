"""`shareprice bench render`: the explorer's first view and reruns against a bare plotly page."""

from __future__ import annotations

import click
import orjson

from shareprice.cli.common import friendly_errors
from shareprice.store import config


def _databases(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    databases: dict[str, str] = {}
    for value in values:
        label, sep, url = value.partition("=")
        if not sep or not label.isidentifier() or not url:
            raise click.BadParameter(
                f"{config.mask_url(value)!r} is not LABEL=URL (e.g. demo=postgresql://...)",
                ctx=ctx,
                param=param,
            )
        if label in databases:
            raise click.BadParameter(f"label {label!r} given twice", ctx=ctx, param=param)
        databases[label] = url
    return databases


@click.command("render")
@click.option(
    "--url",
    "databases",
    multiple=True,
    callback=_databases,
    metavar="LABEL=URL",
    help="A backfilled database to measure, e.g. demo=URL and seed=URL (repeatable). "
    "Default: the configured database as 'default'.",
)
@click.option(
    "--page",
    type=click.Choice(["explorer", "nominators"]),
    default="explorer",
    show_default=True,
    help="The page whose first view is measured (the Nominators page needs --address).",
)
@click.option(
    "--address",
    metavar="SS58|0xHEX",
    help="The nominator the Nominators page opens on (?address=).",
)
@click.option("--runs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--screenshots/--no-screenshots", default=True, help="Save first views in $TMPDIR.")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON object.")
@friendly_errors
def bench_render(
    databases: dict[str, str],
    page: str,
    address: str | None,
    runs: int,
    screenshots: bool,
    as_json: bool,
) -> None:
    """First view (ms, bytes) of the explorer (or the Nominators page) against a bare plotly
    page, and the explorer's widget reruns (server time median and p95), side by side in
    headless Chromium."""
    from shareprice.bench import render

    if page == "nominators" and not address:
        raise click.UsageError("--page nominators needs --address (SS58 or 0x hex)")
    if not databases:
        url = config.configured_url()
        if url is None:
            raise click.UsageError("give --url LABEL=URL (no database URL is configured)")
        databases = {"default": url}
    report = render.run(
        databases,
        runs=runs,
        screenshot_dir=render.default_screenshot_dir() if screenshots else None,
        page=page,
        address=address,
    )
    text = orjson.dumps(report, option=0 if as_json else orjson.OPT_INDENT_2).decode()
    click.echo(text)


bench_commands = [bench_render]
