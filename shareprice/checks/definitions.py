"""Integrity checks: does the normalized data say exactly what the raw documents say?

Each check proves one property, returns pass / warn / fail with the number of offending rows and
up to 20 examples, and is timed. `shareprice check` and the integrity page run them, and the
results are kept in `integrity_runs` / `integrity_check_results` so a regression shows up against
the history.

Design choices:

- Independent evidence. The raw side is read in PostgreSQL (`raw_operator_registry`, sql/031)
  or through the shared parser, never from the normalized tables being judged.
- One fault, one check. Each check owns one property, so a planted fault trips its own check
  and no other: prices are compared only where both sides have the operator (presence is the
  operator-count and phantom checks' business), continuity is judged over normalized epochs only
  (missing epochs are `epochs_normalized`'s business), and so on.
- Exact arithmetic: prices are compared as NUMERIC / Python int, examples carry numbers as
  strings (u128 values do not fit JSON's integers).
- All checks of a run read one snapshot (REPEATABLE READ, READ ONLY), so a backfill running at
  the same time cannot make two checks disagree.
- The checks that read raw JSON (`reads_raw`) cover the run's `Scope.epochs` (all, the ones
  changed since last verified, or a seeded sample; their note says which) in chunks of
  `Scope.map`, each chunk a module-level `*_part` function returning plain data, so the runner
  can hand chunks to worker processes; they report the epochs at fault (`bad_epochs`) so only
  the others count as verified. The per-epoch SQL checks (`per_epoch`) judge, in an
  incremental run, only the rows of the changed epochs and their neighbours (index probes,
  `changed_epochs`), and also say which epochs are at fault, so an epoch is verified only when
  every such check passed it too; full and sample runs judge every row. The rest are SQL over
  whole tables (or their keys) and always cover everything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from shareprice.checks import fetch
from shareprice.checks.registry import (
    MAX_EXAMPLES,
    Outcome,
    Scope,
    Status,
    check,
    status_for,
)

#: 10^36 as an exact decimal string: the chain's shares-per-stake inverts to stake-per-share
#: through it (a float 1e36 would be off in the 17th digit).
E36 = str(10**36)
#: Epochs per chunk of a raw-reading check: per chunk, one statement over that many documents
#: (SQL checks) or one batch the parser reads (prices_match_raw). Small enough for a progress
#: bar that moves and for two workers to share the work evenly, big enough that per-statement
#: overhead stays negligible.
RAW_CHUNK = 100
#: comprehensive_analytics_agree's chunk: its (at most 200) epochs split over both workers.
ANALYTICS_CHUNK = 25
PARSE_CHUNK = 25


# ----------------------------------------------------------------------------- helpers


def _num(value: Any) -> Any:
    """NUMERIC -> exact decimal string; other values unchanged (JSON-safe examples)."""
    if isinstance(value, Decimal):
        return str(int(value)) if value == value.to_integral_value() else str(value)
    if isinstance(value, int) and abs(value) >= 2**53:
        return str(value)
    return value


def _row_dict(row: Any) -> dict[str, Any]:
    return {k: _num(v) for k, v in row._mapping.items()}


def _islands(values: Iterable[int], order: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """Consecutive runs of `values`. With `order` (all epochs that exist), runs are consecutive
    in that order, so a range never hides epochs that do not exist at all."""
    sorted_values = sorted(set(values))
    if not sorted_values:
        return []
    position = {v: i for i, v in enumerate(order)} if order is not None else None
    runs: list[tuple[int, int]] = []
    start = prev = sorted_values[0]
    for v in sorted_values[1:]:
        adjacent = (
            position[v] == position[prev] + 1
            if position is not None and v in position and prev in position
            else v == prev + 1
        )
        if not adjacent:
            runs.append((start, prev))
            start = v
        prev = v
    runs.append((start, prev))
    return runs


def format_range(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


#: An incremental run judges the per-epoch SQL checks on just its changed epochs (index and
#: BRIN probes) up to this many; beyond that (e.g. the first run after a migration changed
#: every digest) one scan of the whole tables is cheaper than per-epoch probes.
PER_EPOCH_MAX = 400


def changed_epochs(scope: Scope) -> list[int] | None:
    """The epochs a per-epoch check must judge in this run, None for all of them: an
    incremental run's changed epochs (those whose digest moved since they were last verified,
    sql/041 and 044), else everything (full and sample runs judge every row)."""
    if scope.only_changed and scope.epochs is not None and len(scope.epochs) <= PER_EPOCH_MAX:
        return list(scope.epochs)
    return None


def covered(scope: Scope, changed: list[int] | None) -> str:
    """What a per-epoch check covered, for its note."""
    if changed is None:
        return "all rows"
    return f"rows of the {len(changed):,} epoch(s) changed since last verified, and neighbours"


# Distinct operator ids with prices by a loose index scan of the primary key (one probe per
# operator, ~940 at seed scale) instead of aggregating 3.5 M rows.
OPERATOR_IDS_SQL = """
WITH RECURSIVE ops AS (
    (SELECT operator_id FROM operator_share_prices ORDER BY operator_id LIMIT 1)
    UNION ALL
    SELECT (SELECT q.operator_id FROM operator_share_prices q
            WHERE q.operator_id > ops.operator_id ORDER BY q.operator_id LIMIT 1)
    FROM ops WHERE ops.operator_id IS NOT NULL
)
SELECT operator_id FROM ops WHERE operator_id IS NOT NULL
"""


# ----------------------------------------------------------------------------- the checks


@check(
    "epochs_normalized",
    "Every raw epoch has been normalized from its current document revision (no gaps). "
    "Count: raw epochs missing or stale; examples: the missing ranges.",
)
def _epochs_normalized(conn: Connection, scope: Scope) -> Outcome:
    # Gaps-and-islands over the raw epochs' own order: a range never spans epochs that do not
    # exist in `epochs`, so "219-2618" only appears if those raw documents exist.
    rows = conn.execute(
        text(
            """
            WITH raw AS (
                SELECT e.epoch, row_number() OVER (ORDER BY e.epoch) AS position,
                       CASE WHEN n.epoch IS NULL THEN 'missing' ELSE 'stale' END AS why,
                       n.epoch IS NULL OR n.revision <> e.revision AS bad
                FROM epochs e
                LEFT JOIN epoch_normalizations n ON n.epoch = e.epoch
            ), bad AS (
                SELECT epoch, why,
                       position - row_number() OVER (PARTITION BY why ORDER BY epoch) AS island
                FROM raw WHERE bad
            )
            SELECT min(epoch) AS first_epoch, max(epoch) AS last_epoch, count(*) AS epochs, why
            FROM bad GROUP BY why, island ORDER BY first_epoch
            """
        )
    ).all()
    count = sum(int(r.epochs) for r in rows)
    examples = [
        {"epochs": format_range(r.first_epoch, r.last_epoch), "count": int(r.epochs), "why": r.why}
        for r in rows[:MAX_EXAMPLES]
    ]
    raw_gaps = conn.execute(
        text(
            "SELECT count(*) FROM (SELECT epoch - lag(epoch) OVER (ORDER BY epoch) AS step "
            "FROM epochs) s WHERE step > 1"
        )
    ).scalar_one()
    note = f"{scope.raw_epochs:,} raw epochs, {len(rows):,} missing or stale range(s)"
    if raw_gaps:
        note += f"; the raw epochs themselves skip numbers in {raw_gaps:,} place(s) (not a fault)"
    return Outcome(status_for(count), count, examples, note)


@check(
    "operator_counts",
    "Per epoch, the normalized operator count equals the number of priced operators in the raw "
    "document (read in SQL, independently of the parser) and the count the backfill recorded. "
    "Count: epochs that disagree.",
    reads_raw=True,
)
def _operator_counts(conn: Connection, scope: Scope) -> Outcome:
    rows = [r for counts, _ in _registry_parts(conn, scope) for r in counts]
    return Outcome(
        status_for(len(rows)),
        len(rows),
        rows[:MAX_EXAMPLES],
        f"checked {scope.describe()}",
        bad_epochs=frozenset(int(r["epoch"]) for r in rows),
    )


def _registry_parts(
    conn: Connection, scope: Scope
) -> list[tuple[list[dict[str, Any]], list[tuple[int, int, list[int]]]]]:
    """Both registry checks' results over the scope (see _operators_parts)."""
    return [(counts, phantom) for _, counts, phantom in _operators_parts(conn, scope)]


