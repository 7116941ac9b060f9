"""`shareprice views ...`: which definition `comprehensive_analytics` has, and the swap.

Thin over shareprice.store.analytics_view; a refused swap (ViewSwapRefused, a ShareError) is
one line through friendly_errors, and nothing was changed.
"""

from __future__ import annotations

import click

from shareprice.cli.common import engine_for, friendly_errors, url_option


@click.group("views")
def views_group() -> None:
    """Which definition `comprehensive_analytics` uses (v1: raw JSON, v2: normalized tables)."""


@views_group.command("status")
@url_option
@click.option(
    "--compare",
    "compare_last",
    type=int,
    default=None,
    help="Also diff v1 and v2 on the last N epochs.",
)
@friendly_errors
def views_status(url: str | None, compare_last: int | None) -> None:
    """Show the installed definition (and optionally whether v1 and v2 agree)."""
    from shareprice.store import analytics_view

    engine = engine_for(url)
    state = analytics_view.state(engine)
    click.echo(state.describe())
    if compare_last is not None:
        latest = analytics_view.latest_raw_epoch(engine)
        if latest is None:
            click.echo("no epochs to compare")
            return
        lo = max(0, latest - compare_last + 1)
        diff = analytics_view.differences(engine, lo, latest)
        if diff:
            for row in diff:
                click.echo(f"  {row}")
            raise click.ClickException(f"v1 and v2 differ on epochs {lo}-{latest}")
        click.echo(f"v1 and v2 agree on epochs {lo}-{latest}")


@views_group.command("use-v2")
@url_option
@click.option("--force", is_flag=True, help="Swap even while epochs are pending normalization.")
@friendly_errors
def views_use_v2(url: str | None, force: bool) -> None:
    """Swap comprehensive_analytics to v2 in one transaction (v1 kept as ..._old)."""
    from shareprice.store import analytics_view

    click.echo(analytics_view.use_v2(engine_for(url), force=force))


@views_group.command("rollback")
@url_option
@friendly_errors
def views_rollback(url: str | None) -> None:
    """Swap comprehensive_analytics back to v1."""
    from shareprice.store import analytics_view

    click.echo(analytics_view.rollback(engine_for(url)))


commands: list[click.Command] = [views_group]
bench_commands: list[click.Command] = []
