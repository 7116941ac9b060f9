"""Least-privilege roles: the dashboard reads, only the CLI writes.

`shareprice_reader` can SELECT and nothing else (also `default_transaction_read_only`, so even a
future GRANT mistake cannot make the dashboard write); `shareprice_writer` can change rows for
import and backfill but not the schema (migrations and view swaps stay with the owner).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Engine

READER = "shareprice_reader"
WRITER = "shareprice_writer"


@dataclass(frozen=True)
class RoleResult:
    name: str
    created: bool
    password_set: bool


def _role_exists(conn, name: str) -> bool:
    return bool(
        conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).scalar()
    )


def ensure_roles(
    engine: Engine, reader_password: str | None = None, writer_password: str | None = None
) -> list[RoleResult]:
    """Create (idempotently) both roles and (re)apply their grants on the current database."""
    results: list[RoleResult] = []
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        database = conn.execute(text("SELECT current_database()")).scalar_one()

        def run(template: str, **parts: object) -> None:
            # DDL takes no bound parameters: identifiers and literals are quoted by psycopg.sql.
            composed = sql.SQL(template).format(
                **{
                    k: v if isinstance(v, sql.Composable) else sql.Identifier(str(v))
                    for k, v in parts.items()
                }
            )
            conn.exec_driver_sql(composed.as_string(raw))

        for name, password in ((READER, reader_password), (WRITER, writer_password)):
            created = not _role_exists(conn, name)
            if created:
                run("CREATE ROLE {role} LOGIN", role=name)
            if password:
                run("ALTER ROLE {role} PASSWORD {pw}", role=name, pw=sql.Literal(password))
            run("GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role}", db=database, role=name)
            run("GRANT USAGE ON SCHEMA public TO {role}", role=name)
            results.append(RoleResult(name, created, bool(password)))

        run("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}", role=READER)
        run("GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}", role=READER)
        run(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
            role=READER,
        )
        run(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON SEQUENCES TO {role}",
            role=READER,
        )
        run("ALTER ROLE {role} SET default_transaction_read_only = on", role=READER)

        run(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            role=WRITER,
        )
        run("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}", role=WRITER)
        run(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
            role=WRITER,
        )
        run(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}",
            role=WRITER,
        )
    return results
