"""`shareprice backup` and `shareprice restore`: a dump with a manifest, and a verified restore.

Thin: options in, shareprice.store.backup does the work; its BackupError (a ShareError) becomes
one masked line through friendly_errors.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from shareprice.cli.common import engine_for, friendly_errors, url_option


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@click.command("backup")
@url_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("backups"),
    show_default=True,
    help="Parent directory; the backup goes into <out>/<UTC timestamp>/.",
)
@click.option(
    "--verify",
    "verify_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Check this backup instead (sha256, listing, test restore into a scratch database).",
)
@click.option("--no-restore-test", is_flag=True, help="With --verify: skip the test restore.")
@click.option(
    "--compress",
    default=None,
    help="pg_dump --compress value [gzip:1]; 'none' for speed over size.",
)
@friendly_errors
def backup_cmd(
    url: str | None,
    out: Path,
    verify_dir: Path | None,
    no_restore_test: bool,
    compress: str | None,
) -> None:
    """Dump the database (pg_dump custom format) with a manifest of row counts and checksums."""
    from shareprice.store import backup

    echo = lambda text: click.echo(text, err=True)  # noqa: E731
    if verify_dir is not None:
        engine = None if no_restore_test else engine_for(url)
        started = time.perf_counter()
        verified = backup.verify_backup(verify_dir, engine, echo=echo)
        if not verified.ok:
            for problem in verified.problems:
                click.echo(f"  {problem}", err=True)
            raise click.ClickException(f"{verify_dir}: backup does NOT verify")
        what = "sha256 and listing" if engine is None else "sha256, listing and test restore"
        click.echo(
            f"{verify_dir}: OK ({what}; {verified.tables} tables, {verified.rows:,} rows) "
            f"in {time.perf_counter() - started:.1f}s"
        )
        return
    engine = engine_for(url)
    result = backup.create_backup(
        engine, out, compression=compress or backup.DEFAULT_COMPRESSION, echo=echo
    )
    tables = result.manifest["tables"]
    click.echo(
        f"backup {result.directory}: {_mb(result.dump_bytes)} dump, {len(tables)} tables, "
        f"{sum(t['rows'] for t in tables.values()):,} rows, in {result.seconds:.1f}s "
        f"(pg_dump {result.dump_seconds:.1f}s, checksums {result.checksum_seconds:.1f}s)"
    )


@click.command("restore")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--into", "into", required=True, help="URL of the (empty) database to restore into.")
@click.option("--force", is_flag=True, help="Restore even if the database is not empty.")
@click.option("--jobs", type=click.IntRange(1), default=2, show_default=True)
@friendly_errors
def restore_cmd(directory: Path, into: str, force: bool, jobs: int) -> None:
    """Restore a backup into a database and verify counts and checksums against its manifest."""
    from shareprice.store import backup

    result = backup.restore_backup(
        directory, into, force=force, jobs=jobs, echo=lambda t: click.echo(t, err=True)
    )
    comparison = result.comparison
    if not comparison.ok:
        for problem in comparison.problems:
            click.echo(f"  {problem}", err=True)
        raise click.ClickException(
            f"restored into {result.database}, but it does NOT match the manifest"
        )
    click.echo(
        f"restored {directory} into {result.database} in {result.seconds:.1f}s "
        f"(pg_restore {result.restore_seconds:.1f}s); {comparison.tables} tables, "
        f"{comparison.rows:,} rows: counts and checksums match the manifest"
    )


commands: list[click.Command] = [backup_cmd, restore_cmd]
bench_commands: list[click.Command] = []
