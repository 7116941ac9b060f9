"""Write normalized rows straight into a test database (for query tests that need exact shapes).

What `shareprice backfill` would write, minus the raw documents: tests of v2-only behaviour
(downsampling, yields, the band) need prices chosen by hand, not whatever a generator makes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class Row:
    operator_id: int
    epoch: int
    price: int
    stake: int = 10**21
    shares: int | None = None
    rewards: int | None = None


def load(
    engine: Engine,
    rows: Iterable[Row],
    *,
    names: dict[int, str] | None = None,
    statuses: dict[int, str] | None = None,
    end_blocks: dict[int, int] | None = None,
    indexed_at: dict[int, str] | None = None,
) -> None:
    rows = list(rows)
    names = names or {}
    statuses = statuses or {}
    epochs = sorted({r.epoch for r in rows} | set(end_blocks or {}) | set(indexed_at or {}))
    by_operator: dict[int, list[Row]] = {}
    for row in rows:
        by_operator.setdefault(row.operator_id, []).append(row)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        with raw.cursor() as cur:
            cur.executemany(
                "INSERT INTO epochs (epoch, end_block, indexed_at, data) VALUES (%s, %s, %s, '{}')",
                [(e, (end_blocks or {}).get(e), (indexed_at or {}).get(e)) for e in epochs],
            )
            # one COPY per table, every operator of every epoch at once, as the backfill does
            with cur.copy(
                "COPY operator_share_prices (operator_id, epoch, share_price_perq, source) "
                "FROM STDIN"
            ) as copy:
                for r in rows:
                    copy.write_row((r.operator_id, r.epoch, r.price, "storage_dump"))
            with cur.copy(
                "COPY operator_shares (operator_id, epoch, stake_raw, shares_raw, rewards_raw) "
                "FROM STDIN"
            ) as copy:
                for r in rows:
                    copy.write_row((r.operator_id, r.epoch, r.stake, r.shares, r.rewards))
            # marks after the rows, in the same transaction, as the backfill does
            counts: dict[int, int] = {}
            for r in rows:
                counts[r.epoch] = counts.get(r.epoch, 0) + 1
            cur.execute(
                "INSERT INTO epoch_normalizations (epoch, revision, operator_count) "
                "SELECT e, 1, c FROM unnest(%s::int[], %s::int[]) AS m(e, c)",
                (epochs, [counts.get(e, 0) for e in epochs]),
            )
            cur.executemany(
                "INSERT INTO operators_metadata (operator_id, name, color, status, nomination_tax,"
                " first_seen_epoch, last_seen_epoch, is_active) VALUES (%s, %s, %s, %s, 5, %s, %s, %s)",
                [
                    (
                        op,
                        names.get(op, f"operator {op}"),
                        f"#{(op * 2654435761) % 16777216:06x}",
                        statuses.get(op, "registered"),
                        min(r.epoch for r in op_rows),
                        max(r.epoch for r in op_rows),
                        statuses.get(op, "registered") == "registered",
                    )
                    for op, op_rows in sorted(by_operator.items())
                ],
            )
            cur.execute("SELECT nextval('data_version_seq')")
        raw.commit()