def _operators_parts(
    conn: Connection, scope: Scope
) -> list[tuple[_PricesPart, list[dict[str, Any]], list[tuple[int, int, list[int]]]]]:
    """prices_match_raw's, operator_counts' and no_phantom_operators' results over the scope,
    from one reading of each document (`_operators_part`).

    All three judge the normalized operator rows against the same part of the raw document
    (its `operators` item, beside the summary the parser reads): the document leaves the server
    once, as the JSON text prices_match_raw parses, and the registry's entry values are taken
    from that JSON and decoded by `registry_of_values` (sql/033's rules, not the parser), so
    the registry stays independent evidence. Reading it once per run instead of once per check
    halves what a full run spends on these checks. The first of them to run maps the chunks,
    the others reuse them.
    """
    return scope.shared(
        "raw_operators", lambda: list(scope.map(_operators_part, conn, PARSE_CHUNK))
    )


#: The storage-key prefix of Domains.Operators entries (as sql/033 spells it): the registry is
#: read here without the parser, so that a parser bug cannot hide itself.
_OPERATORS_PREFIX = "0x0b41d0c7f7b4485bd7be1d66066b00ad34a0a3fbf14e6c92456ca7bd91d59a57"

# Per epoch of the chunk: the recorded operator count and, for an ordinary storage dump, every
# `operators` entry value as text (decoded in Python below, ~3 ms per seed-scale document); for
# any other shape (flat exports, a list around the dump) the registry as sql/033's
# raw_operator_registry reads it (~35 ms per document, which is why it is not used for all).
_REGISTRY_SQL = """
WITH docs AS (
    SELECT n.epoch, n.operator_count AS recorded, e.data || '{}'::jsonb AS d
    FROM epoch_normalizations n
    JOIN epochs e ON e.epoch = n.epoch
    WHERE n.epoch = ANY(CAST(:epochs AS integer[]))
    OFFSET 0
), shaped AS (
    SELECT epoch, recorded, d,
           jsonb_typeof(d) = 'object'
           AND NOT (d ? 'operatorStakes' OR d ? 'operatorSharePrices')
           AND jsonb_typeof(d -> 'operators' -> 'entries') = 'array' AS fast
    FROM docs
    OFFSET 0
)
SELECT epoch, recorded, fast,
       CASE WHEN fast THEN ARRAY(
           SELECT x.v ->> 'value' FROM jsonb_array_elements(d -> 'operators' -> 'entries') x(v)
       ) END AS entry_values,
       CASE WHEN NOT fast THEN ARRAY(
           SELECT jsonb_build_array(r.operator_id, r.priced) FROM raw_operator_registry(d) r
       ) END AS registry
FROM shaped
ORDER BY epoch
"""


def _zero(value: Any) -> bool:
    """sql/033's zero test of a u128 JSON value: a number equal to 0, or a string whose digits
    after its first two characters ('0x') are all zeros; anything else is not zero."""
    if type(value) is int or type(value) is float:
        return value == 0
    if type(value) is str:
        return value[2:].lstrip("0") == ""
    return False


