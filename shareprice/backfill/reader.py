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
that, each access would decompress the ~1 MB document again. It is decompressed after the
rows are sorted by epoch: sorting the detoasted ~3 MB documents spilled every batch's documents
to a temporary file and read them back (seed scale: ~24 -> ~15 ms of server CPU per document).

Chain-recorded prices: every dump repeats the history so far (DOMAIN.md), ~1,500 entries per
document at seed scale of which ~50 are new. Within one batch of consecutive documents,
`ChainDiff` hands the parser only the entries whose exact text did not appear in the previous
successfully parsed document (whose entries were parsed and stored in the same batch), so each
distinct entry is decoded once; a repeated key sends the whole dump to the parser.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import filterfalse
from typing import Any, cast

import psycopg
from psycopg.types.json import set_json_loads

from shareprice.backfill import positions
from shareprice.backfill.positions import EpochItems, PositionChanges
from shareprice.backfill.rewards import rewards_of
from shareprice.chain.codec import KEY_PREFIX_LEN
from shareprice.chain.nominators import head_domain_number, parse_positions
from shareprice.chain.parser import (
    ParseError,
    chain_price_rows,
    cyclic_gc_paused,
    load_json,
    operator_rows,
    parse_document,
)
from shareprice.chain.records import Format

#: The storage-key length of an OperatorEpochSharePrice entry: "0x" + pallet + item + u64 + 2 u32.
_CHAIN_KEY_LEN = 2 + 32 + 32 + 16 + 8 + 8

_ROWS_PER_FETCH = 8

# One row per requested epoch. `fast` documents come in parts; the others as whole text.
# One row per requested epoch, plus one per base epoch (is_base: E-1 of a batch epoch E whose
# E-1 is not in the batch, for its position items and chain prices only). `fast` documents
# come in parts; the others as whole text.
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
       CASE WHEN NOT sh.shaped AND NOT s.base_failed
            THEN (SELECT e2.data::text FROM epochs AS e2 WHERE e2.epoch = s.epoch)
       END AS document,
       s.is_base,
       s.base_failed,
       p.head,
       p.deposit_values,
       p.deposit_count,
       p.withdrawal_values,
       p.withdrawal_count,
       p.hold_values,
       p.hold_count
