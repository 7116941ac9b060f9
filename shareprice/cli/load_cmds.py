"""`shareprice bench load`: concurrent browser sessions on the explorer (not part of the tests)."""

from __future__ import annotations

import click
import orjson

from shareprice.cli.common import friendly_errors, url_option
from shareprice.store import config


@click.command("load")
@url_option
@click.option("--sessions", default=10, show_default=True, help="Simultaneous browser sessions.")
@click.option("--reruns", default=5, show_default=True, help="Widget changes per session.")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds allowed per run.")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON object.")
@friendly_errors
def bench_load(url: str | None, sessions: int, reruns: int, timeout: float, as_json: bool) -> None:
    """Open the explorer in N Chromium tabs at once and click through range presets.

    Reports first-view time, server rerun time p50/p95 (the explorer's own 'Server time'),
    client latency and the dashboard's RSS.
    """
    from shareprice.bench import load

    database_url = url or config.configured_url()
    if not as_json:
        click.echo(
            f"{sessions} sessions x {reruns} reruns against "
            f"{config.mask_url(database_url) if database_url else 'the embedded database'}",
            err=True,
        )
    result = load.run_load(database_url, sessions=sessions, reruns=reruns, timeout_s=timeout)
    click.echo(orjson.dumps(result).decode())


commands: list[click.Command] = []
bench_commands: list[click.Command] = [bench_load]
