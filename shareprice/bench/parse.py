"""`shareprice bench parse`: how fast stored documents are fetched and parsed, two ways.

- `full`: fetch `data::text`, `parse_document` (what the v1 query path and `import` do).
- `fast`: fetch only what normalization needs, with the operator entry values aggregated by
  PostgreSQL (`string_agg(e->>'value')`, so the JSON-in-JSON payloads arrive unescaped), then
  `parse_rewards` + `operator_rows` (what a backfill can do).

Fetch and parse are timed separately (single process, one connection), so the figures say where
the time goes. Throughput in MB/s is always relative to the full document size (as text).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import orjson
from sqlalchemy.engine import Engine

from shareprice.chain import parser

# Normalization's view of one raw epoch: operator entry values (one per line, in dump order;
# a value is JSON text and cannot contain a raw newline) and the rewards map.
FAST_FETCH_SQL = """
SELECT epoch,
       (SELECT string_agg(e->>'value', E'\\n' ORDER BY i)
          FROM jsonb_array_elements(data->'operators'->'entries') WITH ORDINALITY AS t(e, i)
       ) AS operator_values,
       (data->'domainStakingSummary'->'currentEpochRewards')::text AS rewards
  FROM epochs
 WHERE epoch BETWEEN %(first)s AND %(last)s
 ORDER BY epoch
"""

FULL_FETCH_SQL = """
SELECT epoch, data::text FROM epochs WHERE epoch BETWEEN %(first)s AND %(last)s ORDER BY epoch
"""


def _range(engine: Engine, limit: int | None) -> tuple[int, int, int]:
    with engine.connect() as conn:
        first, last, count = conn.exec_driver_sql(
            "SELECT min(epoch), max(epoch), count(*) FROM epochs"
        ).one()
    if not count:
        raise ValueError("the epochs table is empty: run `shareprice demo --profile seed-scale`")
    if limit is not None and limit < count:
        first = last - limit + 1  # the newest documents are the largest
    return first, last, count


def _stream(engine: Engine, sql: str, params: dict[str, int]):
    """Rows through a server-side cursor, each with the seconds spent waiting for it."""
    raw = engine.raw_connection()
    conn = raw.driver_connection
    assert conn is not None  # an open pool connection always has its driver connection
    try:
        with conn.cursor(name="shareprice_bench_parse") as cur:
            cur.itersize = 16
            cur.execute(sql, params)
            while True:
                started = time.perf_counter()
                row = cur.fetchone()
                waited = time.perf_counter() - started
                if row is None:
                    break
                yield waited, row
        conn.rollback()
    finally:
        raw.close()


def bench_parse(engine: Engine, limit: int | None = None) -> dict[str, Any]:
    first, last, total = _range(engine, limit)
    params = {"first": first, "last": last}
    result: dict[str, Any] = {
        "documents": 0,
        "epochs_in_table": total,
        "epoch_range": [first, last],
    }

    fetch = parse = 0.0
    doc_bytes = states = chain = 0
    per_doc: list[float] = []
    sizes: dict[int, int] = {}
    for waited, (epoch, text) in _stream(engine, FULL_FETCH_SQL, params):
        fetch += waited
        started = time.perf_counter()
        record = parser.parse_document(text)
        took = time.perf_counter() - started
        parse += took
        per_doc.append(took)
        doc_bytes += len(text)
        sizes[epoch] = len(text)
        states += len(record.operators)
        chain += len(record.chain_prices)
    result["documents"] = len(per_doc)
    result["json_mb"] = round(doc_bytes / 1e6, 1)
    result["operator_states"] = states
    result["chain_entries"] = chain
    result["full"] = _figures(fetch, parse, doc_bytes, states, per_doc)

    fetch = parse = 0.0
    fast_states = 0
    per_doc = []
    fast_bytes = 0
    for waited, (epoch, values, rewards) in _stream(engine, FAST_FETCH_SQL, params):
        fetch += waited
        started = time.perf_counter()
        reward_map = parser.parse_rewards(orjson.loads(rewards), epoch=epoch) if rewards else None
        rows = parser.operator_rows(values.split("\n") if values else [], reward_map, epoch=epoch)
        took = time.perf_counter() - started
        parse += took
        per_doc.append(took)
        fast_bytes += sizes[epoch]
        fast_states += len(rows)
    if fast_states != states:
        raise AssertionError(f"fast path found {fast_states} operator states, full path {states}")
    result["fast"] = _figures(fetch, parse, fast_bytes, fast_states, per_doc)
    return result


def _figures(
    fetch: float, parse: float, doc_bytes: int, states: int, per_doc: list[float]
) -> dict[str, float | int | None]:
    return {
        "fetch_s": round(fetch, 2),
        "parse_s": round(parse, 2),
        "parse_mb_per_s": round(doc_bytes / 1e6 / parse, 1) if parse else None,
        "parse_operator_states_per_s": round(states / parse) if parse else None,
        "end_to_end_mb_per_s": round(doc_bytes / 1e6 / (fetch + parse), 1),
        "parse_ms_per_doc_median": round(statistics.median(per_doc) * 1000, 3),
        "parse_ms_per_doc_p95": round(statistics.quantiles(per_doc, n=20)[-1] * 1000, 3)
        if len(per_doc) >= 20
        else None,
    }
