"""`shareprice demo`, `shareprice import` and `shareprice bench parse`: raw epoch data in."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from shareprice import config
from shareprice.cli.common import engine_for, friendly_errors, url_option


@click.command("demo")
@click.option(
    "--profile",
    type=click.Choice(["demo", "seed-scale", "small"]),
    default="demo",
    show_default=True,
    help="demo: what `make run` loads; seed-scale: 3,734 epochs x ~940 operators (benchmarks).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same data.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the profile.")
@click.option(
    "--operators",
    type=click.IntRange(min=1),
    default=None,
    help="Operators ever registered (overrides the profile).",
)
@url_option
@friendly_errors
def demo_cmd(
    profile: str, seed: int, epochs: int | None, operators: int | None, url: str | None
) -> None:
    """Fill an EMPTY database with realistic generated Format A documents (one transaction)."""
    from shareprice import generator, migrate

    engine = engine_for(url)
    migrate.migrate(engine)
    resolved = generator.resolve_profile(profile, epochs, operators)
    click.echo(
        f"generating {resolved.epochs:,} epochs x {resolved.operators:,} operators "
        f"(profile {resolved.name}, seed {seed}) into {config.mask_url(engine.url)}",
        err=True,
    )
    with click.progressbar(
        length=resolved.epochs, label="epochs", file=sys.stderr, show_pos=True, show_eta=True
    ) as bar:
        try:
            summary = generator.generate(
                engine, resolved, seed=seed, progress=bar.update if resolved.epochs >= 200 else None
            )
        except generator.DatabaseNotEmpty as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(
        f"wrote {summary.epochs:,} epochs, {summary.operator_states:,} operator states, "
        f"{summary.chain_entries:,} chain price entries, {summary.json_bytes / 1e6:,.1f} MB of JSON "
        f"in {summary.seconds:.1f}s ({len(summary.slashed)} slashed, "
        f"{len(summary.deregistered)} deregistered operators)"
    )


@click.command("parse")
@url_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Newest N epochs only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default).")
@friendly_errors
def bench_parse_cmd(url: str | None, limit: int | None, as_json: bool) -> None:
    """Fetch + parse throughput over stored documents (full document vs backfill fast path)."""
    from shareprice.parse_bench import bench_parse

    engine = engine_for(url)
    click.echo(json.dumps(bench_parse(engine, limit=limit)))


commands: list[click.Command] = [demo_cmd]
bench_commands: list[click.Command] = [bench_parse_cmd]
_ = Path
