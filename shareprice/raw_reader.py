"""Read raw epochs out of PostgreSQL cheaply and parse them with the shared parser.

A seed-scale `epochs` table holds ~3.5 GB of JSON, and shipping it to Python as JSON text and
parsing it there twice (the outer document, then each operator payload inside its string)
would cost more than everything else the backfill does. So, for a document of the ordinary
storage-dump shape, the server sends only what the parser reads:

- the `value` strings of the `operators` and `operatorEpochSharePrice` dumps as binary text[]
  (no JSON escaping of the payloads on the way out, no outer JSON parse on the way in);
- the small top-level fields the parser looks at (`epoch`, `endBlock`, `endHash`, `timestamp`,
  and of `domainStakingSummary` only `currentTotalStake` and `currentEpochRewards`).

Python rebuilds a document holding exactly those parts and hands it to
`shareprice.parser.parse_document`, so every rule and every error message is the parser's.
Anything of another shape (flat exports, one-element lists, entries that are not objects with a
string value, a missing `epoch`) is sent whole and parsed the ordinary way: the fast path never
decides what is valid.

The compressed document is decompressed once per row (`data || '{}'` on an object returns the
detoasted value itself, and OFFSET 0 keeps it materialized for the several accesses below);
without that, each of the ~8 accesses would decompress the ~1 MB document again.

Chain-recorded prices: every dump repeats the history so far (DOMAIN.md), ~1,300 entries per
document at seed scale of which ~40 are new. Within one batch of consecutive documents,
`ChainDiff` hands the parser only the entries whose exact text did not appear in the previous
successfully parsed document (whose entries were parsed and stored in the same batch), so each
distinct entry is decoded once. Any anomaly (a count mismatch, a repeated key, a parse error)
falls back to parsing the whole dump, so errors are exactly the parser's.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from shareprice.parser import (
    ParseError,
    chain_price_rows,
    load_json,
    operator_rows,
    parse_document,
    parse_rewards,
)
from shareprice.records import Format

#: The storage-key length of an OperatorEpochSharePrice entry: "0x" + pallet + item + u64 + 2 u32.
_CHAIN_KEY_LEN = 2 + 32 + 32 + 16 + 8 + 8

_ROWS_PER_FETCH = 8

# The top-level keys and summary keys the parser reads from a storage dump (parser.py).
_HEAD_KEYS = ("epoch", "endBlock", "endHash", "timestamp", "domainStakingSummary")
_SUMMARY_KEYS = ("currentTotalStake", "currentEpochRewards")

# One row per requested epoch. `fast` documents come in parts; the others as whole text.
FETCH_SQL = """
SELECT s.epoch,
       s.revision,
       s.normalized_revision,
       f.fast,
       CASE WHEN f.fast THEN p.head END AS head,
       CASE WHEN f.fast THEN p.operator_values END AS operator_values,
       CASE WHEN f.fast THEN p.operator_count END AS operator_count,
       CASE WHEN f.fast THEN p.chain_values END AS chain_values,
       CASE WHEN f.fast THEN p.chain_count END AS chain_count,
       CASE WHEN NOT f.fast THEN (SELECT e2.data::text FROM epochs AS e2 WHERE e2.epoch = s.epoch)
       END AS document
