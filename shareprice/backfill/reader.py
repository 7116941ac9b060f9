"""Read raw epochs out of PostgreSQL cheaply and parse them with the shared parser.

A seed-scale `epochs` table holds ~3.5 GB of JSON. Shipping it to Python as JSON text and
parsing it there twice (the outer document, then each operator payload inside its string) would
cost more than everything else the backfill does. So for a storage dump the server sends only
what the parser reads:

- the `value` of every `operators` and `operatorEpochSharePrice` entry, as binary text[] (no
  JSON escaping of the payloads on the way out, no outer JSON parse on the way in);
- `epoch`, `endBlock`, `endHash`, `timestamp`, and of `domainStakingSummary` only
  `currentTotalStake` and `currentEpochRewards` (wrapped in a one-element array when present,
  so that "missing" and "null" stay distinct, as they are for the parser).

Python rebuilds the parts into what the parser reads (parse_document on the small head, then the
parser's own row fast paths `operator_rows` / `chain_price_rows`). Exactness does not rest on
that rebuild being perfect: whenever the parts fail to parse, for whatever reason, the whole
document is fetched and handed to `parse_document`, so every error, with its epoch, entry and
reason, is the parser's own; and the parts can only parse when the document would (a value the
parser would reject as not a string cannot render to a valid storage-key string). Flat exports,
one-element lists and other shapes are sent whole from the start.

The compressed document is decompressed once per row (`data || '{}'` on an object returns the
detoasted value itself, and OFFSET 0 keeps it materialized for the accesses below); without
that, each access would decompress the ~1 MB document again.

Chain-recorded prices: every dump repeats the history so far (DOMAIN.md), ~1,500 entries per
document at seed scale of which ~50 are new. Within one batch of consecutive documents,
`ChainDiff` hands the parser only the entries whose exact text did not appear in the previous
successfully parsed document (whose entries were parsed and stored in the same batch), so each
distinct entry is decoded once; a repeated key sends the whole dump to the parser.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg.types.json import set_json_loads

from shareprice.chain.parser import (
    ParseError,
    chain_price_rows,
    load_json,
    operator_rows,
    parse_document,
    parse_rewards,
)
from shareprice.chain.records import Format

#: The storage-key length of an OperatorEpochSharePrice entry: "0x" + pallet + item + u64 + 2 u32.
_CHAIN_KEY_LEN = 2 + 32 + 32 + 16 + 8 + 8

_ROWS_PER_FETCH = 8

# One row per requested epoch. `fast` documents come in parts; the others as whole text.
FETCH_SQL = """
SELECT s.epoch,
       s.revision,
       s.normalized_revision,
       sh.shaped AS fast,
       p.scalars,
       p.summary_type,
       p.total_stake,
       p.rewards,
       p.operator_values,
       p.operator_count,
       p.chain_values,
       p.chain_count,
       CASE WHEN NOT sh.shaped THEN (SELECT e2.data::text FROM epochs AS e2 WHERE e2.epoch = s.epoch)
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
-- OFFSET 0 everywhere: a subquery the planner flattens is evaluated once per reference.
CROSS JOIN LATERAL (
    SELECT jsonb_typeof(s.d) = 'object'
           AND NOT (s.d ? 'operatorStakes' OR s.d ? 'operatorSharePrices')
           AND jsonb_typeof(s.d -> 'operators') = 'object'
           AND jsonb_typeof(s.d -> 'operators' -> 'entries') = 'array'
           AND (coalesce(jsonb_typeof(s.d -> 'operatorEpochSharePrice'), 'null') = 'null'
                OR jsonb_typeof(s.d -> 'operatorEpochSharePrice' -> 'entries') = 'array')
           AS shaped,
           s.d -> 'domainStakingSummary' AS summary
    OFFSET 0
) AS sh
LEFT JOIN LATERAL (
    SELECT jsonb_build_array(s.d -> 'epoch', s.d -> 'endBlock', s.d -> 'endHash',
                             s.d -> 'timestamp') AS scalars,
           jsonb_typeof(sh.summary) AS summary_type,
           CASE WHEN sh.summary ? 'currentTotalStake'
                THEN jsonb_build_array(sh.summary -> 'currentTotalStake') END AS total_stake,
           CASE WHEN sh.summary ? 'currentEpochRewards'
                THEN jsonb_build_array(sh.summary -> 'currentEpochRewards') END AS rewards,
           ARRAY(SELECT e ->> 'value' FROM jsonb_array_elements(s.d -> 'operators' -> 'entries') AS e)
               AS operator_values,
           s.d -> 'operators' -> 'count' AS operator_count,
           CASE WHEN jsonb_typeof(s.d -> 'operatorEpochSharePrice') = 'object' THEN ARRAY(
               SELECT e ->> 'value'
               FROM jsonb_array_elements(s.d -> 'operatorEpochSharePrice' -> 'entries') AS e)
           END AS chain_values,
           s.d -> 'operatorEpochSharePrice' -> 'count' AS chain_count
    WHERE sh.shaped
    OFFSET 0
) AS p ON true
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
    #: [epoch, endBlock, endHash, timestamp] (None for missing or null alike: see _parse_parts).
    scalars: list[Any] | None
    #: jsonb_typeof(domainStakingSummary): None when missing.
    summary_type: str | None
    #: [value] when the summary has the key, else None.
    total_stake: list[Any] | None
    rewards: list[Any] | None
    #: Each entry's `value` as text (None where an entry has none: the parts then fail to parse).
    operator_values: list[str | None] | None
    operator_count: Any
    chain_values: list[str | None] | None
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
    set_json_loads(load_json, conn)


