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
            cur.executemany(
                "INSERT INTO epoch_normalizations (epoch, revision, operator_count) "
                "VALUES (%s, 1, %s)",
                [(e, sum(1 for r in rows if r.epoch == e)) for e in epochs],
            )
            cur.executemany(
                "INSERT INTO operator_share_prices VALUES (%s, %s, %s, 'storage_dump')",
                [(r.operator_id, r.epoch, r.price) for r in rows],
            )
            cur.executemany(
                "INSERT INTO operator_shares (operator_id, epoch, stake_raw, shares_raw, rewards_raw)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(r.operator_id, r.epoch, r.stake, r.shares, r.rewards) for r in rows],
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
