"""Epochs: the data version, the summary counts, the epoch rate and the dates of epochs.

`data_version` is part of every cache key: it changes whenever a backfill writes, so new data
shows at once and a cached frame is never stale. `summary` gives the pages their empty states
and the range slider its bounds. The chain does not say how many epochs make a day, so
`epoch_rate` derives it from the data (end blocks, else live-looking timestamps, else the
nominal 120; see `yields`); `epoch_dates` shows dates only when the timestamps are trustworthy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import polars as pl
from sqlalchemy.engine import Engine

from shareprice.queries import yields
from shareprice.queries.connection import connect, record, scalar_row


@dataclass(frozen=True, slots=True)
class DataSummary:
    raw_epochs: int
    normalized_epochs: int
    first_epoch: int | None
    last_epoch: int | None
    operators: int
    data_version: int

    @property
    def empty(self) -> bool:
        return self.raw_epochs == 0 and self.normalized_epochs == 0


# last_value of the sequence every backfill batch and metadata edit advances: one tuple read.
_DATA_VERSION_SQL = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM data_version_seq"


def data_version(engine: Engine) -> int:
    """Changes whenever a backfill writes; part of every cache key so new data shows at once."""
    with connect(engine) as conn:
        return int(scalar_row(conn, "data_version", _DATA_VERSION_SQL)[0])


# Counts for the page's empty states and the range slider's bounds. epochs is small in its main
# heap (documents are TOASTed), epoch_normalizations and operators_metadata are small tables.
_SUMMARY_SQL = """
SELECT (SELECT count(*) FROM epochs),
       (SELECT count(*) FROM epoch_normalizations),
       (SELECT min(epoch) FROM epoch_normalizations),
       (SELECT max(epoch) FROM epoch_normalizations),
       (SELECT count(*) FROM operators_metadata),
       (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM data_version_seq)
"""


def summary(engine: Engine) -> DataSummary:
    with connect(engine) as conn:
        row = scalar_row(conn, "summary", _SUMMARY_SQL)
    return DataSummary(*(None if v is None else int(v) for v in row))  # type: ignore[arg-type]


_RATE_SQL = """
SELECT (SELECT epoch FROM epochs WHERE end_block IS NOT NULL ORDER BY epoch LIMIT 1),
       (SELECT end_block FROM epochs WHERE end_block IS NOT NULL ORDER BY epoch LIMIT 1),
       (SELECT epoch FROM epochs WHERE end_block IS NOT NULL ORDER BY epoch DESC LIMIT 1),
       (SELECT end_block FROM epochs WHERE end_block IS NOT NULL ORDER BY epoch DESC LIMIT 1),
       (SELECT epoch FROM epochs WHERE indexed_at IS NOT NULL ORDER BY epoch LIMIT 1),
       (SELECT extract(epoch FROM indexed_at)::float8 FROM epochs
         WHERE indexed_at IS NOT NULL ORDER BY epoch LIMIT 1),
       (SELECT epoch FROM epochs WHERE indexed_at IS NOT NULL ORDER BY epoch DESC LIMIT 1),
       (SELECT extract(epoch FROM indexed_at)::float8 FROM epochs
         WHERE indexed_at IS NOT NULL ORDER BY epoch DESC LIMIT 1)
"""


def epoch_rate(engine: Engine) -> yields.EpochRate:
    """Epochs per day from end blocks, else live-looking timestamps, else 120 (see yields)."""
    with connect(engine) as conn:
        e1, b1, e2, b2, t_e1, t1, t_e2, t2 = scalar_row(conn, "epoch_rate", _RATE_SQL)
    by_blocks = None if e1 is None else yields.rate_from_end_blocks((e1, b1), (e2, b2))
    by_time = None if t_e1 is None else yields.rate_from_timestamps((t_e1, t1), (t_e2, t2))
    return yields.choose_rate(by_blocks, by_time)


_DATES_SQL = """
SELECT epoch, indexed_at FROM epochs
WHERE indexed_at IS NOT NULL AND epoch BETWEEN %(lo)s AND %(hi)s ORDER BY epoch
"""


def epoch_dates(engine: Engine, lo: int, hi: int) -> pl.DataFrame:
    """epoch -> UTC time, when the data's timestamps look like live indexing; else empty.

    Format A `timestamp` is when the indexer ran: after a bulk re-index it says nothing about the
    epoch, so dates are only shown when the timestamps advance at a plausible epoch rate.
    """
    empty = pl.DataFrame(schema={"epoch": pl.Int64, "time": pl.Datetime("us", "UTC")})
    with connect(engine) as conn:
        e1, _, e2, _, t_e1, t1, t_e2, t2 = scalar_row(conn, "epoch_rate", _RATE_SQL)
        if t_e1 is None or yields.rate_from_timestamps((t_e1, t1), (t_e2, t2)) is None:
            return empty
        started = time.perf_counter()
        rows = conn.execute(_DATES_SQL, {"lo": lo, "hi": hi}).fetchall()
        record("epoch_dates", started, len(rows))
    if not rows:
        return empty
    epochs, times = zip(*rows, strict=True)
    return pl.DataFrame(
        {"epoch": pl.Series(epochs, dtype=pl.Int64), "time": pl.Series(times)}
    ).with_columns(pl.col("time").dt.convert_time_zone("UTC"))


def epoch_date_labels(engine: Engine, lo: int, hi: int) -> dict[int, str]:
    """epoch -> "YYYY-MM-DD HH:MM UTC" for hover texts; empty when dates are not known."""
    frame = epoch_dates(engine, lo, hi)
    return {epoch: moment.strftime("%Y-%m-%d %H:%M UTC") for epoch, moment in frame.iter_rows()}
