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
- `--sample N`: the checks that read raw JSON look at a seeded random sample of N normalized
  epochs and say so in their note; the others always cover everything.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

Status = Literal["pass", "warn", "fail"]
STATUS_ORDER: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}
MAX_EXAMPLES = 20
#: 10^36 as an exact decimal string: the chain's shares-per-stake inverts to stake-per-share
#: through it (a float 1e36 would be off in the 17th digit).
E36 = str(10**36)

#: SQLSTATEs that mean "this role may not write": insufficient_privilege, read_only_sql_transaction.
READ_ONLY_SQLSTATES = frozenset({"42501", "25006"})


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the runner adds name, timing and what it proves."""

    status: Status
    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class CheckResult:
    name: str
    proves: str
    status: Status
    count: int
    examples: list[dict[str, Any]]
    seconds: float
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "count": self.count,
            "examples": self.examples,
            "seconds": round(self.seconds, 4),
            "proves": self.proves,
            "note": self.note,
        }


@dataclass(frozen=True)
class Scope:
    """Which epochs the raw-reading checks look at."""

    raw_epochs: int
    normalized_epochs: int
    #: None: all normalized epochs. Otherwise the seeded sample, sorted.
    sample: list[int] | None
    sample_size: int | None
    seed: int

    def describe(self) -> str:
        if self.sample is None:
            return f"all {self.normalized_epochs:,} normalized epochs"
        return (
            f"a seeded sample of {len(self.sample):,} of {self.normalized_epochs:,} "
            f"normalized epochs (seed {self.seed})"
        )

    @property
    def params(self) -> dict[str, Any]:
        """Bind `:sample` (NULL = all) for the SQL filter `epoch_in_scope`."""
        return {"sample": self.sample}


# Used by raw-reading checks: `(:sample IS NULL OR e.epoch = ANY(:sample))`.
EPOCH_IN_SCOPE = "(CAST(:sample AS integer[]) IS NULL OR {col} = ANY(CAST(:sample AS integer[])))"


@dataclass(frozen=True)
class Check:
    name: str
    proves: str
    func: Callable[[Connection, Scope], Outcome]
    reads_raw: bool


CHECKS: list[Check] = []


def check(name: str, proves: str, reads_raw: bool = False):
    def register(func: Callable[[Connection, Scope], Outcome]):
        CHECKS.append(Check(name, proves, func, reads_raw))
        return func

    return register


def check_names() -> list[str]:
    return [c.name for c in CHECKS]


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


def _status(count: int, bad: Status = "fail") -> Status:
    return "pass" if count == 0 else bad


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
    return Outcome(_status(count), count, examples, note)


@check(
    "operator_counts",
    "Per epoch, the normalized operator count equals the number of priced operators in the raw "
    "document (read in SQL, independently of the parser) and the count the backfill recorded. "
    "Count: epochs that disagree.",
    reads_raw=True,
)
def _operator_counts(conn: Connection, scope: Scope) -> Outcome:
    rows = conn.execute(
        text(
            f"""
            WITH scope AS (
                SELECT n.epoch, n.operator_count AS recorded
                FROM epoch_normalizations n
                WHERE {EPOCH_IN_SCOPE.format(col="n.epoch")}
            ), raw AS (
                SELECT s.epoch, count(*) FILTER (WHERE r.priced) AS raw_count
                FROM scope s
                JOIN epochs e ON e.epoch = s.epoch
                CROSS JOIN LATERAL raw_operator_registry(e.data) AS r
                GROUP BY s.epoch
            ), normalized AS (
                SELECT p.epoch, count(*) AS normalized_count
                FROM operator_share_prices p
                WHERE {EPOCH_IN_SCOPE.format(col="p.epoch")}
                GROUP BY p.epoch
            )
            SELECT s.epoch, coalesce(r.raw_count, 0) AS raw,
                   coalesce(p.normalized_count, 0) AS normalized, s.recorded
            FROM scope s
            LEFT JOIN raw r ON r.epoch = s.epoch
            LEFT JOIN normalized p ON p.epoch = s.epoch
            WHERE coalesce(r.raw_count, 0) <> coalesce(p.normalized_count, 0)
               OR coalesce(r.raw_count, 0) <> s.recorded
            ORDER BY s.epoch
            """  # noqa: S608 - only constant SQL fragments are formatted in
        ),
        scope.params,
    ).all()
    return Outcome(
        _status(len(rows)),
        len(rows),
        [_row_dict(r) for r in rows[:MAX_EXAMPLES]],
        f"checked {scope.describe()}",
    )


@check(
    "prices_match_raw",
    "Every normalized share price equals the price recomputed from the raw JSON by the shared "
    "parser (shareprice.chain.parser), for every operator both sides have. Count: rows that differ.",
    reads_raw=True,
)
def _prices_match_raw(conn: Connection, scope: Scope) -> Outcome:
    from shareprice.chain import parser

    epochs = (
        scope.sample
        if scope.sample is not None
        else conn.execute(text("SELECT epoch FROM epoch_normalizations ORDER BY epoch"))
        .scalars()
        .all()
    )
    count = compared = 0
    examples: list[dict[str, Any]] = []
    parse_errors: list[str] = []
    batch_size = 25
    for start in range(0, len(epochs), batch_size):
        batch = list(epochs[start : start + batch_size])
        # The chain's price history is the bulk of a storage dump and plays no part in prices:
        # drop it in the database rather than ship and parse it.
        docs = conn.execute(
            text(
                """
                SELECT epoch,
                       ((CASE jsonb_typeof(data) WHEN 'array' THEN data -> 0 ELSE data END)
                         - 'operatorEpochSharePrice')::text AS doc
                FROM epochs WHERE epoch = ANY(CAST(:batch AS integer[]))
                ORDER BY epoch
                """
            ),
            {"batch": batch},
        ).all()
        stored: dict[int, dict[int, int]] = {}
        for r in conn.execute(
            text(
                "SELECT epoch, operator_id, share_price_perq FROM operator_share_prices "
                "WHERE epoch = ANY(CAST(:batch AS integer[]))"
            ),
            {"batch": batch},
        ):
            stored.setdefault(r.epoch, {})[r.operator_id] = int(r.share_price_perq)
        for doc in docs:
            try:
                record = parser.parse_document(doc.doc)
            except parser.ParseError as exc:
                parse_errors.append(str(exc))
                continue
            normalized = stored.get(doc.epoch, {})
            for op in record.operators:
                price = normalized.get(op.operator_id)
                if price is None:
                    continue
                compared += 1
                if price != op.share_price_perq:
                    count += 1
                    if len(examples) < MAX_EXAMPLES:
                        examples.append(
                            {
                                "epoch": doc.epoch,
                                "operator_id": op.operator_id,
                                "normalized": str(price),
                                "recomputed": str(op.share_price_perq),
                            }
                        )
    note = f"checked {scope.describe()}: {compared:,} prices compared"
    if parse_errors:
        note += f"; {len(parse_errors)} raw document(s) no longer parse: {parse_errors[0]}"
    status: Status = "fail" if count or parse_errors else "pass"
    return Outcome(status, count + len(parse_errors), examples, note)


@check(
    "price_formula",
    "Every stored price is exactly floor(stake * 10^18 / shares) of its stored stake and shares "
    "(exact NUMERIC arithmetic in SQL), and prices and stake rows pair up. Count: offending rows.",
)
def _price_formula(conn: Connection, scope: Scope) -> Outcome:
    rows = conn.execute(
        text(
            """
            SELECT coalesce(p.operator_id, s.operator_id) AS operator_id,
                   coalesce(p.epoch, s.epoch) AS epoch,
                   p.share_price_perq AS stored, s.stake_raw AS stake, s.shares_raw AS shares,
                   CASE WHEN s.shares_raw > 0
                        THEN div(s.stake_raw * 1000000000000000000, s.shares_raw) END AS expected,
                   CASE WHEN p.operator_id IS NULL THEN 'stake row without price'
                        WHEN s.operator_id IS NULL THEN 'price without stake row'
                        WHEN s.shares_raw = 0 THEN 'zero shares'
                        ELSE 'price differs' END AS problem
            FROM operator_share_prices p
            FULL JOIN operator_shares s
              ON s.operator_id = p.operator_id AND s.epoch = p.epoch
            WHERE p.operator_id IS NULL OR s.operator_id IS NULL
               OR (s.shares_raw IS NOT NULL AND (s.shares_raw = 0 OR
                   p.share_price_perq <> div(s.stake_raw * 1000000000000000000, s.shares_raw)))
            ORDER BY 2, 1
            """
        )
    ).all()
    without_shares = conn.execute(
        text("SELECT count(*) FROM operator_shares WHERE shares_raw IS NULL")
    ).scalar_one()
    note = "all rows"
    if without_shares:
        note += (
            f"; {without_shares:,} flat-export rows carry no shares: their given price is "
            "checked by prices_match_raw"
        )
    return Outcome(_status(len(rows)), len(rows), [_row_dict(r) for r in rows[:MAX_EXAMPLES]], note)


@check(
    "chain_prices_agree",
    "The chain's own record (operatorEpochSharePrice, shares per stake) inverted, "
    "floor(10^36 / v), agrees within 1 unit with the computed price of the dump that holds the "
    "state it was recorded from (epoch E's record vs the dump of E+1, per DOMAIN.md); a wider "
    "gap is accepted only when v is exactly the chain's rounding of the same stake and shares. "
    "Count: disagreeing records.",
)
def _chain_prices_agree(conn: Connection, scope: Scope) -> Outcome:
    pairing = """
        FROM operator_chain_share_prices c
        JOIN operator_share_prices p
          ON p.operator_id = c.operator_id AND p.epoch = c.domain_epoch + :offset
        JOIN operator_shares s ON s.operator_id = p.operator_id AND s.epoch = p.epoch
        WHERE p.source = 'storage_dump'
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
            {"offset": offset, "e36": E36},
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
            LIMIT :limit
            """  # noqa: S608 - only constant SQL fragments are formatted in
        ),
        {"offset": 1, "limit": MAX_EXAMPLES, "e36": E36},
    ).all()
    total = conn.execute(text("SELECT count(*) FROM operator_chain_share_prices")).scalar_one()
    compared, bad = int(counts[1].compared), int(counts[1].bad)
    same = counts[0]
    note = (
        f"{total:,} chain records; {compared:,} paired with the dump of the next epoch, "
        f"{compared - bad:,} agree. Same-epoch pairing for comparison: "
        f"{int(same.compared) - int(same.bad):,} of {int(same.compared):,} would agree"
    )
    if total and not compared:
        return Outcome("warn", 0, [], note + " (nothing could be paired)")
    return Outcome(_status(bad), bad, [_row_dict(r) for r in rows], note)


@check(
    "no_phantom_operators",
    "Every normalized (operator, epoch) row names an operator the raw document of that epoch "
    "registers, with ids decoded from the storage keys (not array positions: the old system's "
    "phantom-operator bug). Count: offending rows.",
    reads_raw=True,
)
def _no_phantom_operators(conn: Connection, scope: Scope) -> Outcome:
    rows = conn.execute(
        text(
            f"""
            WITH scope AS (
                SELECT n.epoch FROM epoch_normalizations n
                WHERE {EPOCH_IN_SCOPE.format(col="n.epoch")}
            ), registry AS (
                SELECT s.epoch, r.operator_id
                FROM scope s
                JOIN epochs e ON e.epoch = s.epoch
                CROSS JOIN LATERAL raw_operator_registry(e.data) AS r
            ), phantom AS (
                SELECT p.operator_id, p.epoch
                FROM operator_share_prices p
                JOIN scope s ON s.epoch = p.epoch
                WHERE NOT EXISTS (
                    SELECT 1 FROM registry g
                    WHERE g.epoch = p.epoch AND g.operator_id = p.operator_id
                )
            )
            SELECT operator_id, count(*) AS rows, min(epoch) AS first_epoch,
                   max(epoch) AS last_epoch
            FROM phantom GROUP BY operator_id ORDER BY operator_id
            """  # noqa: S608 - only constant SQL fragments are formatted in
        ),
        scope.params,
    ).all()
    count = sum(int(r.rows) for r in rows)
    return Outcome(
        _status(count),
        count,
        [_row_dict(r) for r in rows[:MAX_EXAMPLES]],
        f"checked {scope.describe()}; {len(rows):,} unknown operator id(s)",
    )


#: Operator statuses (parser: partialStatus key) under which a falling price is expected.
SLASHED_STATUSES = ("slashed", "pendingSlash")


@check(
    "prices_never_decrease",
    "Each operator's share price never falls from one epoch to the next; a fall is only a "
    "warning for an operator the chain slashed. Count: falls.",
)
def _prices_never_decrease(conn: Connection, scope: Scope) -> Outcome:
    rows = conn.execute(
        text(
            """
            WITH steps AS (
                SELECT operator_id, epoch, share_price_perq AS price,
                       lag(share_price_perq) OVER w AS previous_price,
                       lag(epoch) OVER w AS previous_epoch
                FROM operator_share_prices
                WINDOW w AS (PARTITION BY operator_id ORDER BY epoch)
            )
            SELECT s.operator_id, s.previous_epoch, s.epoch, s.previous_price, s.price,
                   coalesce(m.status = ANY(CAST(:slashed AS text[])), false) AS slashed
            FROM steps s
            LEFT JOIN operators_metadata m ON m.operator_id = s.operator_id
            WHERE s.price < s.previous_price
            ORDER BY slashed, s.operator_id, s.epoch
            """
        ),
        {"slashed": list(SLASHED_STATUSES)},
    ).all()
    unexplained = [r for r in rows if not r.slashed]
    status: Status = "fail" if unexplained else ("warn" if rows else "pass")
    slashed_ops = sorted({r.operator_id for r in rows if r.slashed})
    note = "all operators"
    if slashed_ops:
        note += (
            f"; falls of slashed operator(s) {', '.join(map(str, slashed_ops[:10]))} are warnings"
        )
    return Outcome(status, len(rows), [_row_dict(r) for r in rows[:MAX_EXAMPLES]], note)


@check(
    "metadata_seen_range",
    "operators_metadata lists exactly the operators that have prices, with first_seen_epoch / "
    "last_seen_epoch equal to their first and last priced epoch. Count: operators that disagree.",
)
def _metadata_seen_range(conn: Connection, scope: Scope) -> Outcome:
    rows = conn.execute(
        text(
            """
            WITH seen AS (
                SELECT operator_id, min(epoch) AS first_epoch, max(epoch) AS last_epoch
                FROM operator_share_prices GROUP BY operator_id
            )
            SELECT coalesce(m.operator_id, s.operator_id) AS operator_id,
                   m.first_seen_epoch AS metadata_first, s.first_epoch AS data_first,
                   m.last_seen_epoch AS metadata_last, s.last_epoch AS data_last
            FROM operators_metadata m
            FULL JOIN seen s ON s.operator_id = m.operator_id
            WHERE m.first_seen_epoch IS DISTINCT FROM s.first_epoch
               OR m.last_seen_epoch IS DISTINCT FROM s.last_epoch
            ORDER BY 1
            """
        )
    ).all()
    return Outcome(
        _status(len(rows)), len(rows), [_row_dict(r) for r in rows[:MAX_EXAMPLES]], "all operators"
    )


#: The two definitions of comprehensive_analytics (sql/011) that must agree.
ANALYTICS_V1 = "comprehensive_analytics_v1"
ANALYTICS_V2 = "comprehensive_analytics_v2"


@check(
    "comprehensive_analytics_agree",
    "comprehensive_analytics computed from the raw documents (v1, SQL over epochs.data) equals "
    "the one computed from the normalized tables (v2), column by column, on every normalized "
    "epoch. Count: epochs that differ; examples: the columns that differ.",
    reads_raw=True,
)
def _comprehensive_analytics_agree(conn: Connection, scope: Scope) -> Outcome:
    # Only epochs normalized from their current document: a gap or a stale epoch is
    # epochs_normalized's fault, not a disagreement of the two definitions.
    rows = conn.execute(
        text(
            f"""
            WITH scope AS (
                SELECT n.epoch FROM epoch_normalizations n
                JOIN epochs e ON e.epoch = n.epoch AND e.revision = n.revision
                WHERE {EPOCH_IN_SCOPE.format(col="n.epoch")}
            ), v1 AS (
                -- The sample filter is repeated on the view itself: a condition on its grouping
                -- column is pushed down into it, so only sampled documents are read.
                SELECT a.* FROM {ANALYTICS_V1} a
                WHERE {EPOCH_IN_SCOPE.format(col="a.epoch")}
                  AND a.epoch IN (SELECT epoch FROM scope)
            ), v2 AS (
                SELECT a.* FROM {ANALYTICS_V2} a
                WHERE {EPOCH_IN_SCOPE.format(col="a.epoch")}
                  AND a.epoch IN (SELECT epoch FROM scope)
            )
            SELECT coalesce(v1.epoch, v2.epoch) AS epoch,
                   to_jsonb(v1) AS v1, to_jsonb(v2) AS v2
            FROM v1 FULL JOIN v2 ON v2.epoch = v1.epoch
            WHERE to_jsonb(v1) IS DISTINCT FROM to_jsonb(v2)
            ORDER BY 1
            """  # noqa: S608 - only constant names and SQL fragments are formatted in
        ),
        scope.params,
    ).all()
    examples = []
    for r in rows[:MAX_EXAMPLES]:
        v1, v2 = r.v1 or {}, r.v2 or {}
        differing = sorted(k for k in set(v1) | set(v2) if v1.get(k) != v2.get(k))
        examples.append(
            {
                "epoch": r.epoch,
                "columns": ", ".join(differing) if v1 and v2 else "row missing",
                "v1": {k: _num(v1.get(k)) for k in differing} if v1 else None,
                "v2": {k: _num(v2.get(k)) for k in differing} if v2 else None,
            }
        )
    return Outcome(
        _status(len(rows)),
        len(rows),
        examples,
        f"compared {ANALYTICS_V1} and {ANALYTICS_V2} on " + scope.describe(),
    )


@check(
    "operator_continuity",
    "Each operator has a price in every normalized epoch between its first and last (the old "
    "report's 'operators 0-3 present in every epoch', generalized). Count: missing "
    "(operator, epoch) rows; examples: the missing ranges.",
)
def _operator_continuity(conn: Connection, scope: Scope) -> Outcome:
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
    for r in rows[:MAX_EXAMPLES]:
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
    return Outcome(_status(count), count, examples, f"{len(rows):,} operator(s) with gaps")


# ----------------------------------------------------------------------------- running


@dataclass(frozen=True)
class CheckRun:
    started_at: datetime
    seconds: float
    scope: Scope
    results: list[CheckResult]
    only: list[str] | None

    @property
    def status(self) -> Status:
        worst = max((STATUS_ORDER[r.status] for r in self.results), default=0)
        return next(s for s, rank in STATUS_ORDER.items() if rank == worst)  # type: ignore[return-value]

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "seconds": round(self.seconds, 4),
            "scope": asdict(self.scope) | {"description": self.scope.describe()},
            "checks": [r.to_json() for r in self.results],
        }


def sample_epochs(all_epochs: Sequence[int], size: int, seed: int) -> list[int]:
    """A reproducible sample: the same seed and data give the same epochs."""
    if size >= len(all_epochs):
        return sorted(all_epochs)
    return sorted(random.Random(seed).sample(list(all_epochs), size))


def select_checks(only: Sequence[str] | None) -> list[Check]:
    if not only:
        return list(CHECKS)
    unknown = [n for n in only if n not in check_names()]
    if unknown:
        raise ValueError(
            f"unknown check(s) {', '.join(unknown)}; known: {', '.join(check_names())}"
        )
    return [c for c in CHECKS if c.name in set(only)]


def run_checks(
    engine: Engine,
    *,
    only: Sequence[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    statement_timeout_s: float | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    on_start: Callable[[Check], None] | None = None,
) -> CheckRun:
    """Run the checks on one consistent snapshot; a check that errors is reported as failed."""
    selected = select_checks(only)
    if sample is not None and sample <= 0:
        raise ValueError("--sample must be a positive number of epochs")
    started_at = datetime.now().astimezone()
    started = time.perf_counter()
    results: list[CheckResult] = []
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if statement_timeout_s:
            conn.execute(
                text("SELECT set_config('statement_timeout', :ms, true)"),
                {"ms": str(int(statement_timeout_s * 1000))},
            )
        raw_epochs = int(conn.execute(text("SELECT count(*) FROM epochs")).scalar_one())
        normalized = conn.execute(text("SELECT epoch FROM epoch_normalizations ORDER BY epoch"))
        normalized_epochs = normalized.scalars().all()
        scope = Scope(
            raw_epochs=raw_epochs,
            normalized_epochs=len(normalized_epochs),
            sample=sample_epochs(normalized_epochs, sample, seed) if sample else None,
            sample_size=sample,
            seed=seed,
        )
        for item in selected:
            if on_start:
                on_start(item)
            began = time.perf_counter()
            conn.exec_driver_sql("SAVEPOINT one_check")
            try:
                outcome = item.func(conn, scope)
                conn.exec_driver_sql("RELEASE SAVEPOINT one_check")
            except sa.exc.DBAPIError as exc:
                conn.exec_driver_sql("ROLLBACK TO SAVEPOINT one_check")
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                outcome = Outcome("fail", 0, [], f"could not run: {reason}")
            result = CheckResult(
                name=item.name,
                proves=item.proves,
                status=outcome.status,
                count=outcome.count,
                examples=outcome.examples[:MAX_EXAMPLES],
                seconds=time.perf_counter() - began,
                note=outcome.note,
            )
            results.append(result)
            if on_result:
                on_result(result)
        conn.exec_driver_sql("COMMIT")
    return CheckRun(
        started_at=started_at,
        seconds=time.perf_counter() - started,
        scope=scope,
        results=results,
        only=list(only) if only else None,
    )


# ----------------------------------------------------------------------------- persistence


@dataclass(frozen=True)
class SaveResult:
    run_id: int | None
    #: Why nothing was saved (read-only role), else "".
    message: str = ""

    @property
    def saved(self) -> bool:
        return self.run_id is not None


def is_read_only_error(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in READ_ONLY_SQLSTATES


def save_run(engine: Engine, run: CheckRun, source: str = "cli") -> SaveResult:
    """Keep the run in integrity_runs; on a read-only role, skip with a reason instead of failing."""
    import orjson

    try:
        with engine.begin() as conn:
            run_id = conn.execute(
                text(
                    """
                    INSERT INTO integrity_runs
                        (started_at, seconds, status, sample_size, sample_seed, only_checks,
                         source, scale)
                    VALUES (:started_at, :seconds, :status, :sample_size, :seed, :only,
                            :source, CAST(:scale AS jsonb))
                    RETURNING run_id
                    """
                ),
                {
                    "started_at": run.started_at,
                    "seconds": run.seconds,
                    "status": run.status,
                    "sample_size": run.scope.sample_size,
                    "seed": run.scope.seed if run.scope.sample_size else None,
                    "only": run.only,
                    "source": source,
                    "scale": orjson.dumps(
                        {
                            "raw_epochs": run.scope.raw_epochs,
                            "normalized_epochs": run.scope.normalized_epochs,
                        }
                    ).decode(),
                },
            ).scalar_one()
            conn.execute(
                text(
                    """
                    INSERT INTO integrity_check_results
                        (run_id, position, name, status, count, examples, seconds, note)
                    VALUES (:run_id, :position, :name, :status, :count,
                            CAST(:examples AS jsonb), :seconds, :note)
                    """
                ),
                [
                    {
                        "run_id": run_id,
                        "position": i,
                        "name": r.name,
                        "status": r.status,
                        "count": r.count,
                        "examples": orjson.dumps(r.examples).decode(),
                        "seconds": r.seconds,
                        "note": r.note,
                    }
                    for i, r in enumerate(run.results)
                ],
            )
        return SaveResult(int(run_id))
    except sa.exc.DBAPIError as exc:
        if is_read_only_error(exc):
            return SaveResult(
                None,
                "not saved: this connection may not write (read-only role), so the run is not "
                "in the history. Run `shareprice check` with the main database URL to record it.",
            )
        raise


@dataclass(frozen=True)
class HistoryRun:
    run_id: int
    started_at: datetime
    seconds: float
    status: str
    sample_size: int | None
    source: str
    #: name -> (status, count, seconds)
    checks: dict[str, tuple[str, int, float]]


def history(engine: Engine, limit: int = 50) -> list[HistoryRun]:
    """The latest runs, newest first, with each check's status, count and time."""
    with engine.connect() as conn:
        runs = conn.execute(
            text(
                "SELECT run_id, started_at, seconds, status, sample_size, source "
                "FROM integrity_runs ORDER BY run_id DESC LIMIT :limit"
            ),
            {"limit": limit},
        ).all()
        if not runs:
            return []
        per_run: dict[int, dict[str, tuple[str, int, float]]] = {r.run_id: {} for r in runs}
        for r in conn.execute(
            text(
                "SELECT run_id, name, status, count, seconds FROM integrity_check_results "
                "WHERE run_id = ANY(CAST(:ids AS bigint[])) ORDER BY run_id, position"
            ),
            {"ids": list(per_run)},
        ):
            per_run[r.run_id][r.name] = (r.status, int(r.count), float(r.seconds))
    return [
        HistoryRun(
            r.run_id,
            r.started_at,
            float(r.seconds),
            r.status,
            r.sample_size,
            r.source,
            per_run[r.run_id],
        )
        for r in runs
    ]


