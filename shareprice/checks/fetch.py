"""Reading many rows cheaply inside a check run's transaction.

The checks that walk whole tables read millions of rows at seed scale (~3 M position change
rows, 3.5 M operator states). Through a SQLAlchemy result each row costs a few microseconds
more than the driver's own fetch, and every NUMERIC(40,0) arrives as a Decimal only to be made
an int. These helpers read through the run's own connection (same transaction, same snapshot)
with the driver's cursor: plain tuples, or named tuples, and NUMERIC loaded straight as int.
"""

from __future__ import annotations

from typing import Any

from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Connection


class IntegerLoader(Loader):
    """A NUMERIC's text straight to int. Only for statements whose NUMERIC columns are all
    integers (the normalized tables' NUMERIC(40,0)): a fraction would raise, never round."""

    def load(self, data: Buffer) -> int:
        return int(bytes(data))


def _driver(conn: Connection) -> Any:
    driver = conn.connection.driver_connection
    assert driver is not None
    return driver


def rows(conn: Connection, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """All rows of `sql` (psycopg's %(name)s parameters) as plain tuples, NUMERIC as int."""
    with _driver(conn).cursor() as cur:
        cur.adapters.register_loader("numeric", IntegerLoader)
        return cur.execute(sql, params).fetchall()


def binary_rows(conn: Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    """All rows of `sql` as named tuples, in binary: text arrays travel as plain strings (the
    text format quotes and backslash-escapes every '"' inside them on the server, and the
    client undoes it), for statements that ship JSON entry texts in bulk."""
    with _driver(conn).cursor(binary=True, row_factory=namedtuple_row) as cur:
        return cur.execute(sql, params).fetchall()
