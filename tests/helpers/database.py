"""Databases for tests: one per test, cloned from a migrated template in milliseconds.

Also the session's test role and its password, made fresh for each session so every URL a test
hands to the CLI, Streamlit or a log carries a real secret; conftest fails the session if that
secret shows up in anything pytest captured.
"""

from __future__ import annotations

import itertools
import os
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import URL

from shareprice.store import config, db

TEMPLATE_DB = "shareprice_template"
TEST_ROLE = "shareprice_test"
TEST_PASSWORD = "tpw-" + secrets.token_urlsafe(18)
#: Test ids whose captured output contained TEST_PASSWORD (filled by conftest's report hook).
captured_leaks: list[str] = []
_counter = itertools.count()


def admin_exec(admin_url: URL, sql: str) -> None:
    engine = sa.create_engine(config.normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def new_database(admin_url: URL, template: str | None) -> URL:
    name = f"t_{os.getpid()}_{next(_counter)}"
    clause = f" TEMPLATE {template}" if template else ""
    admin_exec(admin_url, f"CREATE DATABASE {name}{clause}")
    return admin_url.set(database=name)


def drop_database(admin_url: URL, url: URL) -> None:
    db.forget_engine(url)
    admin_exec(admin_url, f"DROP DATABASE IF EXISTS {url.database} WITH (FORCE)")


def clone_database(admin_url: URL, url: URL) -> URL:
    """A new database copied from `url`'s (CREATE DATABASE ... TEMPLATE): for a test that must
    write to data a session fixture built. Drop it with drop_database when done.

    PostgreSQL refuses to copy a database others are connected to, so this process's cached
    engine for the source is disposed first; do not keep other connections to it open.
    """
    db.forget_engine(url)
    return new_database(admin_url, url.database)


def record_leaks(report) -> None:
    """Remember a test whose captured output or failure text contains the test password."""
    texts = [content for _, content in report.sections]
    if report.longrepr is not None:
        texts.append(str(report.longrepr))
    if any(TEST_PASSWORD in text for text in texts):
        captured_leaks.append(f"{report.nodeid} ({report.when})")
