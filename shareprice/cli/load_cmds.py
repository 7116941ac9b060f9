"""`shareprice bench load`: concurrent sessions on the explorer (not part of the tests)."""

from __future__ import annotations

import click
import orjson

from shareprice.cli.common import friendly_errors, url_option
from shareprice.store import config

#: --browser drives real Chromium tabs; more than this many on a small machine measures Chromium.
BROWSER_MAX_SESSIONS = 20


def _levels(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    levels: list[int] = []
    for part in value.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise click.BadParameter(
                f"{part!r} is not a positive whole number; give session counts like 10,50,100",
                ctx=ctx,
                param=param,
            )
        levels.append(int(part))
    return levels


@click.command("load")
@url_option
@click.option(
    "--sessions",
    default="10",
    show_default=True,
    callback=_levels,
    help="Simultaneous sessions; a comma list (10,50,100) runs one level each.",
)
@click.option("--reruns", default=5, show_default=True, help="Preset clicks per session.")
@click.option(
    "--think",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Mean seconds a session waits between clicks (uniform 0.5x-1.5x); 0 clicks at once.",
)
@click.option(
    "--live/--no-live",
    default=True,
    show_default=True,
    help="While thinking, rerun the explorer's live fragment on its timer, as a browser does "
    "(--no-live: viewers with Live off).",
)
@click.option("--timeout", default=180.0, show_default=True, help="Seconds allowed per run.")
@click.option(
    "--browser",
    is_flag=True,
    help=f"Real Chromium tabs instead of protocol sessions (at most {BROWSER_MAX_SESSIONS}).",
)
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON object.")
@friendly_errors
def bench_load(
    url: str | None,
    sessions: list[int],
    reruns: int,
    think: float,
    live: bool,
    timeout: float,
    browser: bool,
    as_json: bool,
) -> None:
    """Open the explorer in N sessions at once and click through the range presets.

    Each session is a websocket speaking Streamlit's own protocol (no browser), unless
    --browser. Per level (a fresh dashboard each): sessions served, errors, server rerun time
    p50/p95 (the explorer's own 'Server time'), first-view p95, client latency beside it, and
    the dashboard's peak RSS.
    """
    from shareprice.bench import load

    if browser and max(sessions) > BROWSER_MAX_SESSIONS:
        raise click.BadParameter(
            f"--browser runs at most {BROWSER_MAX_SESSIONS} tabs (got {max(sessions)}); "
            "drop --browser for more sessions",
            param_hint="--sessions",
        )
    database_url = url or config.configured_url()

    def progress(level: dict) -> None:
        if not as_json:
            click.echo(
                f"{level['sessions']:>4} sessions: {level['ok']} ok, {level['errors']} errors, "
                f"rerun p50 {level['rerun_p50_ms']} ms p95 {level['rerun_p95_ms']} ms, "
                f"first view p95 {level['first_view_p95_ms']} ms, "
                f"RSS peak {level['rss_peak_mb']} MB",
                err=True,
            )

    if not as_json:
        click.echo(
            f"{','.join(map(str, sessions))} sessions x {reruns} reruns against "
            f"{config.mask_url(database_url) if database_url else 'the embedded database'}",
            err=True,
        )
    result = load.run_load(
        database_url,
        sessions,
        reruns=reruns,
        timeout_s=timeout,
        think_s=think,
        browser=browser,
        live=live,
        progress=progress,
    )
    click.echo(orjson.dumps(result).decode())


commands: list[click.Command] = []
bench_commands: list[click.Command] = [bench_load]