def registry_of_values(values: list[Any]) -> tuple[dict[int, bool], int]:
    """operator id -> priced, from a storage dump's `operators` entry values, by sql/033's
    rules: entries under the Operators prefix, the id from the storage key (u64 little-endian:
    never the array position), priced unless both currentTotalStake and currentTotalShares
    are zero; with the number of priced entries (sql/033 yields a row per entry). A ValueError
    when a payload is not JSON (the SQL would fail the same way)."""
    import orjson

    registry: dict[int, bool] = {}
    priced_entries = 0
    for v in values:
        if type(v) is not str or not v.startswith(_OPERATORS_PREFIX):
            continue  # as sql/033: not a text value under the Operators prefix
        operator_id = int.from_bytes(bytes.fromhex(v[66:82]), "little", signed=True)
        payload = orjson.loads(v[v.index(",") + 1 :])
        if not isinstance(payload, dict):
            raise ValueError(f"operator {operator_id}: payload is not a JSON object")
        priced = not (
            _zero(payload.get("currentTotalStake")) and _zero(payload.get("currentTotalShares"))
        )
        # Several entries of one id (a malformed dump): priced when any is, as sql/033's rows
        # counted per entry would make the counts disagree anyway.
        registry[operator_id] = registry.get(operator_id, False) or priced
        priced_entries += priced
    return registry, priced_entries


def _sql_registries(
    conn: Connection, epochs: list[int]
) -> list[tuple[int, int, list[Any] | None, list[Any] | None]]:
    """The registries of these epochs' documents as _REGISTRY_SQL reads them (the entry values
    of an ordinary storage dump, else sql/033's rows), for _judge_registries."""
    registries: list[tuple[int, int, list[Any] | None, list[Any] | None]] = []
    for doc in conn.execute(text(_REGISTRY_SQL), {"epochs": epochs}):
        if doc.fast:
            registries.append((int(doc.epoch), int(doc.recorded), list(doc.entry_values), None))
        else:
            registries.append((int(doc.epoch), int(doc.recorded), None, list(doc.registry)))
    return registries


def _judge_registries(
    registries: list[tuple[int, int, list[Any] | None, list[Any] | None]],
    normalized: dict[int, list[int]],
) -> tuple[list[dict[str, Any]], list[tuple[int, int, list[int]]]]:
    """The registry checks over documents given as (epoch, recorded operator count, the
    `operators` entry values of an ordinary storage dump or None, else sql/033's registry
    rows), against the normalized operator ids per epoch."""
    counts: list[dict[str, Any]] = []
    phantom: dict[int, list[int]] = {}
    for epoch, recorded, entry_values, sql_registry in registries:
        problem = None
        if entry_values is not None:
            try:
                registry, raw_count = registry_of_values(entry_values)
            except (ValueError, IndexError) as exc:
                registry, raw_count = {}, 0
                problem = f"operator entries do not decode: {exc}"
        else:
            registry, raw_count = {}, 0
            for op, priced in sql_registry or []:
                registry[int(op)] = registry.get(int(op), False) or bool(priced)
                raw_count += bool(priced)
        ops = normalized.get(epoch, [])
        if problem is not None or raw_count != len(ops) or raw_count != recorded:
            row: dict[str, Any] = {
                "epoch": epoch,
                "raw": raw_count,
                "normalized": len(ops),
                "recorded": recorded,
            }
            if problem is not None:
                row["problem"] = problem
            counts.append(row)
        if problem is None:
            for op in ops:
                if op not in registry:
                    phantom.setdefault(op, []).append(epoch)
    return counts, [(op, len(es), sorted(es)) for op, es in sorted(phantom.items())]


@check(
    "prices_match_raw",
    "Every normalized share price, and the operator state row beside it (stake, shares, storage "
    "fee, nomination tax, status, rewards), equals what the shared parser "
    "(shareprice.chain.parser) recomputes from the raw JSON, for every operator both sides "
    "have. Count: rows that differ.",
    reads_raw=True,
)
def _prices_match_raw(conn: Connection, scope: Scope) -> Outcome:
    count = compared = 0
    examples: list[dict[str, Any]] = []
    parse_errors: list[str] = []
    bad: set[int] = set()
    for part, _, _ in _operators_parts(conn, scope):
        count += part.count
        compared += part.compared
        examples.extend(part.examples[: MAX_EXAMPLES - len(examples)])
        parse_errors.extend(part.parse_errors)
        bad.update(part.bad_epochs)
    note = f"checked {scope.describe()}: {compared:,} prices compared"
    if parse_errors:
        note += f"; {len(parse_errors)} raw document(s) no longer parse: {parse_errors[0]}"
    status: Status = "fail" if count or parse_errors else "pass"
    return Outcome(status, count + len(parse_errors), examples, note, bad_epochs=frozenset(bad))


@dataclass
class _PricesPart:
    count: int = 0
    compared: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    parse_errors: list[str] = field(default_factory=list)
    bad_epochs: list[int] = field(default_factory=list)


#: Items of a storage dump no operator price or state is read from, dropped in the database
#: before the document is shipped: the chain's price history (the bulk of an old dump) and the
#: nominator position items (the bulk of a new one: ~2.3 of ~3.1 MB per seed-scale document);
#: nominator_positions_match_raw reads those.
_NOT_FOR_PRICES = (
    "operatorEpochSharePrice",
    "deposits",
    "depositOnHold",
    "withdrawals",
    "operatorHighestSlot",
)