FROM (
SELECT s0.*, s0.data || '{}'::jsonb AS d
FROM (
    SELECT e.epoch, e.revision,
           (SELECT n.revision FROM epoch_normalizations AS n WHERE n.epoch = e.epoch)
               AS normalized_revision,
           e.epoch = ANY(%(bases)s::int[]) AS is_base,
           -- A base whose document failed at its current revision (and was not normalized at
           -- it since): no base, whatever its items say.
           (e.epoch = ANY(%(bases)s::int[])
            AND EXISTS (SELECT 1 FROM backfill_errors AS b
                        WHERE b.epoch = e.epoch AND b.revision = e.revision)
            AND NOT EXISTS (SELECT 1 FROM epoch_normalizations AS n
                            WHERE n.epoch = e.epoch AND n.revision = e.revision)) AS base_failed,
           e.data
    FROM epochs AS e
    WHERE e.epoch = ANY(%(epochs)s::int[]) OR e.epoch = ANY(%(bases)s::int[])
    ORDER BY e.epoch
    OFFSET 0
) AS s0
ORDER BY s0.epoch
OFFSET 0
) AS s
-- Detoasted after the sort (s0 sorts rows that hold only the TOAST pointer): sorting the
-- ~3 MB detoasted documents spilled ~3 MB per row to a temporary file and read it back.
-- OFFSET 0 everywhere: a subquery the planner flattens is evaluated once per reference.
-- `#> '{item,entries}'` rather than `-> 'item' -> 'entries'`: the path is walked inside the
-- document and only its end copied out (each `->` copies a ~0.5-1 MB item out of the document;
-- NULL for a missing key or a non-object alike).
CROSS JOIN LATERAL (
    SELECT jsonb_typeof(s.d) = 'object'
           AND NOT (s.d ? 'operatorStakes' OR s.d ? 'operatorSharePrices')
           AND jsonb_typeof(s.d -> 'operators') = 'object'
           AND jsonb_typeof(s.d #> '{operators,entries}') = 'array'
           AND (coalesce(jsonb_typeof(s.d -> 'operatorEpochSharePrice'), 'null') = 'null'
                OR jsonb_typeof(s.d #> '{operatorEpochSharePrice,entries}') = 'array')
           AND (coalesce(jsonb_typeof(s.d -> 'deposits'), 'null') = 'null'
                OR jsonb_typeof(s.d #> '{deposits,entries}') = 'array')
           AND (coalesce(jsonb_typeof(s.d -> 'withdrawals'), 'null') = 'null'
                OR jsonb_typeof(s.d #> '{withdrawals,entries}') = 'array')
           AND (coalesce(jsonb_typeof(s.d -> 'depositOnHold'), 'null') = 'null'
                OR jsonb_typeof(s.d #> '{depositOnHold,entries}') = 'array')
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
           CASE WHEN NOT s.is_base THEN ARRAY(
               SELECT e ->> 'value' FROM jsonb_array_elements(s.d #> '{operators,entries}') AS e)
           END AS operator_values,
           s.d #> '{operators,count}' AS operator_count,
           CASE WHEN jsonb_typeof(s.d -> 'operatorEpochSharePrice') = 'object' THEN ARRAY(
               SELECT e ->> 'value'
               FROM jsonb_array_elements(s.d #> '{operatorEpochSharePrice,entries}') AS e)
           END AS chain_values,
           s.d #> '{operatorEpochSharePrice,count}' AS chain_count,
           -- Position items: NULL when the item is missing or null (no positions known).
           s.d -> 'headDomainNumber' AS head,
           CASE WHEN jsonb_typeof(s.d -> 'deposits') = 'object' THEN ARRAY(
               SELECT e ->> 'value' FROM jsonb_array_elements(s.d #> '{deposits,entries}') AS e)
           END AS deposit_values,
           s.d #> '{deposits,count}' AS deposit_count,
           CASE WHEN jsonb_typeof(s.d -> 'withdrawals') = 'object' THEN ARRAY(
               SELECT e ->> 'value'
               FROM jsonb_array_elements(s.d #> '{withdrawals,entries}') AS e)
           END AS withdrawal_values,
           s.d #> '{withdrawals,count}' AS withdrawal_count,
           CASE WHEN jsonb_typeof(s.d -> 'depositOnHold') = 'object' THEN ARRAY(
               SELECT e ->> 'value'
               FROM jsonb_array_elements(s.d #> '{depositOnHold,entries}') AS e)
           END AS hold_values,
           s.d #> '{depositOnHold,count}' AS hold_count
    WHERE sh.shaped AND NOT s.base_failed
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
    #: E-1 of a batch epoch whose E-1 is not in the batch: read for its positions only.
    is_base: bool = False
    #: A base whose document failed at its current revision: not a base.
    base_failed: bool = False
    #: headDomainNumber as JSON (None: missing or null).
    head: Any = None
    #: Each item's entry values (None: the item is missing or null) and its `count`.
    deposit_values: list[str | None] | None = None
    deposit_count: Any = None
    withdrawal_values: list[str | None] | None = None
    withdrawal_count: Any = None
    hold_values: list[str | None] | None = None
    hold_count: Any = None


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
    #: Its nominator position change rows; None when the document carries no position items.
    positions: PositionChanges | None = None


class _Unusual(Exception):
    """The parts do not have the ordinary shape: parse the whole document instead."""


def configure(conn: psycopg.Connection) -> None:
    """JSON of the head parts through the parser's loader (orjson, stdlib for >64-bit ints)."""
    set_json_loads(load_json, conn)


def base_epochs(epochs: Sequence[int]) -> list[int]:
    """E-1 of every epoch E whose E-1 is not among `epochs`: the positions each is compared with."""
    wanted = set(epochs)
    return sorted({e - 1 for e in wanted if e - 1 not in wanted})


def fetch(conn: psycopg.Connection, epochs: Sequence[int]) -> Iterator[RawEpoch]:
    """The requested epochs, in epoch order (epochs that no longer exist are left out), with
    their base epochs' rows (is_base) just before them.

    One plain query per _ROWS_PER_FETCH epochs (with the bases of those epochs): memory stays
    at a few documents whatever the batch size, and other statements (load_document, a
    mid-batch flush) can run between the queries. Not a server-side cursor: each FETCH of one
    materialized its rows (~20 MB of item arrays per 8 seed documents) in the portal's
    tuplestore, copied in and out again before sending them (fetching alone, 300 seed epochs,
    interleaved: ~1-2 ms of server CPU per epoch more, ~0.3 ms of client CPU; within whole
    backfills the difference stayed inside the run-to-run noise)."""
    ordered = sorted(set(epochs))
    bases = base_epochs(ordered)
    for i in range(0, len(ordered), _ROWS_PER_FETCH):
        chunk = ordered[i : i + _ROWS_PER_FETCH]
        inside = set(chunk)
        with conn.cursor(binary=True) as cur:
            cur.execute(
                FETCH_SQL, {"epochs": chunk, "bases": [b for b in bases if b + 1 in inside]}
            )
            rows = cur.fetchall()
        for row in rows:
            yield RawEpoch(*row)
        del rows


_DONE = object()


def prefetch(
    rows: Iterator[RawEpoch], depth: int = _ROWS_PER_FETCH
) -> Generator[RawEpoch, None, None]:
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
    previous successfully parsed document of the batch (see the module docstring).

    `prices` is the full map of the last document parsed (for effective shares): the previous
    map updated with the new entries, rebuilt from all of them when a key disappeared."""

    def __init__(self) -> None:
        #: The previous document's entry texts, and its key -> text map.
        self._previous: tuple[set[str], dict[str, str]] | None = None
        self._previous_epoch: int | None = None
        self.prices: dict[tuple[int, int, int], int] = {}
        #: After parse(): the epoch of the document `prices` was diffed against and the keys
        #: whose price may differ from that document's map (new, changed or vanished
        #: entries); None when this document's map was built from all of its entries.
        self.changed_since: int | None = None
        self.changed: set[tuple[int, int, int]] | None = None

    def forget(self) -> None:
        self._previous = None
        self._previous_epoch = None
        self.prices = {}
        self.changed_since = self.changed = None

    def changed_from(self, epoch: int) -> set[tuple[int, int, int]] | None:
        """The keys whose price may differ from the map of the document of `epoch` (None:
        unknown, e.g. the map was not diffed against that document)."""
        return self.changed if self.changed_since == epoch else None

    def parse(self, epoch: int, values: list[str], count: Any) -> list[ChainRow]:
        previous, self._previous = self._previous, None
        previous_epoch, self._previous_epoch = self._previous_epoch, None
        self.changed_since = self.changed = None
        # The previous document's map (when `previous` is set, nothing forgot it since); empty
        # until this document parsed, so a failure leaves no stale prices.
        known, self.prices = self.prices, {}
        if count is not None and count != len(values):
            raise _Unusual
        if None in values:  # an entry without a string value: the parser says what it is
            raise _Unusual
        texts = set(values)
        diffed = None if previous is None else _chain_diff(values, texts, *previous)
        changed: set[tuple[int, int, int]] | None = None
        if diffed is None:
            # The batch's first document, or a key repeated (the parser decides what it is).
            rows = chain_price_rows(values, epoch=epoch)
            prices = {(o, d, de): v for o, d, de, v in rows}
            by_key = dict(zip([v[:_CHAIN_KEY_LEN] for v in values], values, strict=True))
        else:
            new, new_keys, gone, by_key = diffed
            rows = chain_price_rows(new, epoch=epoch)
            prices = known
            # Entries that vanished (dumps that keep a window of history): out of the map. Their
            # keys parsed when they were new, so they decode.
            changed = set()
            for k in gone:
                del by_key[k]
                raw = bytes.fromhex(k[KEY_PREFIX_LEN:])
                vanished = (
                    int.from_bytes(raw[0:8], "little"),
                    int.from_bytes(raw[8:12], "little"),
                    int.from_bytes(raw[12:16], "little"),
                )
                prices.pop(vanished, None)
                changed.add(vanished)
            by_key.update(zip(new_keys, new, strict=True))
            for o, d, de, v in rows:
                prices[(o, d, de)] = v
                changed.add((o, d, de))
        self._previous = (texts, by_key)
        self._previous_epoch = epoch
        self.prices = prices
        if changed is not None:
            self.changed_since, self.changed = previous_epoch, changed
        return rows


def _chain_diff(
    values: list[str], texts: set[str], before: set[str], by_key: dict[str, str]
) -> tuple[list[str], list[str], list[str], dict[str, str]] | None:
    """The entries of `values` whose text the previous document lacks, their keys, the keys
    that vanished, and the previous key -> text map to update; None when a key appears twice
    in `values` (the parser then decides on all of them).

    Set operations on whole texts (hashed in C) rather than a key slice per entry: ~3,400
    entries per seed document, ~50 of them new. The previous document's keys were distinct, so
    a key can appear twice only through a text that is new: as two new texts, or beside the
    previous text of its key, still there."""
    if len(texts) != len(values):
        return None
    new = list(filterfalse(before.__contains__, values))
    new_keys = [v[:_CHAIN_KEY_LEN] for v in new]
    fresh = set(new_keys)
    if len(fresh) != len(new_keys):
        return None
    for k in new_keys:
        old = by_key.get(k)
        if old is not None and old in texts:
            return None
    gone = [k for k in (t[:_CHAIN_KEY_LEN] for t in before - texts) if k not in fresh]
    return new, new_keys, gone, by_key


_EMPTY_DUMP: dict[str, Any] = {"entries": []}


def _checked_values(values: list[str | None] | None, count: Any) -> list[str] | None:
    if values is None:
        return None
    if count is not None and count != len(values):
        raise _Unusual
    if None in values:  # an entry without a string value: the whole document decides
        raise _Unusual
    return cast(list[str], values)


def _parts_positions(
    raw: RawEpoch,
    epoch: int,
    prices: dict[tuple[int, int, int], int],
    base: EpochItems | None,
    changed_prices: set[tuple[int, int, int]] | None = None,
) -> tuple[EpochItems, PositionChanges] | None:
    """The position items of a fast row (None: the document carries no `deposits` item)."""
    deposits = _checked_values(raw.deposit_values, raw.deposit_count)
    withdrawals = _checked_values(raw.withdrawal_values, raw.withdrawal_count)
    holds = _checked_values(raw.hold_values, raw.hold_count)
    if deposits is None:
        return None
    head = head_domain_number(raw.head, epoch)
    return positions.build(
        epoch,
        raw.revision,
        head,
        deposits,
        withdrawals,
        holds,
        prices,
        base,
        changed_prices=changed_prices if base is not None else None,
    )


def _parse_parts(
    raw: RawEpoch, chain: ChainDiff, base: EpochItems | None
) -> tuple[int, list[OperatorRow], list[ChainRow], tuple[EpochItems, PositionChanges] | None]:
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
    rewards = None if raw.rewards is None else rewards_of(raw.rewards[0], epoch)
    if None in values:  # an entry without a value: the whole document decides
        raise _Unusual
    operators: list[OperatorRow] = [*operator_rows(cast(list[str], values), rewards, epoch=epoch)]
    if raw.chain_values is None:
        chain.forget()
        prices: list[ChainRow] = []
    else:  # (an entry without a value raises _Unusual there)
        prices = chain.parse(epoch, cast(list[str], raw.chain_values), raw.chain_count)
    # The base is E-1 only: a stored document under another epoch fails anyway.
    return (
        epoch,
        operators,
        prices,
        # The prices that moved since E-1's document (diffed in this batch: then `base` was
        # built from that very document's map), so settled pending deposits are not revisited.
        _parts_positions(
            raw, epoch, chain.prices, _base_for(base, epoch), chain.changed_from(epoch - 1)
        ),
    )


def _base_for(base: EpochItems | None, epoch: int) -> EpochItems | None:
    return base if base is not None and base.epoch == epoch - 1 else None


def _values_of(doc: Mapping[str, Any], name: str) -> list[str] | None:
    dump = doc.get(name)
    return None if dump is None else [e["value"] for e in dump["entries"]]


def _whole_positions(
    doc: Mapping[str, Any],
    epoch: int,
    revision: int,
    prices: dict[tuple[int, int, int], int],
    base: EpochItems | None,
) -> tuple[EpochItems, PositionChanges] | None:
    """Position items of a whole storage dump: parse_positions decides validity (its
    ParseError names epoch, item and entry), then the same rows as the parts give."""
    if doc.get("deposits") is None:
        parse_positions(doc, epoch)  # withdrawals or holds without deposits are still checked
        return None
    checked = parse_positions(doc, epoch)
    return positions.build(
        epoch,
        revision,
        checked.head_domain_number,
        _values_of(doc, "deposits"),
        _values_of(doc, "withdrawals"),
        _values_of(doc, "depositOnHold"),
        prices,
        _base_for(base, epoch),
        lower=True,
    )


def _parse_whole(
    text: str, revision: int, base: EpochItems | None
) -> tuple[
    int, Format, list[OperatorRow], list[ChainRow], tuple[EpochItems, PositionChanges] | None
]:
    doc = load_json(text)
    # A JSON scalar is handed over as the text, so that the parser says what it is.
    record = parse_document(doc if isinstance(doc, dict | list) else text)
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
    found = None
    if record.format == "storage_dump":
        if type(doc) is list:
            doc = doc[0]
        prices = {(o, d, de): v for o, d, de, v in chain}
        found = _whole_positions(doc, record.epoch, revision, prices, base)
    return record.epoch, record.format, operators, chain, found


def _parse_base(raw: RawEpoch, load_document: Callable[[int], str | None]) -> EpochItems | None:
    """The items of a base epoch (E-1 read for E's comparison), or None when it has none or
    they would not parse: E then gets full rows (and the pending query notices later if E-1
    turns out normalized after all)."""
    if raw.base_failed:
        return None
    try:
        try:
            if not raw.fast:
                raise _Unusual
            epoch = raw.epoch
            chain_values = _checked_values(raw.chain_values, raw.chain_count)
            prices = (
                {}
                if chain_values is None
                else {(o, d, de): v for o, d, de, v in chain_price_rows(chain_values, epoch=epoch)}
            )
            found = _parts_positions(raw, epoch, prices, None)
        except Exception:  # the whole document decides
            record_epoch, _, _, _, found = _parse_whole(
                raw.document or load_document(raw.epoch) or "", raw.revision, None
            )
            if record_epoch != raw.epoch:
                return None
    except ParseError:
        return None
    return None if found is None else found[0]


def parse_batch(
    rows: Iterator[RawEpoch],
    load_document: Callable[[int], str | None],
    accept: Callable[[ParsedEpoch], str | None] | None = None,
) -> Iterator[ParsedEpoch]:
    """Parse consecutive fetched epochs; a bad document yields its ParseError, never raises.

    `load_document(epoch)` returns a document's whole text, for parts that do not parse.
    `accept(parsed)` takes a parsed epoch or says why it cannot be stored (values the tables
    cannot hold). It runs here, before the next document is diffed against this one, so that a
    rejected epoch's chain entries are never assumed stored (nor its positions a base).

    Positions: each epoch's are compared with E-1's, parsed in this batch (when it succeeded)
    or read as a base row (fetch); rows come in epoch order, so `base` is always the latest.
    """
    chain = ChainDiff()
    base: EpochItems | None = None
    # Paused across the whole batch, between documents too (parse_document's own pause
    # would resume it after each one).
    with cyclic_gc_paused():
        for raw in rows:
            if raw.is_base:
                base = _parse_base(raw, load_document)
                continue
            try:
                try:
                    if not raw.fast:
                        raise _Unusual
                    epoch, operators, prices, found = _parse_parts(raw, chain, base)
                    fmt: Format = "storage_dump"
                except Exception:  # whatever it is, the whole document decides
                    # Not the ordinary shape, or not valid: the parser decides on the whole.
                    chain.forget()
                    epoch, fmt, operators, prices, found = _parse_whole(
                        raw.document or load_document(raw.epoch) or "", raw.revision, base
                    )
            except ParseError as exc:
                chain.forget()
                base = None
                if exc.epoch is None:  # e.g. "not a JSON object": say which epoch anyway
                    exc = ParseError(exc.reason, raw.epoch, exc.entry)
                yield ParsedEpoch(raw, raw.epoch, "storage_dump", [], [], exc)
                continue
            parsed = ParsedEpoch(
                raw, epoch, fmt, operators, prices, None, None if found is None else found[1]
            )
            problem = (
                f"document says epoch {epoch} but is stored as epoch {raw.epoch}"
                if epoch != raw.epoch
                else accept(parsed)
                if accept is not None
                else None
            )
            if problem is not None:
                chain.forget()
                base = None
                yield ParsedEpoch(raw, raw.epoch, fmt, [], [], ParseError(problem, raw.epoch))
                continue
            base = None if found is None else found[0]
            yield parsed
