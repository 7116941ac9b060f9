"""`shareprice db ...` and `shareprice migrate`: the database's life cycle."""

from __future__ import annotations

import time

import click

from shareprice.cli.common import engine_for, friendly_errors, url_option
from shareprice.store import config, db, migrate


@click.group("db")
def db_group() -> None:
    """Manage the embedded PostgreSQL server (data dir: SHAREPRICE_DATA_DIR)."""


@db_group.command("up")
@friendly_errors
def db_up() -> None:
    """Start the embedded server (reused when it already runs)."""
    started = time.perf_counter()
    url = db.embedded_up()
    status = db.embedded_status()
    click.echo(
        f"embedded PostgreSQL {status.version} running (pid {status.pid}) "
        f"in {status.data_dir} [{time.perf_counter() - started:.2f}s]"
    )
    click.echo(config.mask_url(url))


@db_group.command("down")
@friendly_errors
def db_down() -> None:
    """Stop the embedded server."""
    if db.embedded_down():
        click.echo(f"stopped embedded PostgreSQL in {config.data_dir()}")
    else:
        click.echo(f"embedded PostgreSQL in {config.data_dir()} was not running")


@db_group.command("status")
@friendly_errors
def db_status() -> None:
    """Where the data dir is, the server version, whether it runs."""
    external = config.configured_url()
    if external:
        click.echo(f"external database: {config.mask_url(external)}")
    status = db.embedded_status()
    click.echo(f"data dir:    {status.data_dir}")
    click.echo(f"initialized: {'yes' if status.initialized else 'no'}")
    click.echo(f"version:     PostgreSQL {status.version or '-'} (embedded)")
    click.echo(f"running:     {f'yes, pid {status.pid}' if status.running else 'no'}")
    if status.running and status.url:
        click.echo(f"url:         {config.mask_url(status.url)}")


@db_group.command("url")
@click.option("--reveal", is_flag=True, help="Print the password instead of masking it.")
@friendly_errors
def db_url(reveal: bool) -> None:
    """Print a SQLAlchemy URL other tools can connect with (last line)."""
    url = db.resolve_url()
    rendered = url.render_as_string(hide_password=False)
    click.echo(rendered if reveal else config.mask_url(rendered))


@db_group.command("roles")
@url_option
@click.option(
    "--reader-password-env",
    metavar="VAR",
    help="Set shareprice_reader's password from this environment variable (never from argv).",
)
@click.option(
    "--writer-password-env",
    metavar="VAR",
    help="Set shareprice_writer's password from this environment variable.",
)
@friendly_errors
def db_roles(
    url: str | None, reader_password_env: str | None, writer_password_env: str | None
) -> None:
    """Create the read-only dashboard role and the import/backfill role (idempotent)."""
    import os

    from shareprice.store import roles

    def password(var: str | None) -> str | None:
        if var is None:
            return None
        value = os.environ.get(var)
        if not value:
            raise click.ClickException(f"environment variable {var} is empty or not set")
        return value

    engine = engine_for(url)
    results = roles.ensure_roles(
        engine, password(reader_password_env), password(writer_password_env)
    )
    for result in results:
        state = "created" if result.created else "exists, grants refreshed"
        pw = "password set" if result.password_set else "password unchanged"
        click.echo(f"{result.name}: {state}; {pw}")
    reader_url = engine.url.set(
        username=roles.READER, password="***" if reader_password_env else None
    )
    writer_url = engine.url.set(
        username=roles.WRITER, password="***" if writer_password_env else None
    )
    click.echo("")
    click.echo("Use them:")
    click.echo(f"  dashboard (read-only):  SHAREPRICE_READONLY_URL='{config.mask_url(reader_url)}'")
    click.echo(f"  import / backfill:      SHAREPRICE_DATABASE_URL='{config.mask_url(writer_url)}'")
    click.echo("  migrations, view swaps and restores keep using the owner's URL.")
    click.echo("  (replace *** by the password; or put the URLs in .streamlit/secrets.toml)")


@click.command("migrate")
@url_option
@friendly_errors
def migrate_cmd(url: str | None) -> None:
    """Apply pending sql/NNN_*.sql migrations (each once)."""
    engine = engine_for(url)
    names = migrate.migrate(engine)
    if names:
        for name in names:
            click.echo(f"applied {name}")
    else:
        click.echo("schema up to date")


@click.command("prepare")
@url_option
@click.option("--no-demo", is_flag=True, help="Do not load demo data into an empty database.")
@friendly_errors
def prepare_cmd(url: str | None, no_demo: bool) -> None:
    """Start the database, migrate, load demo data when empty, normalize (what `make run` does)."""
    from shareprice import prepare

    started = time.perf_counter()
    engine = engine_for(url)
    click.echo(f"database: {config.mask_url(engine.url)}")
    prepare.prepare(engine, echo=click.echo, demo=not no_demo)
    click.echo(f"ready in {time.perf_counter() - started:.1f}s")


commands: list[click.Command] = [db_group, migrate_cmd, prepare_cmd]
bench_commands: list[click.Command] = []