def _operators_part(
    conn: Connection, batch: list[int]
) -> tuple[_PricesPart, list[dict[str, Any]], list[tuple[int, int, list[int]]]]:
    """prices_match_raw's part and the registry checks' (operator_counts' disagreeing epochs,
    no_phantom_operators' (operator, rows, epochs)) over one batch, each document shipped once
    (see _operators_parts)."""
    from shareprice.chain import parser

    part = _PricesPart()
    # jsonb_typeof once in the inner query (each reference to the column detoasts the whole
    # document again); the items no operator is read from are dropped before shipping.
    docs = conn.execute(
        text(
            """
            SELECT epoch, recorded, kind = 'object' AS is_object,
                   ((CASE kind WHEN 'array' THEN data -> 0 ELSE data END)
                     - CAST(:drop AS text[]))::text AS doc
            FROM (SELECT e.epoch, n.operator_count AS recorded, jsonb_typeof(e.data) AS kind,
                         e.data
                  FROM epochs e LEFT JOIN epoch_normalizations n ON n.epoch = e.epoch
                  WHERE e.epoch = ANY(CAST(:batch AS integer[]))
                  OFFSET 0) s
            ORDER BY epoch
            """
        ),
        {"batch": batch, "drop": list(_NOT_FOR_PRICES)},
    ).all()
    # Every column of both tables, in the parser's OperatorState order, NUMERIC as exact ints
    # (fetch.rows). The BETWEEN bounds let the epoch BRIN read one block range instead of one
    # per listed epoch.
    stored: dict[int, dict[int, tuple[Any, ...]]] = {}
    for r in fetch.rows(
        conn,
        """
        SELECT p.epoch, p.operator_id, p.share_price_perq, s.stake_raw, s.shares_raw,
               s.storage_fee_raw, s.nomination_tax, s.status, s.rewards_raw,
               s.operator_id IS NOT NULL AS has_state
        FROM operator_share_prices p
        LEFT JOIN operator_shares s
          ON s.operator_id = p.operator_id AND s.epoch = p.epoch
         AND s.epoch BETWEEN %(lo)s AND %(hi)s
        WHERE p.epoch = ANY(%(batch)s::integer[]) AND p.epoch BETWEEN %(lo)s AND %(hi)s
        """,
        {"batch": batch, "lo": min(batch), "hi": max(batch)},
    ):
        # (price, stake, shares, fee, tax, status, rewards, has_state)
        stored.setdefault(r[0], {})[r[1]] = r[2:]
    registries: list[tuple[int, int, list[Any] | None, list[Any] | None]] = []
    unusual: list[int] = []  # registry read by _REGISTRY_SQL (not an ordinary storage dump)
    for doc in docs:
        try:
            with parser.cyclic_gc_paused():
                obj = parser.load_json(doc.doc)
                if doc.recorded is not None:
                    operators = obj.get("operators") if type(obj) is dict else None
                    if (
                        doc.is_object
                        and "operatorStakes" not in obj
                        and "operatorSharePrices" not in obj
                        and type(operators) is dict
                        and type(operators.get("entries")) is list
                    ):
                        values = [
                            x.get("value") if type(x) is dict else None
                            for x in operators["entries"]
                        ]
                        registries.append((int(doc.epoch), int(doc.recorded), values, None))
                    else:
                        unusual.append(int(doc.epoch))
                record = parser.parse_document(obj)
        except parser.ParseError as exc:
            part.parse_errors.append(str(exc))
            part.bad_epochs.append(doc.epoch)
            if doc.recorded is not None and not any(r[0] == doc.epoch for r in registries):
                unusual.append(int(doc.epoch))
            continue
        normalized = stored.get(doc.epoch, {})
        for op in record.operators:
            row = normalized.get(op.operator_id)
            if row is None:
                continue
            part.compared += 1
            price = row[0]
            state = (op.stake, op.shares, op.storage_fee, op.nomination_tax, op.status, op.rewards)
            if price != op.share_price_perq:
                part.count += 1
                part.bad_epochs.append(doc.epoch)
                if len(part.examples) < MAX_EXAMPLES:
                    part.examples.append(
                        {
                            "epoch": doc.epoch,
                            "operator_id": op.operator_id,
                            "normalized": str(price),
                            "recomputed": str(op.share_price_perq),
                        }
                    )
            elif row[7] and row[1:7] != state:
                # The operator's state row (stake, shares, fees, tax, status, rewards): judged
                # here on every epoch, so comprehensive_analytics_agree, whose sums were the
                # only other witness of fees, rewards and status, may sample (see there).
                # A missing state row is price_formula's business (price without stake row).
                part.count += 1
                part.bad_epochs.append(doc.epoch)
                if len(part.examples) < MAX_EXAMPLES:
                    names = ("stake", "shares", "storage_fee", "nomination_tax", "status")
                    differing = [
                        n
                        for n, a, b in zip((*names, "rewards"), row[1:7], state, strict=True)
                        if a != b
                    ]
                    part.examples.append(
                        {
                            "epoch": doc.epoch,
                            "operator_id": op.operator_id,
                            "columns": ", ".join(differing),
                            "normalized": [_num_str(v) for v in row[1:7]],
                            "recomputed": [_num_str(v) for v in state],
                        }
                    )
    if unusual:
        registries.extend(_sql_registries(conn, unusual))
        registries.sort(key=lambda r: r[0])
    counts, phantom = _judge_registries(
        registries, {epoch: list(ops) for epoch, ops in stored.items()}
    )
    return part, counts, phantom


def _num_str(value: Any) -> Any:
    return str(value) if isinstance(value, int) else value