FROM (
    SELECT e.epoch, e.revision,
           (SELECT n.revision FROM epoch_normalizations AS n WHERE n.epoch = e.epoch)
               AS normalized_revision,
           e.data || '{}'::jsonb AS d
    FROM epochs AS e
    WHERE e.epoch = ANY(%(epochs)s::int[])
    ORDER BY e.epoch
    OFFSET 0
) AS s
CROSS JOIN LATERAL (
    SELECT jsonb_typeof(s.d) = 'object'
           AND s.d ? 'epoch'
           AND NOT (s.d ? 'operatorStakes' OR s.d ? 'operatorSharePrices')
           AND jsonb_typeof(s.d -> 'operators') = 'object'
           AND jsonb_typeof(s.d -> 'operators' -> 'entries') = 'array'
           AND coalesce(jsonb_typeof(s.d -> 'operatorEpochSharePrice'), 'null') IN ('null', 'object')
           AND coalesce(jsonb_typeof(s.d -> 'domainStakingSummary'), 'null') IN ('null', 'object')
           AND coalesce(jsonb_typeof(s.d -> 'operators' -> 'count'), 'null') IN ('null', 'number')
           AND coalesce(jsonb_typeof(s.d -> 'operatorEpochSharePrice' -> 'count'), 'null')
               IN ('null', 'number')
           AS shaped
    OFFSET 0
) AS sh
-- OFFSET 0 everywhere: a subquery the planner flattens is evaluated once per reference.
LEFT JOIN LATERAL (
    SELECT (s.d - ARRAY(SELECT k FROM jsonb_object_keys(s.d) AS k
                        WHERE k <> ALL (%(head_keys)s::text[])))
           || CASE WHEN jsonb_typeof(s.d -> 'domainStakingSummary') = 'object' THEN
                  jsonb_build_object('domainStakingSummary',
                      (s.d -> 'domainStakingSummary')
                      - ARRAY(SELECT k FROM jsonb_object_keys(s.d -> 'domainStakingSummary') AS k
                              WHERE k <> ALL (%(summary_keys)s::text[])))
              ELSE '{}'::jsonb END AS head,
           ARRAY(SELECT v #>> '{}' FROM jsonb_path_query(
               s.d, 'strict $.operators.entries[*].value ? (@.type() == "string")',
               silent => true) AS v) AS operator_values,
           jsonb_array_length(s.d -> 'operators' -> 'entries') AS operator_entries,
           s.d -> 'operators' -> 'count' AS operator_count,
           CASE WHEN jsonb_typeof(s.d -> 'operatorEpochSharePrice') = 'object' THEN
               ARRAY(SELECT v #>> '{}' FROM jsonb_path_query(
                   s.d, 'strict $.operatorEpochSharePrice.entries[*].value ? (@.type() == "string")',
                   silent => true) AS v)
           END AS chain_values,
           CASE WHEN jsonb_typeof(s.d -> 'operatorEpochSharePrice') = 'object' THEN
               CASE WHEN jsonb_typeof(s.d -> 'operatorEpochSharePrice' -> 'entries') = 'array'
                    THEN jsonb_array_length(s.d -> 'operatorEpochSharePrice' -> 'entries')
                    ELSE -1 END
           END AS chain_entries,
           s.d -> 'operatorEpochSharePrice' -> 'count' AS chain_count
    WHERE sh.shaped
    OFFSET 0
) AS p ON true
CROSS JOIN LATERAL (
    SELECT coalesce(sh.shaped
                    AND cardinality(p.operator_values) = p.operator_entries
                    AND (p.chain_values IS NULL OR cardinality(p.chain_values) = p.chain_entries)
                    -- a dump's count, when given, must match its entries (else the parser says)
                    AND CASE WHEN jsonb_typeof(p.operator_count) = 'number'
                             THEN p.operator_count::numeric = p.operator_entries ELSE true END
                    AND CASE WHEN jsonb_typeof(p.chain_count) = 'number'
                             THEN p.chain_count::numeric = p.chain_entries ELSE true END,
                    false) AS fast
) AS f
ORDER BY s.epoch
"""


@dataclass(frozen=True, slots=True)
class RawEpoch:
    """One fetched row: the parts of a storage dump (fast) or the whole document (not fast)."""

    epoch: int
    revision: int
    #: The revision the normalized tables hold for this epoch, None when never normalized.
    normalized_revision: int | None
    fast: bool
    head: dict[str, Any] | None
    operator_values: list[str] | None
    operator_count: Any
    chain_values: list[str] | None
    chain_count: Any
    document: str | None


#: (operator_id, stake, shares, storage_fee, nomination_tax, status, share_price_perq, rewards):
#: OperatorState's fields in order, as the parser's `operator_rows` returns them.
OperatorRow = tuple[int, int, int | None, int | None, int | None, str | None, int, int | None]
#: (operator_id, domain_id, domain_epoch, shares_per_stake_perq): ChainSharePrice's fields.
ChainRow = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class ParsedEpoch:
    raw: RawEpoch
    epoch: int
    format: Format
    operators: list[OperatorRow]
    #: Chain entries not already returned for an earlier epoch of the same batch.
    chain: list[ChainRow]
    error: ParseError | None


class _Unusual(Exception):
    """The parts do not have the ordinary shape: parse the whole document instead."""


def configure(conn: psycopg.Connection) -> None:
    """JSON of the head parts through the parser's loader (orjson, stdlib for >64-bit ints)."""
    psycopg.types.json.set_json_loads(load_json, conn)


