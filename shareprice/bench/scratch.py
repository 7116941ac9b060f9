"""Scratch databases for benchmarks: a clone of the database to measure, dropped after.

Benchmarks never modify the database they are pointed at: they measure on a copy made with
CREATE DATABASE ... TEMPLATE (a file copy, seconds for gigabytes) on the same server.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from shareprice.store import db

Echo = Callable[[str], None]


def admin(url: URL) -> psycopg.Connection:
    """An autocommit connection to the server's `postgres` database (for CREATE/DROP DATABASE)."""
    return db.connect(url.set(database="postgres"), autocommit=True)


def drop(url: URL, name: str) -> None:
    db.forget_engine(url.set(database=name))
    with admin(url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def clone(source: URL, name: str, echo: Echo) -> URL:
    """CREATE DATABASE ... TEMPLATE: a file copy, seconds for GBs, while nobody is connected
    to the source. Others may be (benchmarks share it), so retry for a while."""
    target = source.set(database=name)
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
        sql.Identifier(name), sql.Identifier(str(source.database))
    )
    deadline = time.monotonic() + 600
    while True:
        try:
            with admin(source) as conn:
                conn.execute(statement)
            return target
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            echo(f"{source.database} is in use by another session; retrying the clone ...")
            time.sleep(5)