@check(
    "price_formula",
    "Every stored price is exactly floor(stake * 10^18 / shares) of its stored stake and shares "
    "(exact NUMERIC arithmetic in SQL), and prices and stake rows pair up. Count: offending rows.",
    per_epoch=True,
)
def _price_formula(conn: Connection, scope: Scope) -> Outcome:
    changed = changed_epochs(scope)
    where = "" if changed is None else "WHERE epoch = ANY(CAST(:epochs AS integer[]))"
    rows = conn.execute(
        text(
            f"""
            WITH p AS (SELECT * FROM operator_share_prices {where}),
                 s AS (SELECT * FROM operator_shares {where})
            SELECT coalesce(p.operator_id, s.operator_id) AS operator_id,
                   coalesce(p.epoch, s.epoch) AS epoch,
                   p.share_price_perq AS stored, s.stake_raw AS stake, s.shares_raw AS shares,
                   CASE WHEN s.shares_raw > 0
                        THEN div(s.stake_raw * 1000000000000000000, s.shares_raw) END AS expected,
                   CASE WHEN p.operator_id IS NULL THEN 'stake row without price'
                        WHEN s.operator_id IS NULL THEN 'price without stake row'
                        WHEN s.shares_raw = 0 THEN 'zero shares'
                        ELSE 'price differs' END AS problem
            FROM p
            FULL JOIN s ON s.operator_id = p.operator_id AND s.epoch = p.epoch
            WHERE p.operator_id IS NULL OR s.operator_id IS NULL
               OR (s.shares_raw IS NOT NULL AND (s.shares_raw = 0 OR
                   p.share_price_perq <> div(s.stake_raw * 1000000000000000000, s.shares_raw)))
            ORDER BY 2, 1
            """  # noqa: S608 - only a constant filter is formatted in
        ),
        {"epochs": changed},
    ).all()
    without_shares = conn.execute(
        text(f"SELECT count(*) FROM operator_shares {where} AND shares_raw IS NULL")  # noqa: S608
        if changed is not None
        else text("SELECT count(*) FROM operator_shares WHERE shares_raw IS NULL"),
        {"epochs": changed},
    ).scalar_one()
    note = covered(scope, changed)
    if without_shares:
        note += (
            f"; {without_shares:,} flat-export rows carry no shares: their given price is "
            "checked by prices_match_raw"
        )
    return Outcome(
        status_for(len(rows)),
        len(rows),
        [_row_dict(r) for r in rows[:MAX_EXAMPLES]],
        note,
        bad_epochs=frozenset(int(r.epoch) for r in rows),
    )


@check(
    "chain_prices_agree",
    "The chain's own record (operatorEpochSharePrice, shares per stake) inverted, "
    "floor(10^36 / v), agrees within 1 unit with the computed price of the dump that holds the "
    "state it was recorded from (epoch E's record vs the dump of E+1, per DOMAIN.md); a wider "
    "gap is accepted only when v is exactly the chain's rounding of the same stake and shares. "
    "Count: disagreeing records.",
    per_epoch=True,
)
def _chain_prices_agree(conn: Connection, scope: Scope) -> Outcome:
    changed = changed_epochs(scope)
    # Incremental: records of a changed epoch (their digest, sql/044) and records paired with a
    # changed dump (domain epoch + 1 changed): the epochs around each change.
    around = None if changed is None else sorted({e for c in changed for e in (c, c - 1)})
    chain_filter = "" if around is None else "AND c.domain_epoch = ANY(CAST(:around AS integer[]))"
    pairing = f"""
        FROM operator_chain_share_prices c
        JOIN operator_share_prices p
          ON p.operator_id = c.operator_id AND p.epoch = c.domain_epoch + :offset
        JOIN operator_shares s ON s.operator_id = p.operator_id AND s.epoch = p.epoch
        WHERE p.source = 'storage_dump' {chain_filter}
    """
    disagree = """
        abs(div(CAST(:e36 AS numeric), c.shares_per_stake_perq) - p.share_price_perq) > 1
        AND c.shares_per_stake_perq IS DISTINCT FROM
            CASE WHEN s.stake_raw > 0 THEN div(s.shares_raw * 1000000000000000000, s.stake_raw) END
    """
    counts = {}
    for offset in (1, 0):
        counts[offset] = conn.execute(
            text(
                f"SELECT count(*) AS compared, count(*) FILTER (WHERE {disagree}) AS bad {pairing}"  # noqa: S608
            ),
            {"offset": offset, "e36": E36, "around": around},
        ).one()
    rows = conn.execute(
        text(
            f"""
            SELECT c.operator_id, c.domain_id, c.domain_epoch, p.epoch AS dump_epoch,
                   c.shares_per_stake_perq AS chain_value,
                   div(CAST(:e36 AS numeric), c.shares_per_stake_perq) AS inverted,
                   p.share_price_perq AS computed
            {pairing} AND {disagree}
            ORDER BY c.operator_id, c.domain_epoch
            """  # noqa: S608 - only constant SQL fragments are formatted in
        ),
        {"offset": 1, "e36": E36, "around": around},
    ).all()
    total = conn.execute(text("SELECT count(*) FROM operator_chain_share_prices")).scalar_one()
    compared, bad = int(counts[1].compared), int(counts[1].bad)
    same = counts[0]
    note = (
        f"{total:,} chain records; {compared:,} paired with the dump of the next epoch, "
        f"{compared - bad:,} agree. Same-epoch pairing for comparison: "
        f"{int(same.compared) - int(same.bad):,} of {int(same.compared):,} would agree "
        f"({covered(scope, changed)})"
    )
    bad_epochs = frozenset(e for r in rows for e in (int(r.domain_epoch), int(r.dump_epoch)))
    if total and not compared and changed is None:
        return Outcome("warn", 0, [], note + " (nothing could be paired)", bad_epochs=bad_epochs)
    return Outcome(
        status_for(bad),
        bad,
        [_row_dict(r) for r in rows[:MAX_EXAMPLES]],
        note,
        bad_epochs=bad_epochs,
    )


@check(
    "no_phantom_operators",
    "Every normalized (operator, epoch) row names an operator the raw document of that epoch "
    "registers, with ids decoded from the storage keys (not array positions: the old system's "
    "phantom-operator bug). Count: offending rows.",
    reads_raw=True,
)
def _no_phantom_operators(conn: Connection, scope: Scope) -> Outcome:
    per_operator: dict[int, dict[str, Any]] = {}
    bad: set[int] = set()
    for _, part in _registry_parts(conn, scope):
        for operator_id, rows, epochs in part:
            seen = per_operator.setdefault(operator_id, {"rows": 0, "epochs": set()})
            seen["rows"] += rows
            seen["epochs"].update(epochs)
            bad.update(epochs)
    count = sum(v["rows"] for v in per_operator.values())
    examples = [
        {
            "operator_id": operator_id,
            "rows": v["rows"],
            "first_epoch": min(v["epochs"]),
            "last_epoch": max(v["epochs"]),
        }
        for operator_id, v in sorted(per_operator.items())[:MAX_EXAMPLES]
    ]
    return Outcome(
        status_for(count),
        count,
        examples,
        f"checked {scope.describe()}; {len(per_operator):,} unknown operator id(s)",
        bad_epochs=frozenset(bad),
    )


