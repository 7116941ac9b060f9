"""Schema migrations: `sql/NNN_name.sql` files applied in order, each once, with a checksum.

Each file runs in its own transaction together with its `schema_migrations` row, so a failed
migration leaves nothing half-applied. An applied file whose text changed afterwards is refused:
the fix for a shipped migration is a new migration, never an edit.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Engine

from shareprice.errors import ShareError, error_line
from shareprice.store import locks


def _shipped_sql_dir() -> Traversable:
    """The migrations: top-level `sql/` in a checkout, shipped as `shareprice.sql` in the wheel.

    pyproject maps the package `shareprice.sql` onto the top-level folder, so one copy of the
    files serves both; reading them through importlib.resources works from a wheel, a zip or an
    editable install alike. A plain source tree (no install at all) falls back to the folder.
    """
    try:
        return resources.files("shareprice.sql")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "sql"


SQL_DIR = _shipped_sql_dir()
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

# Serializes concurrent `migrate` calls (two test workers, make run + CLI) on one database.
_MIGRATION_LOCK_KEY = locks.MIGRATION

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class MigrationError(ShareError, RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Traversable
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(sql_dir: Traversable = SQL_DIR) -> list[Migration]:
    found: list[Migration] = []
    files = [p for p in sql_dir.iterdir() if p.name.endswith(".sql") and p.is_file()]
    for path in sorted(files, key=lambda p: p.name):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_lower_snake.sql")
        found.append(Migration(int(match.group(1)), path.name, path, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number in {sql_dir}")
    return found


def migrate(engine: Engine, sql_dir: Traversable = SQL_DIR) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    migrations = discover(sql_dir)
    applied_now: list[str] = []
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        conn.execute(text(_CREATE_TABLE))
    for migration in migrations:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            row = conn.execute(
                text("SELECT name, checksum FROM schema_migrations WHERE version = :v"),
                {"v": migration.version},
            ).one_or_none()
            if row is not None:
                if row.checksum != migration.checksum:
                    raise MigrationError(
                        f"{migration.name} was applied (as {row.name}) and has been edited since: "
                        "its checksum no longer matches schema_migrations. Revert the edit and "
                        "put the change in a new migration file."
                    )
                continue
            # Straight to psycopg with no parameters: the file may hold many statements,
            # dollar-quoted bodies and format('%I') calls, which must not be read as placeholders.
            try:
                driver = conn.connection.driver_connection
                assert driver is not None  # an open connection has its driver connection
                driver.execute(migration.sql)
            except psycopg.Error as exc:
                raise MigrationError(
                    f"{migration.name} failed, nothing of it was applied: {error_line(exc)}"
                ) from exc
            conn.execute(
                text("INSERT INTO schema_migrations (version, name, checksum) VALUES (:v, :n, :c)"),
                {"v": migration.version, "n": migration.name, "c": migration.checksum},
            )
            applied_now.append(migration.name)
    return applied_now


def applied(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT to_regclass('schema_migrations') IS NOT NULL")).scalar()
        if not exists:
            return []
        rows = conn.execute(text("SELECT version, name FROM schema_migrations ORDER BY version"))
        return [(r.version, r.name) for r in rows]