def load_results(
    engine: Engine, run_id: int | None = None
) -> tuple[HistoryRun, list[CheckResult]] | None:
    """A saved run's full results (the latest when run_id is None), or None when there is none."""
    proves = {c.name: c.proves for c in CHECKS}
    with engine.connect() as conn:
        run = conn.execute(
            text(
                "SELECT run_id, started_at, seconds, status, sample_size, source "
                "FROM integrity_runs WHERE run_id = coalesce(CAST(:id AS bigint), "
                "(SELECT max(run_id) FROM integrity_runs))"
            ),
            {"id": run_id},
        ).one_or_none()
        if run is None:
            return None
        rows = conn.execute(
            text(
                "SELECT name, status, count, examples, seconds, note FROM integrity_check_results "
                "WHERE run_id = :id ORDER BY position"
            ),
            {"id": run.run_id},
        ).all()
    results = [
        CheckResult(
            r.name,
            proves.get(r.name, ""),
            r.status,
            int(r.count),
            list(r.examples),
            float(r.seconds),
            r.note,
        )
        for r in rows
    ]
    summary = HistoryRun(
        run.run_id,
        run.started_at,
        float(run.seconds),
        run.status,
        run.sample_size,
        run.source,
        {r.name: (r.status, r.count, r.seconds) for r in results},
    )
    return summary, results