#: Operator statuses (parser: partialStatus key) under which a falling price is expected.
SLASHED_STATUSES = ("slashed", "pendingSlash")

# Incremental steps: each price row of a changed epoch, and each operator's first row after a
# changed epoch (a deleted row makes that row's step span the change), each with the
# operator's previous priced epoch; primary-key probes only. Steps of slashed operators (by
# operators_metadata) are always taken in full, so their expected falls stay listed as
# warnings in every run, not only in the run that first met them.
_CHANGED_STEPS_SQL = f"""
WITH changed AS (SELECT unnest(CAST(:epochs AS integer[])) AS epoch),
ops AS ({OPERATOR_IDS_SQL}),
later AS (
    SELECT p.operator_id, p.epoch, p.share_price_perq
    FROM operator_share_prices p WHERE p.epoch = ANY(CAST(:epochs AS integer[]))
    UNION
    SELECT o.operator_id, nx.epoch, nx.share_price_perq
    FROM changed c CROSS JOIN ops o
    CROSS JOIN LATERAL (
        SELECT q.epoch, q.share_price_perq FROM operator_share_prices q
        WHERE q.operator_id = o.operator_id AND q.epoch > c.epoch
        ORDER BY q.epoch LIMIT 1
    ) nx
), steps AS (
    SELECT l.operator_id, l.epoch, l.share_price_perq AS price,
           pv.epoch AS previous_epoch, pv.share_price_perq AS previous_price
    FROM later l
    CROSS JOIN LATERAL (
        SELECT q.epoch, q.share_price_perq FROM operator_share_prices q
        WHERE q.operator_id = l.operator_id AND q.epoch < l.epoch
        ORDER BY q.epoch DESC LIMIT 1
    ) pv
    UNION
    SELECT * FROM (
        SELECT operator_id, epoch, share_price_perq AS price,
               lag(epoch) OVER w AS previous_epoch, lag(share_price_perq) OVER w AS previous_price
        FROM operator_share_prices
        WHERE operator_id IN (SELECT m.operator_id FROM operators_metadata m
                              WHERE m.status = ANY(CAST(:slashed AS text[])))
        WINDOW w AS (PARTITION BY operator_id ORDER BY epoch)
    ) s WHERE previous_epoch IS NOT NULL
)
SELECT * FROM steps
"""  # noqa: S608 - only constant SQL is formatted in

_ALL_STEPS_SQL = """
SELECT * FROM (
    SELECT operator_id, epoch, share_price_perq AS price,
           lag(epoch) OVER w AS previous_epoch, lag(share_price_perq) OVER w AS previous_price
    FROM operator_share_prices
    WINDOW w AS (PARTITION BY operator_id ORDER BY epoch)
) s WHERE previous_epoch IS NOT NULL
"""