def fetch(conn: psycopg.Connection, epochs: Sequence[int]) -> Iterator[RawEpoch]:
    """The requested epochs, in epoch order (epochs that no longer exist are left out)."""
    # A server-side cursor, a few rows per round trip: memory stays at a few documents whatever
    # the batch size, and other statements (load_document) can run between fetches.
    with conn.cursor(name="backfill_fetch", binary=True) as cur:
        cur.itersize = _ROWS_PER_FETCH
        cur.execute(
            FETCH_SQL,
            {
                "epochs": list(epochs),
                "head_keys": list(_HEAD_KEYS),
                "summary_keys": list(_SUMMARY_KEYS),
            },
        )
        for row in cur:
            yield RawEpoch(*row)


_DONE = object()


def prefetch(rows: Iterator[RawEpoch], depth: int = _ROWS_PER_FETCH) -> Iterator[RawEpoch]:
    """Iterate `rows` in a background thread, up to `depth` rows ahead.

    The server extracts the next documents while this thread parses the current ones (the
    fetching thread waits for the server with the GIL released), instead of each waiting for
    the other. The caller must exhaust (or close) this generator before using the connection
    for anything but load_document.
    """
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for row in rows:
                while not stop.is_set():
                    try:
                        ahead.put(row, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            ahead.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            ahead.put(exc)
        finally:
            if stop.is_set() and hasattr(rows, "close"):
                rows.close()

    thread = threading.Thread(target=produce, name="backfill-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ahead.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.05)
        thread.join()


def load_document(conn: psycopg.Connection, epoch: int) -> str | None:
    row = conn.execute("SELECT data::text FROM epochs WHERE epoch = %s", (epoch,)).fetchone()
    return None if row is None else row[0]


class ChainDiff:
    """Decodes each document's chain dump, handing the parser only the entries new since the
    previous successfully parsed document of the batch (see the module docstring)."""

    def __init__(self) -> None:
        self._previous: dict[str, str] | None = None

    def forget(self) -> None:
        self._previous = None

    def parse(self, epoch: int, values: list[str], count: Any) -> list[ChainRow]:
        previous, self._previous = self._previous, None
        if count is not None and count != len(values):
            raise _Unusual
        keys = [v[:_CHAIN_KEY_LEN] for v in values]
        current = dict(zip(keys, values, strict=True))
        if len(current) != len(values) or previous is None:
            # The batch's first document, or a key repeated (the parser decides what it is).
            rows = chain_price_rows(values, epoch=epoch)
        else:
            seen = previous.get
            new = [v for k, v in zip(keys, values, strict=True) if seen(k) != v]
            try:
                rows = chain_price_rows(new, epoch=epoch)
            except ParseError:
                # The error must name the entry's position in the whole dump.
                rows = chain_price_rows(values, epoch=epoch)
        self._previous = current
        return rows


_EMPTY_DUMP: dict[str, Any] = {"entries": []}


def _parse_parts(raw: RawEpoch, chain: ChainDiff) -> tuple[int, list[OperatorRow], list[ChainRow]]:
    """A storage dump from its parts, checked in parse_storage_dump's order so that the first
    error is the one parse_document would raise for the whole document."""
    values = raw.operator_values or []
    if raw.operator_count is not None and raw.operator_count != len(values):
        raise _Unusual
    doc = dict(raw.head or {})
    summary = doc.get("domainStakingSummary")
    rewards_raw: Any = _EMPTY_DUMP  # sentinel: no currentEpochRewards
    if type(summary) is dict and "currentEpochRewards" in summary:
        summary = dict(summary)
        rewards_raw = summary.pop("currentEpochRewards")
        doc["domainStakingSummary"] = summary
    doc["operators"] = _EMPTY_DUMP
    # epoch, endBlock, endHash, timestamp, the summary and its currentTotalStake: the parser's
    # own checks, on a document without the operators (decoded below without a dataclass each).
    epoch = parse_document(doc).epoch
    rewards = None if rewards_raw is _EMPTY_DUMP else parse_rewards(rewards_raw, epoch=epoch)
    operators = operator_rows(values, rewards, epoch=epoch)
    if raw.chain_values is None:
        chain.forget()
        return epoch, operators, []
    return epoch, operators, chain.parse(epoch, raw.chain_values, raw.chain_count)


def _parse_whole(text: str) -> tuple[int, Format, list[OperatorRow], list[ChainRow]]:
    record = parse_document(text)
    operators = [
        (
            o.operator_id,
            o.stake,
            o.shares,
            o.storage_fee,
            o.nomination_tax,
            o.status,
            o.share_price_perq,
            o.rewards,
        )
        for o in record.operators
    ]
    chain = [
        (c.operator_id, c.domain_id, c.domain_epoch, c.shares_per_stake_perq)
        for c in record.chain_prices
    ]
    return record.epoch, record.format, operators, chain


def parse_batch(
    rows: Iterator[RawEpoch],
    load_document: Callable[[int], str | None],
    accept: Callable[[ParsedEpoch], str | None] | None = None,
) -> Iterator[ParsedEpoch]:
    """Parse consecutive fetched epochs; a bad document yields its ParseError, never raises.

    `load_document(epoch)` returns a document's whole text, for parts of an unusual shape.
    `accept(parsed)` takes a parsed epoch or says why it cannot be stored (values the tables
    cannot hold). It runs here, before the next document is diffed against this one, so that a
    rejected epoch's chain entries are never assumed stored.
    """
    chain = ChainDiff()
    gc_was_enabled = gc.isenabled()
    # Parsing makes ~10,000 acyclic containers per document; the cyclic GC would scan them
    # over and over (the parser does the same in parse_document).
    gc.disable()
    try:
        for raw in rows:
            try:
                try:
                    if not raw.fast:
                        raise _Unusual
                    epoch, operators, prices = _parse_parts(raw, chain)
                    fmt: Format = "storage_dump"
                except _Unusual:
                    chain.forget()
                    epoch, fmt, operators, prices = _parse_whole(
                        raw.document or load_document(raw.epoch) or ""
                    )
            except ParseError as exc:
                chain.forget()
                if exc.epoch is None:  # e.g. "not a JSON object": say which epoch anyway
                    exc = ParseError(exc.reason, raw.epoch, exc.entry)
                yield ParsedEpoch(raw, raw.epoch, "storage_dump", [], [], exc)
                continue
            parsed = ParsedEpoch(raw, epoch, fmt, operators, prices, None)
            problem = (
                f"document says epoch {epoch} but is stored as epoch {raw.epoch}"
                if epoch != raw.epoch
                else accept(parsed)
                if accept is not None
                else None
            )
            if problem is not None:
                chain.forget()
                yield ParsedEpoch(raw, raw.epoch, fmt, [], [], ParseError(problem, raw.epoch))
                continue
            yield parsed
    finally:
        if gc_was_enabled:
            gc.enable()