def results_table(results: Sequence[CheckResult]) -> list[dict[str, Any]]:
    icons = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail"}
    return [
        {
            "check": r.name,
            "status": icons.get(r.status, r.status),
            "count": r.count,
            "seconds": round(r.seconds, 3),
            "note": r.note,
        }
        for r in results
    ]


def history_table(runs: Sequence[HistoryRun]) -> list[dict[str, Any]]:
    """One row per run, one column per check (its status and count): regressions stand out."""
    names = check_names()
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run": run.run_id,
            "started": run.started_at,
            "status": run.status,
            "seconds": round(run.seconds, 2),
            "scope": f"sample {run.sample_size}" if run.sample_size else "all",
            "by": run.source,
        }
        for name in names:
            if name in run.checks:
                status, count, _ = run.checks[name]
                row[name] = status if status == "pass" else f"{status} ({count:,})"
            else:
                row[name] = ""
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- text rendering


def format_table(run: CheckRun) -> str:
    """The results as `shareprice check` prints them."""
    width = max((len(r.name) for r in run.results), default=5)
    lines = [f"{'check':<{width}}  status  {'count':>9}  {'seconds':>8}  note"]
    for r in run.results:
        lines.append(
            f"{r.name:<{width}}  {r.status.upper():<6}  {r.count:>9,}  {r.seconds:>8.2f}  {r.note}"
        )
        if r.status != "pass":
            for example in r.examples[:5]:
                lines.append("    " + ", ".join(f"{k}={v}" for k, v in example.items()))
            if r.count > 5 and r.examples:
                lines.append(f"    ... up to {MAX_EXAMPLES} examples with --json")
    lines.append(
        f"{run.status.upper()}: {sum(r.status == 'fail' for r in run.results)} failed, "
        f"{sum(r.status == 'warn' for r in run.results)} warned, "
        f"{sum(r.status == 'pass' for r in run.results)} passed on {run.scope.describe()} "
        f"in {run.seconds:.2f}s"
    )
    return "\n".join(lines)
