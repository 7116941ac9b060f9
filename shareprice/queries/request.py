"""What a caller asks for (`SeriesRequest`) and how it becomes SQL: the resolved epoch `Window`,
the `Plan` (statement and parameters) a v2 query runs, and the WHERE conditions both paths share.

Validation happens here, once, when a request is built: a bad range or too few points is a
`RequestError` naming the parameter, before any connection is taken. A request is frozen and
hashable so it can key a cache. "Last N epochs" is resolved against the data (`resolve_window`)
by the path that answers it: v2 asks the normalized tables, v1 the raw ones.

Filters are composed with psycopg's `sql` module and every value is a bound parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from shareprice.errors import ShareError
from shareprice.queries.connection import scalar_row

#: Downsampling keeps, per bucket, the first and last point, the min and max price, and the
#: min and max change per epoch: six points, so a bucket never holds more than that.
POINTS_PER_BUCKET = 6
MIN_MAX_POINTS = POINTS_PER_BUCKET
#: Points per operator (and band epochs) the explorer sends to the browser: about one per pixel
#: column of a wide chart; with ~3 distinct points per bucket in practice, far fewer are drawn.
DEFAULT_MAX_POINTS = 1200


class RequestError(ShareError, ValueError):
    """A request that cannot be answered as asked (bad range, too few points)."""


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    """What to read: which operators, which epochs, and at most how many points per operator.

    Epochs: `last_epochs` (the last N epochs of the data) wins over `epoch_from`/`epoch_to`
    (inclusive; either may be None = open); all None = every epoch. Operators: None = all.
    Hashable and comparable, so it can key a cache.
    """

    operators: tuple[int, ...] | None = None
    epoch_from: int | None = None
    epoch_to: int | None = None
    last_epochs: int | None = None
    max_points: int | None = None

    def __post_init__(self) -> None:
        if self.operators is not None:
            ops = tuple(sorted({int(o) for o in self.operators}))
            if any(o < 0 or o >= 2**63 for o in ops):
                raise RequestError("operator ids are 0 .. 2^63-1")
            object.__setattr__(self, "operators", ops)
        for name in ("epoch_from", "epoch_to", "last_epochs", "max_points"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0 or value >= 2**31):
                raise RequestError(f"{name} must be an integer 0 .. 2^31-1, got {value!r}")
        if self.last_epochs is not None and self.last_epochs < 1:
            raise RequestError("last_epochs must be at least 1")
        if (
            self.epoch_from is not None
            and self.epoch_to is not None
            and self.epoch_from > self.epoch_to
        ):
            raise RequestError(f"epoch_from {self.epoch_from} is after epoch_to {self.epoch_to}")
        if self.max_points is not None and self.max_points < MIN_MAX_POINTS:
            raise RequestError(f"max_points must be at least {MIN_MAX_POINTS}")


@dataclass(frozen=True, slots=True)
class Window:
    """A request's epochs resolved against the data: inclusive bounds, None = open."""

    lo: int | None
    hi: int | None

    @property
    def empty(self) -> bool:
        return self.lo is not None and self.hi is not None and self.lo > self.hi


@dataclass(frozen=True, slots=True)
class Plan:
    """The SQL a v2 query runs, so a benchmark can fetch the very same rows another way."""

    name: str
    query: sql.SQL | sql.Composed
    params: dict[str, Any]


# The latest epoch the normalized tables hold (v2) / the raw table holds (v1). Both are small
# index lookups; on fully backfilled data they agree, so both paths resolve "last N" alike.
LATEST_NORMALIZED_SQL = "SELECT max(epoch) FROM epoch_normalizations"
LATEST_RAW_SQL = "SELECT max(epoch) FROM epochs"


def resolve_window(conn: psycopg.Connection, request: SeriesRequest, latest_sql: str) -> Window:
    """The request's epochs as inclusive bounds; "last N" counts back from `latest_sql`'s epoch."""
    if request.last_epochs is None:
        return Window(request.epoch_from, request.epoch_to)
    (latest,) = scalar_row(conn, "latest_epoch", latest_sql)
    if latest is None:
        return Window(1, 0)  # no data: an empty window
    return Window(max(0, latest - request.last_epochs + 1), latest)


def filters(
    operators: tuple[int, ...] | None, window: Window, *aliases: str
) -> tuple[sql.Composable, dict[str, Any]]:
    """WHERE conditions for operators and epochs, repeated per table alias so the planner can
    push them into both sides of the price/shares join. Values are always bound parameters."""
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for alias in aliases:
        table = sql.Identifier(alias)
        if operators is not None:
            parts.append(sql.SQL("{}.operator_id = ANY(%(operators)s)").format(table))
            params["operators"] = list(operators)
        if window.lo is not None:
            parts.append(sql.SQL("{}.epoch >= %(epoch_lo)s").format(table))
            params["epoch_lo"] = window.lo
        if window.hi is not None:
            parts.append(sql.SQL("{}.epoch <= %(epoch_hi)s").format(table))
            params["epoch_hi"] = window.hi
    condition = sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")
    return condition, params
