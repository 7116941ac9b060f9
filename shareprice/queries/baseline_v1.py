"""The v1 baseline: share prices the old way, by parsing every raw JSON document in Python.

Kept on purpose, and measured: `series_v1` / `band_v1` read `epochs.data` for the requested
epochs and parse each document with the shared parser, as the old `/api/epochs` did, then reduce
in Python exactly as v2 reduces in SQL, so both return identical frames (`frames_equal`).
`shareprice bench queries` and the timings page measure one against the other; the timings
page's EXPLAIN of v1 uses `raw_documents_plan`, the very statement v1 runs.

No statement timeout: a v1 read of every epoch can take tens of seconds at seed scale, and
that is the measurement.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import polars as pl
import psycopg
from psycopg import sql
from sqlalchemy.engine import Engine

from shareprice.queries.band import (
    BAND_EXACT_SCHEMA,
    BAND_FRACTIONS,
    downsample_band_rows,
    finish_band,
    percentile_disc,
)
from shareprice.queries.connection import connect, record
from shareprice.queries.frames import frame_from_rows
from shareprice.queries.request import (
    LATEST_RAW_SQL,
    Plan,
    SeriesRequest,
    Window,
    filters,
    resolve_window,
)
from shareprice.queries.series import (
    SERIES_EXACT_SCHEMA,
    downsample_rows,
    empty_series,
    finish_series,
)

# The raw documents of a window's epochs, in epoch order: all v1 reads from the database.
_RAW_DOCUMENTS_SQL = sql.SQL(
    "SELECT epoch, data::text FROM epochs WHERE {epochs_filter} ORDER BY epoch"
)


def _documents_plan(window: Window) -> Plan:
    epochs_filter, params = filters(None, window, "epochs")
    return Plan("v1_documents", _RAW_DOCUMENTS_SQL.format(epochs_filter=epochs_filter), params)


def raw_documents_plan(conn: psycopg.Connection, request: SeriesRequest) -> Plan | None:
    """The statement v1 runs for `request` (its window resolved against the raw table on
    `conn`), for an EXPLAIN of exactly what v1 reads; None when the window is empty."""
    window = resolve_window(conn, request, LATEST_RAW_SQL)
    return None if window.empty else _documents_plan(window)


def _raw_documents(conn: psycopg.Connection, window: Window) -> Iterator[Any]:
    """Parsed documents of the window's epochs, read in batches (never the whole table at once)."""
    from shareprice.chain.parser import parse_document

    plan = _documents_plan(window)
    started = time.perf_counter()
    count = 0
    with conn.cursor(name="v1_documents") as cur:
        cur.itersize = 50
        cur.execute(plan.query, plan.params)
        for _epoch, text in cur:
            count += 1
            yield parse_document(text)
    record("v1_documents", started, count)


def series_v1(engine: Engine, request: SeriesRequest) -> pl.DataFrame:
    """The same frame as series_v2, from the raw documents parsed in Python."""
    wanted = None if request.operators is None else set(request.operators)
    per_operator: dict[int, list[tuple]] = {}
    with connect(engine, timeout_ms=None) as conn:
        window = resolve_window(conn, request, LATEST_RAW_SQL)
        if window.empty:
            return finish_series(empty_series())
        for record in _raw_documents(conn, window):
            for state in record.operators:
                if wanted is not None and state.operator_id not in wanted:
                    continue
                per_operator.setdefault(state.operator_id, []).append(
                    (
                        state.operator_id,
                        record.epoch,
                        state.share_price_perq,
                        state.stake,
                        state.shares,
                        state.rewards,
                    )
                )
    rows: list[tuple] = []
    for operator_id in sorted(per_operator):
        operator_rows = _with_previous(per_operator[operator_id])
        if request.max_points is not None:
            operator_rows = downsample_rows(operator_rows, request.max_points)
        rows.extend(operator_rows)
    return finish_series(frame_from_rows(rows, SERIES_EXACT_SCHEMA))


def _with_previous(rows: list[tuple]) -> list[tuple]:
    """Append (prev_epoch, prev_share_price_perq) to each row of one operator, sorted by epoch."""
    rows.sort(key=lambda row: row[1])
    out = []
    previous: tuple | None = None
    for row in rows:
        out.append((*row, *((previous[1], previous[2]) if previous else (None, None))))
        previous = row
    return out


def band_v1(engine: Engine, request: SeriesRequest) -> pl.DataFrame:
    rows = []
    with connect(engine, timeout_ms=None) as conn:
        window = resolve_window(conn, request, LATEST_RAW_SQL)
        if window.empty:
            return finish_band(pl.DataFrame(schema=BAND_EXACT_SCHEMA))
        for record in _raw_documents(conn, window):
            prices = sorted(state.share_price_perq for state in record.operators)
            if prices:
                rows.append(
                    (
                        record.epoch,
                        len(prices),
                        *(percentile_disc(prices, f) for f in BAND_FRACTIONS),
                    )
                )
    rows.sort()
    if request.max_points is not None:
        rows = downsample_band_rows(rows, request.max_points)
    return finish_band(frame_from_rows(rows, BAND_EXACT_SCHEMA))