def _steps_sql(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The price steps (operator, previous_epoch -> epoch) this run judges, as a subquery."""
    changed = changed_epochs(scope)
    if changed is None:
        return _ALL_STEPS_SQL, {}
    return _CHANGED_STEPS_SQL, {"epochs": changed, "slashed": list(SLASHED_STATUSES)}


@check(
    "prices_never_decrease",
    "Each operator's share price never falls from one epoch to the next; a fall is only a "
    "warning for an operator the chain slashed. Count: falls.",
    per_epoch=True,
)
def _prices_never_decrease(conn: Connection, scope: Scope) -> Outcome:
    steps, params = _steps_sql(scope)
    rows = conn.execute(
        text(
            f"""
            WITH steps AS ({steps})
            SELECT s.operator_id, s.previous_epoch, s.epoch, s.previous_price, s.price,
                   coalesce(m.status = ANY(CAST(:slashed AS text[])), false) AS slashed
            FROM steps s
            LEFT JOIN operators_metadata m ON m.operator_id = s.operator_id
            WHERE s.price < s.previous_price
            ORDER BY slashed, s.operator_id, s.epoch
            """  # noqa: S608 - only constant SQL is formatted in
        ),
        {**params, "slashed": list(SLASHED_STATUSES)},
    ).all()
    unexplained = [r for r in rows if not r.slashed]
    status: Status = "fail" if unexplained else ("warn" if rows else "pass")
    slashed_ops = sorted({r.operator_id for r in rows if r.slashed})
    changed = changed_epochs(scope)
    note = "all operators" if changed is None else covered(scope, changed)
    if slashed_ops:
        note += (
            f"; falls of slashed operator(s) {', '.join(map(str, slashed_ops[:10]))} are warnings"
        )
    return Outcome(
        status,
        len(rows),
        [_row_dict(r) for r in rows[:MAX_EXAMPLES]],
        note,
        # Both ends of a fall: the changed end stays unverified, so the next incremental run
        # judges this step again (the other end may be an unchanged, verified neighbour).
        bad_epochs=frozenset(int(e) for r in unexplained for e in (r.epoch, r.previous_epoch)),
    )


@check(
    "metadata_seen_range",
    "operators_metadata lists exactly the operators that have prices, with first_seen_epoch / "
    "last_seen_epoch equal to their first and last priced epoch. Count: operators that disagree.",
)
def _metadata_seen_range(conn: Connection, scope: Scope) -> Outcome:
    # First and last epoch per operator by two primary-key probes each (a loose index scan),
    # not an aggregate over every price row.
    rows = conn.execute(
        text(
            f"""
            WITH ops AS ({OPERATOR_IDS_SQL}),
            seen AS (
                SELECT o.operator_id,
                       (SELECT min(q.epoch) FROM operator_share_prices q
                        WHERE q.operator_id = o.operator_id) AS first_epoch,
                       (SELECT max(q.epoch) FROM operator_share_prices q
                        WHERE q.operator_id = o.operator_id) AS last_epoch
                FROM ops o
            )
            SELECT coalesce(m.operator_id, s.operator_id) AS operator_id,
                   m.first_seen_epoch AS metadata_first, s.first_epoch AS data_first,
                   m.last_seen_epoch AS metadata_last, s.last_epoch AS data_last
            FROM operators_metadata m
            FULL JOIN seen s ON s.operator_id = m.operator_id
            WHERE m.first_seen_epoch IS DISTINCT FROM s.first_epoch
               OR m.last_seen_epoch IS DISTINCT FROM s.last_epoch
            ORDER BY 1
            """  # noqa: S608 - only constant SQL is formatted in
        )
    ).all()
    return Outcome(
        status_for(len(rows)),
        len(rows),
        [_row_dict(r) for r in rows[:MAX_EXAMPLES]],
        "all operators",
    )


#: The two definitions of comprehensive_analytics (sql/011) that must agree.
ANALYTICS_V1 = "comprehensive_analytics_v1"
ANALYTICS_V2 = "comprehensive_analytics_v2"


#: comprehensive_analytics_agree judges at most this many epochs per run (a seeded sample of the
#: run's epochs beyond it). v1 parses whole documents in SQL (~40-100 ms per seed-scale
#: document, more than every other check together), and what it can tell beyond the other
#: checks is whether the two view definitions agree, not whether the data is right.
ANALYTICS_MAX_EPOCHS = 200


def analytics_epochs(scope: Scope, epochs: list[int]) -> list[int]:
    """The epochs comprehensive_analytics_agree compares: all of the run's up to
    ANALYTICS_MAX_EPOCHS, else a sample of that many seeded with the run's seed (reproducible)."""
    import random

    if len(epochs) <= ANALYTICS_MAX_EPOCHS:
        return list(epochs)
    return sorted(random.Random(scope.seed).sample(list(epochs), ANALYTICS_MAX_EPOCHS))


@check(
    "comprehensive_analytics_agree",
    "comprehensive_analytics computed from the raw documents (v1, SQL over epochs.data) equals "
    "the one computed from the normalized tables (v2), column by column. Proves the two view "
    "definitions agree; the data they sum is judged row by row against the raw documents on "
    "every epoch by operator_counts and prices_match_raw, so a run over more than "
    f"{ANALYTICS_MAX_EPOCHS} epochs compares a seeded sample of {ANALYTICS_MAX_EPOCHS} of them "
    "(its note says so). Count: epochs that differ; examples: the columns that differ.",
    reads_raw=True,
)
def _comprehensive_analytics_agree(conn: Connection, scope: Scope) -> Outcome:
    # Why a sample is honest here: every column v2 sums (stake, shares, storage fee, rewards,
    # status, prices, the operator count) is compared with the raw document for every epoch of
    # the run by prices_match_raw and operator_counts; this check adds that v1's SQL and v2's
    # SQL compute the same aggregates, a property of the definitions that a couple of hundred
    # epochs exercise as well as all of them, at a fraction of v1's cost (whole-document JSON
    # parsing in SQL). Runs over few epochs (incremental) still compare every one.
    epochs = scope_epochs(conn, scope)
    chosen = analytics_epochs(scope, epochs)
    # Through the run's mapper (worker processes when there are many), over the chosen epochs.
    narrowed = dataclasses.replace(scope, epochs=chosen)
    rows = [r for part in narrowed.map(_analytics_part, conn, ANALYTICS_CHUNK) for r in part]
    examples = []
    for epoch, v1, v2 in rows[:MAX_EXAMPLES]:
        differing = sorted(
            k for k in set(v1 or {}) | set(v2 or {}) if (v1 or {}).get(k) != (v2 or {}).get(k)
        )
        examples.append(
            {
                "epoch": epoch,
                "columns": ", ".join(differing) if v1 and v2 else "row missing",
                "v1": {k: _num(v1.get(k)) for k in differing} if v1 else None,
                "v2": {k: _num(v2.get(k)) for k in differing} if v2 else None,
            }
        )
    if len(chosen) < len(epochs):
        what = (
            f"a seeded sample (seed {scope.seed}) of {len(chosen):,} of the {len(epochs):,} "
            f"epochs of this run ({scope.describe()}): the definitions are compared on a "
            "sample, the data itself on every epoch by prices_match_raw and operator_counts"
        )
    else:
        what = scope.describe()
    return Outcome(
        status_for(len(rows)),
        len(rows),
        examples,
        f"compared {ANALYTICS_V1} and {ANALYTICS_V2} on " + what,
        bad_epochs=frozenset(epoch for epoch, _, _ in rows),
    )


def scope_epochs(conn: Connection, scope: Scope) -> list[int]:
    """The epochs the raw-reading checks cover in this run, sorted (as Scope.map walks them)."""
    if scope.epochs is not None:
        return list(scope.epochs)
    return [
        int(e)
        for e in conn.exec_driver_sql(
            "SELECT epoch FROM epoch_normalizations ORDER BY epoch"
        ).scalars()
    ]


def _analytics_part(
    conn: Connection, epochs: list[int]
) -> list[tuple[int, dict[str, Any] | None, dict[str, Any] | None]]:
    # Only epochs normalized from their current document: a gap or a stale epoch is
    # epochs_normalized's fault, not a disagreement of the two definitions.
    rows = conn.execute(
        text(
            f"""
            WITH scope AS (
                SELECT n.epoch FROM epoch_normalizations n
                JOIN epochs e ON e.epoch = n.epoch AND e.revision = n.revision
                WHERE n.epoch = ANY(CAST(:epochs AS integer[]))
            ), v1 AS (
                -- The epoch filter is repeated on the view itself: a condition on its grouping
                -- column is pushed down into it, so only these documents are read.
                SELECT a.* FROM {ANALYTICS_V1} a
                WHERE a.epoch = ANY(CAST(:epochs AS integer[]))
                  AND a.epoch IN (SELECT epoch FROM scope)
            ), v2 AS (
                -- One epoch at a time: v2 aggregates its rows in a LEFT JOINed subquery, which
                -- PostgreSQL filters for `epoch = <value>` but not for `= ANY(<array>)`, so a
                -- chunk read that way aggregated all 3.5 M rows at seed scale (~3.5 s, and
                -- again for every chunk); per epoch it reads that epoch's rows (~12 ms).
                SELECT a.* FROM scope s
                CROSS JOIN LATERAL (
                    SELECT * FROM {ANALYTICS_V2} v WHERE v.epoch = s.epoch OFFSET 0
                ) a
            )
            SELECT coalesce(v1.epoch, v2.epoch) AS epoch,
                   to_jsonb(v1) AS v1, to_jsonb(v2) AS v2
            FROM v1 FULL JOIN v2 ON v2.epoch = v1.epoch
            WHERE to_jsonb(v1) IS DISTINCT FROM to_jsonb(v2)
            ORDER BY 1
            """  # noqa: S608 - only constant view names are formatted in
        ),
        {"epochs": epochs},
    ).all()
    return [(int(r.epoch), r.v1, r.v2) for r in rows]


@check(
    "operator_continuity",
    "Each operator has a price in every normalized epoch between its first and last (the old "
    "report's 'operators 0-3 present in every epoch', generalized). Count: missing "
    "(operator, epoch) rows; examples: the missing ranges.",
    per_epoch=True,
)
def _operator_continuity(conn: Connection, scope: Scope) -> Outcome:
    changed = changed_epochs(scope)
    if changed is not None:
        return _operator_continuity_changed(conn, scope, changed)
    # Positions in the normalized epochs' order, so epochs that are not normalized (someone
    # else's fault) or do not exist never count as missing here.
    rows = conn.execute(
        text(
            """
            WITH normalized AS (
                SELECT epoch, row_number() OVER (ORDER BY epoch) AS position
                FROM epoch_normalizations
            ), per_operator AS (
                SELECT p.operator_id, min(p.epoch) AS first_epoch, max(p.epoch) AS last_epoch,
                       count(*) FILTER (WHERE n.epoch IS NOT NULL) AS present
                FROM operator_share_prices p
                LEFT JOIN normalized n ON n.epoch = p.epoch
                GROUP BY p.operator_id
            )
            SELECT o.operator_id, o.first_epoch, o.last_epoch,
                   l.position - f.position + 1 - o.present AS missing
            FROM per_operator o
            JOIN normalized f ON f.epoch = o.first_epoch
            JOIN normalized l ON l.epoch = o.last_epoch
            WHERE l.position - f.position + 1 <> o.present
            ORDER BY o.operator_id
            """
        )
    ).all()
    count = sum(int(r.missing) for r in rows)
    examples: list[dict[str, Any]] = []
    bad: set[int] = set()
    for r in rows:
        missing = (
            conn.execute(
                text(
                    """
                    SELECT n.epoch FROM epoch_normalizations n
                    WHERE n.epoch BETWEEN :first AND :last
                      AND NOT EXISTS (SELECT 1 FROM operator_share_prices p
                                      WHERE p.operator_id = :op AND p.epoch = n.epoch)
                    ORDER BY n.epoch
                    """
                ),
                {"op": r.operator_id, "first": r.first_epoch, "last": r.last_epoch},
            )
            .scalars()
            .all()
        )
        bad.update(int(e) for e in missing)
        if len(examples) >= MAX_EXAMPLES:
            continue
        order = (
            conn.execute(
                text(
                    "SELECT epoch FROM epoch_normalizations "
                    "WHERE epoch BETWEEN :first AND :last ORDER BY epoch"
                ),
                {"first": r.first_epoch, "last": r.last_epoch},
            )
            .scalars()
            .all()
        )
        examples.append(
            {
                "operator_id": r.operator_id,
                "seen": format_range(r.first_epoch, r.last_epoch),
                "missing": ", ".join(format_range(a, b) for a, b in _islands(missing, order)),
            }
        )
    return Outcome(
        status_for(count),
        count,
        examples,
        f"{len(rows):,} operator(s) with gaps",
        bad_epochs=frozenset(bad),
    )


def _operator_continuity_changed(conn: Connection, scope: Scope, changed: list[int]) -> Outcome:
    """Incremental: a gap can only open in a step that touches a changed epoch (a row added,
    removed or an epoch newly normalized), so judge those steps: the normalized epochs strictly
    between an operator's previous priced epoch and its row there must be none."""
    steps, params = _steps_sql(scope)
    rows = conn.execute(
        text(
            f"""
            WITH steps AS ({steps})
            SELECT s.operator_id, s.previous_epoch, s.epoch,
                   array(SELECT n.epoch FROM epoch_normalizations n
                         WHERE n.epoch > s.previous_epoch AND n.epoch < s.epoch
                         ORDER BY n.epoch) AS missing
            FROM steps s
            WHERE EXISTS (SELECT 1 FROM epoch_normalizations n
                          WHERE n.epoch > s.previous_epoch AND n.epoch < s.epoch)
            ORDER BY s.operator_id, s.epoch
            """  # noqa: S608 - only constant SQL is formatted in
        ),
        params,
    ).all()
    count = sum(len(r.missing) for r in rows)
    examples = [
        {
            "operator_id": r.operator_id,
            "seen": format_range(r.previous_epoch, r.epoch),
            "missing": ", ".join(
                format_range(a, b) for a, b in _islands(r.missing, list(r.missing))
            ),
        }
        for r in rows[:MAX_EXAMPLES]
    ]
    bad = {int(e) for r in rows for e in (*r.missing, r.epoch, r.previous_epoch)}
    return Outcome(
        status_for(count),
        count,
        examples,
        f"{len({r.operator_id for r in rows}):,} operator(s) with gaps; {covered(scope, changed)}",
        bad_epochs=frozenset(bad),
    )
