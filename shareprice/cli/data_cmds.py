"""`shareprice demo`, `shareprice import` and `shareprice bench parse`: raw epoch data in."""

from __future__ import annotations

import json
import sys

import click

from shareprice.cli.common import engine_for, friendly_errors, url_option
from shareprice.store import config


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
    from shareprice.ingest import generator
    from shareprice.store import migrate

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


@click.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--replace",
    is_flag=True,
    help="Overwrite stored epochs whose document differs (default: keep them, report conflicts).",
)
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@friendly_errors
def import_cmd(paths: tuple[str, ...], replace: bool, url: str | None, as_json: bool) -> None:
    """Import epoch documents (JSON array, NDJSON or directories of them; either format).

    Idempotent: an epoch already stored with the same JSON content is skipped and counted; a
    different document for a stored epoch is reported and kept unless --replace. Invalid
    documents are listed with their reason and never written; the others still are. Exit
    status 1 when anything was invalid or conflicting.
    """
    from shareprice.ingest import importer
    from shareprice.store import migrate

    engine = engine_for(url)
    migrate.migrate(engine)
    summary = importer.import_paths(engine, paths, replace=replace)
    if as_json:
        out = summary.as_dict()
        out["conflicting_epochs"] = summary.conflicting
        out["replaced_epochs"] = summary.replaced
        out["invalid_documents"] = [{"source": s, "reason": r} for s, r in summary.invalid]
        click.echo(json.dumps(out))
    else:
        counts = summary.as_dict()
        click.echo(
            f"read {counts['read']:,} documents from {counts['files']} file(s): "
            f"{counts['inserted']:,} inserted, {counts['identical_skipped']:,} identical skipped, "
            f"{counts['conflicting']:,} conflicting, {counts['replaced']:,} replaced, "
            f"{counts['invalid']:,} invalid"
        )
        if summary.conflicting:
            click.echo(
                f"conflicting (stored document differs, kept; --replace overwrites): epochs "
                f"{_ranges(summary.conflicting)}"
            )
        if summary.replaced:
            click.echo(f"replaced: epochs {_ranges(summary.replaced)}")
        for source, reason in summary.invalid[:50]:
            click.echo(f"invalid: {source}: {reason}")
        if len(summary.invalid) > 50:
            click.echo(f"... and {len(summary.invalid) - 50} more invalid documents")
    if not summary.ok:
        sys.exit(1)


def _ranges(epochs: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7' (a long list of epochs stays one readable line)."""
    parts: list[str] = []
    ordered = sorted(set(epochs))
    start = prev = ordered[0]
    for epoch in [*ordered[1:], None]:
        if epoch is not None and epoch == prev + 1:
            prev = epoch
            continue
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
        if epoch is not None:
            start = prev = epoch
    return ", ".join(parts)


@click.command("parse")
@url_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Newest N epochs only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default).")
@friendly_errors
def bench_parse_cmd(url: str | None, limit: int | None, as_json: bool) -> None:
    """Fetch + parse throughput over stored documents (full document vs backfill fast path)."""
    from shareprice.bench.parse import bench_parse

    engine = engine_for(url)
    click.echo(json.dumps(bench_parse(engine, limit=limit)))


commands: list[click.Command] = [demo_cmd, import_cmd]
bench_commands: list[click.Command] = [bench_parse_cmd]