def fetch(conn: psycopg.Connection, epochs: Sequence[int]) -> Iterator[RawEpoch]:
    """The requested epochs, in epoch order (epochs that no longer exist are left out)."""
    # A server-side cursor, a few rows per round trip: memory stays at a few documents whatever
    # the batch size, and other statements (load_document) can run between fetches.
    with conn.cursor(name="backfill_fetch", binary=True) as cur:
        cur.itersize = _ROWS_PER_FETCH
        cur.execute(FETCH_SQL, {"epochs": list(epochs)})
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
        if None in values:  # an entry without a string value: the parser says what it is
            raise _Unusual
        keys = [v[:_CHAIN_KEY_LEN] for v in values]
        current = dict(zip(keys, values, strict=True))
        if len(current) != len(values) or previous is None:
            # The batch's first document, or a key repeated (the parser decides what it is).
            rows = chain_price_rows(values, epoch=epoch)
        else:
            seen = previous.get
            rows = chain_price_rows(
                [v for k, v in zip(keys, values, strict=True) if seen(k) != v], epoch=epoch
            )
        self._previous = current
        return rows


_EMPTY_DUMP: dict[str, Any] = {"entries": []}


def _parse_parts(raw: RawEpoch, chain: ChainDiff) -> tuple[int, list[OperatorRow], list[ChainRow]]:
    """A storage dump from its parts, in parse_storage_dump's order; raises ParseError or
    _Unusual whenever the parts do not parse (the caller then parses the whole document)."""
    values = raw.operator_values or []
    if raw.operator_count is not None and raw.operator_count != len(values):
        raise _Unusual
    epoch_v, end_block, end_hash, timestamp = raw.scalars or (None, None, None, None)
    # A missing and a null `epoch` both fail here, and the whole document then says which.
    doc: dict[str, Any] = {
        "epoch": epoch_v,
        "endBlock": end_block,
        "endHash": end_hash,
        "timestamp": timestamp,
        "operators": _EMPTY_DUMP,
    }
    if raw.summary_type == "object":
        doc["domainStakingSummary"] = (
            {} if raw.total_stake is None else {"currentTotalStake": raw.total_stake[0]}
        )
    elif raw.summary_type not in (None, "null"):
        raise _Unusual
    # epoch, endBlock, endHash, timestamp, the summary and its currentTotalStake: the parser's
    # own checks, on a document without the operators (decoded below without a dataclass each).
    epoch = parse_document(doc).epoch
    rewards = None if raw.rewards is None else parse_rewards(raw.rewards[0], epoch=epoch)
    if any(v is None for v in values):  # an entry without a value: the whole document decides
        raise _Unusual
    operators: list[OperatorRow] = [*operator_rows(cast(list[str], values), rewards, epoch=epoch)]
    if raw.chain_values is None:
        chain.forget()
        return epoch, operators, []
    if any(v is None for v in raw.chain_values):
        raise _Unusual
    return epoch, operators, chain.parse(epoch, cast(list[str], raw.chain_values), raw.chain_count)


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

    `load_document(epoch)` returns a document's whole text, for parts that do not parse.
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
                except Exception:  # whatever it is, the whole document decides
                    # Not the ordinary shape, or not valid: the parser decides on the whole.
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
