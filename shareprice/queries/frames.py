"""Frames of exact integers, and the few conversions allowed at the edge.

Stake, shares and prices exceed 2^64, so frames carry them as `pl.Int128`; floats are computed
from them at the very end, for drawing only (`float_column`). `perq_to_decimal` is the exact
decimal text of a 1e18-scaled integer, for tables and exports; `frames_equal` is the v1 == v2
check the benchmarks and tests use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import polars as pl

from shareprice.chain.records import PERQ


def frame_from_rows(rows: list[tuple], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A frame of `schema` from row tuples (Python ints stay exact in Int128 columns)."""
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    return pl.DataFrame(
        [
            pl.Series(name, list(values), dtype=dtype)
            for (name, dtype), values in zip(schema.items(), columns, strict=True)
        ]
    )


def float_column(column: str) -> pl.Expr:
    """An exact column as float64: for drawing only, never for arithmetic on prices."""
    return pl.col(column).cast(pl.Float64)


def perq_to_decimal(value: int | None) -> str | None:
    """An exact decimal string of a 1e18-scaled integer: 1000036353676459997 -> 1.000036353676459997."""
    if value is None:
        return None
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), PERQ)
    return f"{sign}{whole}.{frac:018d}"


def frames_equal(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Same columns, dtypes and values (nulls equal): the v1 == v2 check."""
    return a.schema == b.schema and a.equals(b)


def hole_aware_buckets(
    n: int, max_buckets: int, after_hole: Sequence[bool]
) -> Iterator[tuple[int, int]]:
    """(start, end) of the buckets the Python downsamplers (the SQL's twins) split n sorted
    rows into: as many as `max_buckets` less one per hole, by position, each ending early where
    a hole starts (`after_hole[i]`: row i lies more than one epoch after row i-1), so no bucket
    ever bridges a hole and both sides of it are kept."""
    buckets = max(1, max_buckets - sum(after_hole))
    start = 0
    while start < n:
        bucket = start * buckets // n
        end = start + 1
        while end < n and end * buckets // n == bucket and not after_hole[end]:
            end += 1
        yield start, end
        start = end
