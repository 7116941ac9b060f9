"""Integrity checks of the nominator positions (issue 14, sql/042).

Positions are stored as change rows (a row at from_epoch whenever a position's state differs
from the epoch before; sql/042's header gives the reading rule), so a position's state at epoch
X is the latest row at or before X within X's segment. These checks walk the rows once in epoch
order, keeping every position's state and per-operator sums up to date, and judge each epoch of
the run (`judged_epochs`): an incremental run judges the epochs whose digest moved since they
were last verified (sql/044 hashes the change rows into the digest of their from_epoch, the
first epoch whose state they change) and the epoch after each; full and sample runs judge every
epoch that has positions. The walk is shared by the SQL-side checks of one run (Scope.shared).

What each proves, on the chain's own arithmetic (DOMAIN.md, "Nominator positions"):
- shares sum: an operator's total shares minus the effective shares of its positions is in
  [0, number of deposits] (each conversion rounds down by less than one share);
- storage fees: known + pending storage fee deposits sum exactly to the operator's storage fee;
- key sets: every Deposits entry has a DepositOnHold entry and vice versa; every Withdrawals
  key has a deposit;
- pending prices: every ended pending epoch has a chain price, and effective_shares is exactly
  known + floor(P * amount / 10^18) (known alone while the pending epoch has not ended);
- gain: what a position is worth (its shares' value, plus its withdrawals' stake and shares'
  value, plus a deposit still pending) is at least the principal on hold, except on slashed
  operators; judged where a position changes, since between changes its value only rises with
  the price (prices_never_decrease proves that);
- value bound: floor(sum of effective shares * price / 10^18) <= the operator's stake, which
  bounds the sum of the positions' values (a sum of floors is at most the floor of the sum);
- positions match raw: the state at each judged epoch equals what shareprice.chain.nominators
  decodes from that epoch's document (reads raw JSON).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from sqlalchemy import text
from sqlalchemy.engine import Connection

from shareprice.chain import nominators, parser
from shareprice.chain.parser import ParseError
from shareprice.checks import fetch
from shareprice.checks.definitions import SLASHED_STATUSES, changed_epochs
from shareprice.checks.registry import MAX_EXAMPLES, Outcome, Scope, check, status_for

PERQ = 10**18
#: Epochs per chunk of the raw positions check: each chunk starts with a jump to its first
#: epoch (~1 s at seed scale: one row per position) and decodes each distinct entry text once,
#: so fewer, longer chunks (about eight per worker in a full run at seed scale).
POSITIONS_CHUNK = 250
#: Epochs per chunk of a sample run's raw positions check (epochs far apart: see there).
SAMPLE_POSITIONS_CHUNK = 10
#: Epochs whose position item texts are in memory at once within a chunk.
ITEMS_BATCH = 25

_POSITION_COLUMNS = (
    "known_shares, known_storage_fee, pending_domain_id, pending_epoch, pending_amount, "
    "pending_storage_fee, effective_shares, deposit_on_hold"
)
_WITHDRAWAL_COLUMNS = (
    "total_amount, total_storage_fee, in_shares_domain_id, in_shares_epoch, "
    "in_shares_unlock_block, in_shares, in_shares_storage_fee_refund, unlocking"
)

#: A position's state: the row's state columns as ints (None: NULL), in _POSITION_COLUMNS order.
PositionState = tuple[Any, ...]
Key = tuple[int, bytes]


@dataclass(frozen=True)
class EpochInfo:
    epoch: int
    base_revision: int | None
    head_domain_number: int | None
    positions: int
    withdrawals: int


def _epoch_infos(conn: Connection) -> dict[int, EpochInfo]:
    return {
        int(r.epoch): EpochInfo(
            int(r.epoch),
            r.base_revision,
            r.head_domain_number,
            int(r.positions),
            int(r.withdrawals),
        )
        for r in conn.execute(
            text(
                # Normalized epochs only: positions of an epoch that is not (or no longer)
                # normalized are epochs_normalized's business, not a disagreement here.
                "SELECT p.epoch, p.base_revision, p.head_domain_number, p.positions, "
                "p.withdrawals FROM epoch_positions p "
                "JOIN epoch_normalizations n ON n.epoch = p.epoch ORDER BY p.epoch"
            )
        )
    }


def judged_epochs(conn: Connection, scope: Scope, infos: dict[int, EpochInfo]) -> list[int]:
    """The epochs with positions this run judges: the changed ones and the epoch after each
    (incremental), else all of them."""
    changed = changed_epochs(scope)
    if changed is None:
        return sorted(infos)
    ordered = sorted(infos)
    after = {e: ordered[i + 1] for i, e in enumerate(ordered[:-1])}
    wanted = set(changed) | {after[e] for e in changed if e in after}
    return sorted(e for e in wanted if e in infos)


def _segment_start(infos: dict[int, EpochInfo], x: int) -> int | None:
    starts = [e for e, i in infos.items() if e <= x and i.base_revision is None]
    return max(starts) if starts else None


@dataclass
class Walk:
    """Every position's and withdrawal's state while walking epochs in order."""

    positions: dict[Key, PositionState] = field(default_factory=dict)
    withdrawals: dict[Key, tuple[Any, ...]] = field(default_factory=dict)


# The latest change row per position in (after, upto]: what those epochs leave each position
# at, so a walk that skips epochs receives one row per position instead of every change in
# between. Per (operator, account) key one backward probe of the primary key, the keys found by
# a loose index scan of it (~3,900 keys at seed scale: ~0.7 s), rather than DISTINCT ON, which
# sorted every change row up to `upto` (3 M at seed scale: ~20 s, once per chunk of the raw
# positions check).
_LATEST_SQL = """
WITH RECURSIVE keys AS (
    (SELECT operator_id, account FROM {table} ORDER BY operator_id, account LIMIT 1)
    UNION ALL
    SELECT n.operator_id, n.account
    FROM keys k
    CROSS JOIN LATERAL (
        SELECT t.operator_id, t.account FROM {table} t
        WHERE (t.operator_id, t.account) > (k.operator_id, k.account)
        ORDER BY t.operator_id, t.account LIMIT 1
    ) n
)
SELECT l.*
FROM keys k
CROSS JOIN LATERAL (
    SELECT from_epoch, operator_id, account, {columns} FROM {table} t
    WHERE t.operator_id = k.operator_id AND t.account = k.account
      AND t.from_epoch > %(after)s AND t.from_epoch <= %(upto)s
    ORDER BY t.from_epoch DESC LIMIT 1
) l
ORDER BY l.operator_id, l.account
"""
# The change rows of a window of epochs at once (the epoch BRIN reads one block range): a walk
# over consecutive epochs made one query per epoch and table before, ~7,500 at seed scale.
_RANGE_SQL = (
    "SELECT from_epoch, operator_id, account, {columns} FROM {table} "
    "WHERE from_epoch BETWEEN %(lo)s AND %(hi)s"
)
#: Judged epochs per window of _RANGE_SQL (a window never spans more than 4x this in epochs).
WALK_WINDOW = 50
_TABLES = (
    ("nominator_positions", _POSITION_COLUMNS),
    ("nominator_withdrawals", _WITHDRAWAL_COLUMNS),
)


def _apply(rows: Any, target: dict[Key, Any], touched: set[Key] | None) -> None:
    """Rows (from_epoch, operator_id, account, *state) from _rows onto the walk's states."""
    for r in rows:
        key = (r[1], r[2])
        values = r[3:]
        if values.count(None) == len(values):  # a closing row: no position from here on
            target.pop(key, None)
        else:
            target[key] = values
        if touched is not None:
            touched.add(key)


def walk(
    conn: Connection, infos: dict[int, EpochInfo], epochs: list[int]
) -> Iterator[tuple[int, Walk, set[Key]]]:
    """(epoch, the states at it, keys whose rows are at it) for each of `epochs` (sorted, all
    with positions), by sql/042's rule: from the epoch's segment start, each position's latest
    row. Consecutive epochs cost their own rows only (read a window at a time); a jump reads
    one row per position."""
    state = Walk()
    segment: int | None = None
    read_to = -1
    # Per table: the window [lo, hi] read, its rows by from_epoch.
    windows: list[tuple[int, int, dict[int, list[Any]]]] = [(1, 0, {}), (1, 0, {})]
    for i, x in enumerate(epochs):
        start = _segment_start(infos, x)
        if start is None:
            continue
        if start != segment:
            state, segment, read_to = Walk(), start, start - 1
        touched: set[Key] = set()
        if x > read_to:
            for t, ((table, columns), target) in enumerate(
                zip(_TABLES, (state.positions, state.withdrawals), strict=True)
            ):
                if x - 1 > read_to:
                    _apply(
                        fetch.rows(
                            conn,
                            _LATEST_SQL.format(columns=columns, table=table),
                            {"after": read_to, "upto": x - 1},
                        ),
                        target,
                        None,
                    )
                lo, hi, rows = windows[t]
                if not lo <= x <= hi:
                    lo = x
                    hi = min(epochs[min(i + WALK_WINDOW - 1, len(epochs) - 1)], x + 4 * WALK_WINDOW)
                    rows = defaultdict(list)
                    for r in fetch.rows(
                        conn, _RANGE_SQL.format(columns=columns, table=table), {"lo": lo, "hi": hi}
                    ):
                        rows[r[0]].append(r)
                    windows[t] = (lo, hi, rows)
                _apply(rows.get(x, ()), target, touched)
            read_to = x
        yield x, state, touched


@dataclass
class Findings:
    """What the SQL-side walk found, per check: offending items (dicts) and their epochs."""

    judged: int = 0
    items: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bad: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    holes: int = 0
    #: Judged neighbour epoch -> the changed epoch it was judged for (incremental runs).
    before: dict[int, int] = field(default_factory=dict)

    def add(self, name: str, epoch: int, example: dict[str, Any]) -> None:
        self.counts[name] += 1
        self.bad[name].add(epoch)
        if len(self.items[name]) < MAX_EXAMPLES:
            self.items[name].append({"epoch": epoch, **example})


class _OperatorState(NamedTuple):
    stake_raw: int | None
    shares_raw: int | None
    storage_fee_raw: int | None
    status: str | None
    share_price_perq: int | None


def _operator_states(conn: Connection, epochs: list[int]) -> dict[int, dict[int, _OperatorState]]:
    rows = fetch.rows(
        conn,
        """
        SELECT s.epoch, s.operator_id, s.stake_raw, s.shares_raw, s.storage_fee_raw,
               s.status, p.share_price_perq
        FROM operator_shares s
        LEFT JOIN operator_share_prices p ON p.operator_id = s.operator_id AND p.epoch = s.epoch
        WHERE s.epoch = ANY(%(epochs)s::integer[]) AND s.epoch BETWEEN %(lo)s AND %(hi)s
        """,
        # The BETWEEN bounds let the epoch BRIN read one block range, not one per epoch.
        {"epochs": epochs, "lo": min(epochs), "hi": max(epochs)},
    )
    out: dict[int, dict[int, _OperatorState]] = defaultdict(dict)
    for r in rows:
        out[r[0]][r[1]] = _OperatorState(*r[2:])
    return out


def _chain_prices(conn: Connection) -> dict[tuple[int, int, int], int]:
    """Every chain-recorded price, (operator, domain, domain epoch) -> shares per stake: one
    read (~180 k rows at seed scale, a second) instead of a query per pending position, which
    cost more than the rest of the walk."""
    return {
        (r[0], r[1], r[2]): r[3]
        for r in fetch.rows(
            conn,
            "SELECT operator_id, domain_id, domain_epoch, shares_per_stake_perq "
            "FROM operator_chain_share_prices",
            {},
        )
    }


def _chain_price(chain: dict[tuple[int, int, int], int], op, dom, ep) -> int | None:
    return chain.get((op, dom, ep))


def _hex(account: bytes) -> str:
    return "0x" + account.hex()


#: Judged epochs per chunk of a full or sample run's walk (through Scope.map, so worker
#: processes share them): each chunk starts with a jump to its first epoch (~1 s at seed scale).
FINDINGS_CHUNK = 400
#: Up to this many judged epochs, the chain prices the walk needs are fetched by key as it
#: reaches them (an incremental run needs a few thousand of ~180 k at seed scale) instead of
#: all at once.
CHAIN_BY_KEY_MAX = 100


def _findings(conn: Connection, scope: Scope) -> Findings:
    infos = _epoch_infos(conn)
    epochs = judged_epochs(conn, scope, infos)
    changed = changed_epochs(scope)
    if changed is not None or len(epochs) <= FINDINGS_CHUNK:
        found = _judge_range(conn, infos, epochs)
        if changed is not None:
            ordered, wanted = sorted(infos), set(changed)
            found.before = {ordered[i + 1]: e for i, e in enumerate(ordered[:-1]) if e in wanted}
        return found
    # Full and sample runs: the judged epochs in chunks through the run's mapper (worker
    # processes when it has them), each chunk a walk of its own; merged in epoch order.
    found = Findings()
    narrowed = dataclasses.replace(scope, epochs=epochs)
    for part in narrowed.map(_findings_part, conn, FINDINGS_CHUNK):
        found.judged += part["judged"]
        found.holes += part["holes"]
        for name, count in part["counts"].items():
            found.counts[name] += count
        for name, items in part["items"].items():
            found.items[name].extend(items[: MAX_EXAMPLES - len(found.items[name])])
        for name, bad in part["bad"].items():
            found.bad[name].update(bad)
    return found


def _findings_part(conn: Connection, epochs: list[int]) -> dict[str, Any]:
    """The walk's findings over one chunk of judged epochs, as plain data (it may run in a
    worker process)."""
    found = _judge_range(conn, _epoch_infos(conn), epochs)
    return {
        "judged": found.judged,
        "holes": found.holes,
        "counts": dict(found.counts),
        "items": dict(found.items),
        "bad": {name: set(bad) for name, bad in found.bad.items()},
    }


class _ChainByKey(dict):
    """The chain prices a short walk needs, fetched by primary key as it reaches them
    (`need` before judging an epoch); a key looked up and not found stays None."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn
        self.asked: set[tuple[int, int, int]] = set()

    def need(self, keys: set[tuple[int, int, int]]) -> None:
        missing = keys - self.asked
        if not missing:
            return
        self.asked |= missing
        ops, doms, eps = (list(c) for c in zip(*sorted(missing), strict=True))
        for r in self.conn.execute(
            text(
                "SELECT c.operator_id, c.domain_id, c.domain_epoch, "
                "c.shares_per_stake_perq::text "
                "FROM unnest(CAST(:ops AS bigint[]), CAST(:doms AS integer[]), "
                "CAST(:eps AS integer[])) AS k(operator_id, domain_id, domain_epoch) "
                "JOIN operator_chain_share_prices c USING (operator_id, domain_id, domain_epoch)"
            ),
            {"ops": ops, "doms": doms, "eps": eps},
        ):
            self[(int(r[0]), int(r[1]), int(r[2]))] = int(r[3])


def _judge_range(
    conn: Connection, infos: dict[int, EpochInfo], epochs: list[int], inductive: bool = True
) -> Findings:
    """One walk over `epochs` (sorted judged epochs, state carried forward), each judged."""
    found = Findings()
    chain: dict[tuple[int, int, int], int]
    by_key = None
    if not epochs:
        chain = {}
    elif len(epochs) <= CHAIN_BY_KEY_MAX:
        chain = by_key = _ChainByKey(conn)
    else:
        chain = _chain_prices(conn)
    slashed_meta = {
        int(r[0])
        for r in conn.execute(
            text("SELECT operator_id FROM operators_metadata WHERE status = ANY(:s)"),
            {"s": list(SLASHED_STATUSES)},
        )
    }
    judge = _Judge(chain, slashed_meta)
    operators: dict[int, dict[int, _OperatorState]] = {}
    position = {e: i for i, e in enumerate(epochs)}
    loaded = -1
    previous: int | None = None
    # The operators' states are fetched 100 epochs at a time as the walk reaches them.
    for x, state, touched in walk(conn, infos, epochs):
        chunk = position[x] // 100
        if chunk != loaded:
            operators = _operator_states(conn, epochs[chunk * 100 : (chunk + 1) * 100])
            loaded = chunk
        # The states at x are x-1's plus x's rows unless x starts a new segment.
        follows = inductive and previous == x - 1 and infos[x].base_revision is not None
        keys = judge.keys_to_judge(x, state, touched, follows)
        if by_key is not None:
            by_key.need(
                {
                    (op, p[2], p[3])
                    for op, account in keys
                    if (p := state.positions.get((op, account))) is not None
                    and p[2] is not None
                    and p[3] is not None
                    and p[3] < x
                }
            )
        found.judged += 1
        judge.judge(x, state, keys, touched, operators.get(x, {}), found)
        previous = x
    return found


_KEY_SETS = "nominator_key_sets"
_PENDING_PRICES = "nominator_pending_prices"


class _Judge:
    """The walk's judgement of each epoch, kept up to date as positions change.

    What a position adds to its operator's sums (effective shares, one deposit, storage fees,
    a hole; a withdrawal's shares while its epoch has not ended) and what is wrong with it
    alone (key sets, pending prices) depend on its state, which changes only where it has a
    row, and on the epoch only where its pending deposit's or withdrawal's epoch ends. So each
    epoch re-judges just those positions (`keys_to_judge`), keeps per-operator sums by
    difference, and reports every per-position finding on every epoch it holds, as judging
    every position would (inductive=False in _judge_range does that; the tests hold the two
    equal). The per-operator checks need every operator each epoch (their states move every
    epoch), and gain is judged where positions change, as before.
    """

    def __init__(self, chain: dict[tuple[int, int, int], int], slashed_meta: set[int]) -> None:
        self.chain = chain
        self.slashed_meta = slashed_meta
        self._reset()

    def _reset(self) -> None:
        #: operator -> [shares, deposits, fees, holes, withdrawals counted]
        self.sums: dict[int, list[int]] = {}
        #: key -> what it adds to its operator's sums (same order)
        self.parts: dict[Key, tuple[int, int, int, int, int]] = {}
        #: (check, key, "p" position / "w" withdrawal) -> the finding, while it holds
        self.standing: dict[tuple[str, Key, str], dict[str, Any]] = {}
        #: epoch -> keys whose judgement changes then (a pending or withdrawal epoch ends)
        self.events: dict[int, set[Key]] = defaultdict(set)

    def keys_to_judge(self, x: int, state: Walk, touched: set[Key], follows: bool) -> set[Key]:
        """The keys to re-judge at x: its rows and ending epochs when x follows the epoch
        judged last, else (after a jump or a new segment) every key."""
        if follows:
            return touched | self.events.pop(x, set())
        self._reset()
        return set(state.positions) | set(state.withdrawals)

    def judge(
        self,
        x: int,
        state: Walk,
        keys: set[Key],
        touched: set[Key],
        operators: dict[int, _OperatorState],
        found: Findings,
    ) -> None:
        for key in keys:
            self._judge_key(key, x, state)
        for (name, _key, _), example in sorted(self.standing.items(), key=_standing_order):
            found.add(name, x, example)
        for op, (shares, deposits, fees, holes, _) in sorted(self.sums.items()):
            _judge_operator(x, op, shares, deposits, fees, holes, operators.get(op), found)
        for key in sorted(touched):
            self._judge_gain(key, x, state, operators.get(key[0]), found)

    def _judge_key(self, key: Key, x: int, state: Walk) -> None:
        op, account = key
        old = self.parts.pop(key, None)
        if old is not None:
            sums = self.sums[op]
            for i, v in enumerate(old):
                sums[i] -= v
            if not sums[1] and not sums[4]:  # no deposit, no withdrawal counted: no sums
                del self.sums[op]
        for name in (_KEY_SETS, _PENDING_PRICES):
            for kind in ("p", "w"):
                self.standing.pop((name, key, kind), None)
        shares = deposits = fees = holes = counted = 0
        p = state.positions.get(key)
        if p is not None:
            known, known_fee, pdom, pep, pamount, pfee, eff, hold = p
            has_deposit = known is not None
            if has_deposit != (hold is not None):
                self.standing[(_KEY_SETS, key, "p")] = {
                    "operator_id": op,
                    "account": _hex(account),
                    "problem": "deposit without hold" if has_deposit else "hold without deposit",
                }
            if has_deposit:
                deposits, fees = 1, known_fee + (pfee or 0)
                expected = known
                if pep is not None and pep < x:
                    price = _chain_price(self.chain, op, pdom, pep)
                    if price is None:
                        self.standing[(_PENDING_PRICES, key, "p")] = {
                            "operator_id": op,
                            "account": _hex(account),
                            "pending_epoch": pep,
                            "problem": "ended pending epoch has no chain price",
                        }
                        expected = None
                    else:
                        expected = known + price * pamount // PERQ
                elif pep is not None:  # converts when its epoch has ended
                    self.events[pep + 1].add(key)
                if eff is None:
                    holes = 1
                if expected is not None and eff != expected:
                    self.standing[(_PENDING_PRICES, key, "p")] = {
                        "operator_id": op,
                        "account": _hex(account),
                        "pending_epoch": pep,
                        "effective_shares": str(eff),
                        "expected": str(expected),
                    }
                if eff is not None:
                    shares = eff
        w = state.withdrawals.get(key)
        if w is not None:
            if w[3] is not None and w[3] >= x and w[5] is not None:
                # Withdrawn in an epoch that has not ended: the operator's total still counts
                # those shares (the chain deducts them when the epoch ends).
                shares += w[5]
                counted = 1
                self.events[w[3] + 1].add(key)
            if p is None or p[0] is None:
                self.standing[(_KEY_SETS, key, "w")] = {
                    "operator_id": op,
                    "account": _hex(account),
                    "problem": "withdrawal without deposit",
                }
        if deposits or counted:
            part = (shares, deposits, fees, holes, counted)
            self.parts[key] = part
            sums = self.sums.setdefault(op, [0, 0, 0, 0, 0])
            for i, v in enumerate(part):
                sums[i] += v

    def _judge_gain(
        self, key: Key, x: int, state: Walk, row: _OperatorState | None, found: Findings
    ) -> None:
        op, account = key
        held = state.positions.get(key)
        if held is None or held[0] is None or held[6] is None or held[7] is None or row is None:
            return
        if row.share_price_perq is None:
            return
        price = row.share_price_perq
        if row.status in SLASHED_STATUSES or op in self.slashed_meta:
            return
        worth = held[6] * price // PERQ
        if held[3] is not None and held[3] >= x:  # pending, not yet converted: still its amount
            worth += held[4]
        out = state.withdrawals.get(key)
        if out is not None:
            worth += out[0] or 0
            if out[5] is not None:
                worth += out[5] * price // PERQ
        if worth < held[7] - gain_tolerance(held[7]):
            found.add(
                "nominator_gain",
                x,
                {
                    "operator_id": op,
                    "account": _hex(account),
                    "worth": str(worth),
                    "deposit_on_hold": str(held[7]),
                },
            )


def _standing_order(item: tuple[tuple[str, Key, str], Any]) -> tuple[str, str, Key]:
    (name, key, kind), _ = item
    return name, kind, key


def _judge_operator(
    x: int,
    op: int,
    shares: int,
    deposits: int,
    fees: int,
    holes: int,
    row: _OperatorState | None,
    found: Findings,
) -> None:
    """One operator's sums at x against its state: shares within rounding of its total, the
    positions' value bound by its stake, the storage fees exact."""
    if row is None:
        # Not priced at x (no stake and no shares yet: an operator whose own deposit is still
        # pending): its positions can hold no shares.
        if shares:
            found.add(
                "nominator_shares_sum",
                x,
                {
                    "operator_id": op,
                    "problem": "positions hold shares, the operator has no state",
                    "sum_effective": str(shares),
                },
            )
        return
    if holes:
        found.holes += holes
    elif row.shares_raw is not None:
        diff = row.shares_raw - shares
        if not 0 <= diff <= deposits:
            found.add(
                "nominator_shares_sum",
                x,
                {
                    "operator_id": op,
                    "total_shares": str(row.shares_raw),
                    "sum_effective": str(shares),
                    "difference": str(diff),
                    "deposits": deposits,
                },
            )
        if row.share_price_perq is not None and row.stake_raw is not None:
            bound = shares * row.share_price_perq // PERQ
            if bound > row.stake_raw:
                found.add(
                    "nominator_value_bound",
                    x,
                    {
                        "operator_id": op,
                        "values_at_most": str(bound),
                        "stake": str(row.stake_raw),
                    },
                )
    if row.storage_fee_raw is not None and fees != row.storage_fee_raw:
        found.add(
            "nominator_storage_fees",
            x,
            {
                "operator_id": op,
                "storage_fee": str(row.storage_fee_raw),
                "sum_of_deposits": str(fees),
            },
        )


def gain_tolerance(hold: int) -> int:
    """How far below its principal a position may be worth by rounding alone, in Shannons.

    Converting `a` at the chain's P (shares per stake) gives floor(P * a / 10^18) shares, worth
    floor(shares * price / 10^18) at our price, and P and the price are each the floor of the
    other's inverse (chain_prices_agree: within a unit), so P * price >= 10^36 - 2P: the loss
    is below 2a / 10^18 + price / 10^18 + 1, a few units per 10^18 of principal. Allow three
    per 10^18 plus a few units for conversions and withdrawals each rounding once more.
    """
    return 3 * hold // PERQ + 8


def _shared_outcome(conn: Connection, scope: Scope, name: str, what: str) -> Outcome:
    found: Findings = scope.shared("nominator_findings", lambda: _findings(conn, scope))
    bad = set(found.bad.get(name, set()))
    # A fault first seen in the neighbour after a changed epoch (e.g. a conversion judged
    # there) also keeps that changed epoch unverified: the neighbour may be verified and
    # unchanged, and only the changed epoch brings the next incremental run back here.
    bad |= {found.before[e] for e in bad if e in found.before}
    count = found.counts.get(name, 0)
    note = f"{found.judged:,} epoch(s) with positions judged; {what}"
    if found.holes and name in ("nominator_shares_sum", "nominator_value_bound"):
        note += f"; {found.holes:,} position state(s) without effective shares left out (holes)"
    if not found.judged:
        note = "no nominator positions in the judged epochs"
    return Outcome(
        status_for(count),
        count,
        found.items.get(name, [])[:MAX_EXAMPLES],
        note,
        bad_epochs=frozenset(bad),
    )


@check(
    "nominator_shares_sum",
    "Per operator and epoch, the operator's total shares minus the effective shares of the "
    "positions it holds then is between 0 and its number of deposits (rounding). Count: "
    "(operator, epoch) pairs outside.",
    per_epoch=True,
)
def _nominator_shares_sum(conn: Connection, scope: Scope) -> Outcome:
    return _shared_outcome(
        conn, scope, "nominator_shares_sum", "shares minus positions in [0, deposits]"
    )


@check(
    "nominator_storage_fees",
    "Per operator and epoch, the positions' known and pending storage fee deposits sum exactly "
    "to the operator's total storage fee deposit. Count: (operator, epoch) pairs that differ.",
    per_epoch=True,
)
def _nominator_storage_fees(conn: Connection, scope: Scope) -> Outcome:
    return _shared_outcome(conn, scope, "nominator_storage_fees", "storage fees exact")


@check(
    "nominator_key_sets",
    "Every position with a deposit has a principal on hold and vice versa (DepositOnHold keys "
    "= Deposits keys), and every withdrawal belongs to a deposit. Count: offending keys.",
    per_epoch=True,
)
def _nominator_key_sets(conn: Connection, scope: Scope) -> Outcome:
    return _shared_outcome(
        conn, scope, "nominator_key_sets", "hold = deposit keys, withdrawals a subset"
    )


@check(
    "nominator_pending_prices",
    "Every pending deposit whose epoch has ended has a chain price for that epoch, and "
    "effective_shares is exactly known + floor(P * amount / 10^18) (known alone while pending). "
    "Count: offending positions.",
    per_epoch=True,
)
def _nominator_pending_prices(conn: Connection, scope: Scope) -> Outcome:
    return _shared_outcome(conn, scope, "nominator_pending_prices", "effective shares exact")


@check(
    "nominator_gain",
    "Where a position changes, its worth (shares' value, withdrawals' stake and shares, a "
    "deposit still pending) is at least the principal on hold, except on slashed operators. "
    "Count: positions worth less.",
    per_epoch=True,
)
def _nominator_gain(conn: Connection, scope: Scope) -> Outcome:
    return _shared_outcome(conn, scope, "nominator_gain", "gain >= 0 where positions change")


@check(
    "nominator_value_bound",
    "Per operator and epoch, the positions' values sum to at most the operator's stake "
    "(floor(sum of effective shares * price / 10^18) <= stake bounds the sum of values). "
    "Count: (operator, epoch) pairs over.",
    per_epoch=True,
)
def _nominator_value_bound(conn: Connection, scope: Scope) -> Outcome:
    return _shared_outcome(conn, scope, "nominator_value_bound", "sum of values <= stake")


# ----------------------------------------------------------------------------- raw positions


@check(
    "nominator_positions_match_raw",
    "Each judged epoch's position states (read from the change rows by sql/042's rule) equal "
    "the deposits, holds and withdrawals the shared parser (shareprice.chain.nominators) decodes "
    "from that epoch's raw document, effective shares converted at the document's own chain "
    "prices; and epoch_positions' counts and head block match. Count: differing positions.",
    reads_raw=True,
)
def _nominator_positions_match_raw(conn: Connection, scope: Scope) -> Outcome:
    # A fault in a change row shows in the state of its own from_epoch, whose digest it moves,
    # so the run's epochs suffice here (no neighbours needed).
    count = judged = 0
    examples: list[dict[str, Any]] = []
    bad: set[int] = set()
    # A sample's epochs are far apart: each costs a jump and a whole decode, nothing is shared
    # along a chunk, so small chunks spread them over the workers.
    chunk = SAMPLE_POSITIONS_CHUNK if scope.mode == "sample" else POSITIONS_CHUNK
    for part in scope.map(_positions_part, conn, chunk):
        count += part[0]
        examples.extend(part[1][: MAX_EXAMPLES - len(examples)])
        bad.update(part[2])
        judged += part[3]
    note = (
        f"{judged:,} epoch(s) with positions compared with their raw documents ({scope.describe()})"
    )
    return Outcome(status_for(count), count, examples, note, bad_epochs=frozenset(bad))


def _deposit_state(d: Any, chain: dict, epoch: int) -> list[Any]:
    """One deposit as the walk's state row: known shares and fee, the pending deposit's four
    fields, effective shares at the document's chain prices, and a slot for the hold (index 7)."""
    p = d.pending
    return [
        d.known_shares,
        d.known_storage_fee_deposit,
        p.domain_id if p else None,
        p.domain_epoch if p else None,
        p.amount if p else None,
        p.storage_fee_deposit if p else None,
        nominators.effective_shares(d, chain, epoch),
        None,
    ]


def _unlocking_rows(unlocking: Iterable[Any]) -> list[dict[str, Any]]:
    """A withdrawal's unlocking list as stored rows compare with it (amounts as decimal text)."""
    return [
        {
            "unlock_block": u.unlock_block,
            "amount": str(u.amount),
            "storage_fee_refund": str(u.storage_fee_refund),
        }
        for u in unlocking
    ]


def _raw_states(doc: dict[str, Any], epoch: int):
    positions = nominators.parse_positions(doc, epoch)
    chain = {}
    entries = (doc.get("operatorEpochSharePrice") or {}).get("entries") or []
    if entries:
        rows = parser.chain_price_rows([e["value"] for e in entries], epoch=epoch)
        chain = {(r[0], r[2]): r[3] for r in rows}
    states: dict[Key, list[Any]] = {}
    for d in positions.deposits:
        states[(d.operator_id, d.account)] = _deposit_state(d, chain, epoch)
    for h in positions.holds:
        states.setdefault((h.operator_id, h.account), [None] * 8)[7] = h.amount
    withdrawals: dict[Key, tuple[Any, ...]] = {}
    for w in positions.withdrawals:
        s = w.in_shares
        withdrawals[(w.operator_id, w.account)] = (
            w.total_amount,
            w.total_storage_fee,
            s.domain_id if s else None,
            s.domain_epoch if s else None,
            s.unlock_block if s else None,
            s.shares if s else None,
            s.storage_fee_refund if s else None,
            _unlocking_rows(w.unlocking),
        )
    return positions, {k: tuple(v) for k, v in states.items()}, withdrawals


class _Unusual(Exception):
    """The item texts are not the ordinary shape, or one does not decode: the whole document
    then goes through parse_positions (_raw_states), whose ParseError says what and where."""


# Per epoch with positions: each position item's entry values and `count`, the chain's
# recorded prices' values and headDomainNumber, as text (no JSON built on the server nor
# parsed in Python); `shaped` false (an item that is not a storage dump object with an
# entries array, a list around the dump) sends the epoch down the whole-document path.
_ITEMS_SQL = """
SELECT epoch,
       jsonb_typeof(d) = 'object'
       AND coalesce(jsonb_typeof(d #> '{deposits,entries}'), 'array') = 'array'
       AND coalesce(jsonb_typeof(d #> '{withdrawals,entries}'), 'array') = 'array'
       AND coalesce(jsonb_typeof(d #> '{depositOnHold,entries}'), 'array') = 'array'
       AND coalesce(jsonb_typeof(d #> '{operatorEpochSharePrice,entries}'), 'array') = 'array'
       AND coalesce(jsonb_typeof(d -> 'deposits'), 'null') IN ('object', 'null')
       AND coalesce(jsonb_typeof(d -> 'withdrawals'), 'null') IN ('object', 'null')
       AND coalesce(jsonb_typeof(d -> 'depositOnHold'), 'null') IN ('object', 'null')
       AND coalesce(jsonb_typeof(d -> 'operatorEpochSharePrice'), 'null') IN ('object', 'null')
           AS shaped,
       ARRAY(SELECT x ->> 'value' FROM jsonb_array_elements(d #> '{deposits,entries}') x)
           AS deposits,
       d #> '{deposits,count}' AS deposit_count,
       ARRAY(SELECT x ->> 'value' FROM jsonb_array_elements(d #> '{withdrawals,entries}') x)
           AS withdrawals,
       d #> '{withdrawals,count}' AS withdrawal_count,
       ARRAY(SELECT x ->> 'value' FROM jsonb_array_elements(d #> '{depositOnHold,entries}') x)
           AS holds,
       d #> '{depositOnHold,count}' AS hold_count,
       ARRAY(SELECT x ->> 'value'
             FROM jsonb_array_elements(d #> '{operatorEpochSharePrice,entries}') x) AS chain,
       d #> '{operatorEpochSharePrice,count}' AS chain_count,
       d -> 'headDomainNumber' AS head
FROM (SELECT epoch, data || '{}'::jsonb AS d FROM epochs
      WHERE epoch = ANY(%(epochs)s::integer[]) OFFSET 0) s
"""


def position_items(conn: Connection, epochs: list[int]) -> list[Any]:
    """_ITEMS_SQL's rows (attribute access) for `epochs`, in binary: ~3 MB of entry texts per
    seed-scale epoch, which the text format escaped on the server and unescaped in Python."""
    return fetch.binary_rows(conn, _ITEMS_SQL, {"epochs": epochs})


class _Decoded:
    """Entry text -> what the chain's decoders make of it, for one chunk of consecutive epochs.

    Most entries repeat unchanged from one epoch to the next (a dump holds every position and
    the whole chain price history), and a decoder is a pure function of the text, so each
    distinct text is decoded once per chunk; the comparison itself stays per epoch."""

    def __init__(self) -> None:
        #: text -> (Deposit, key, its state rows by variant: see _RawPositions._restate)
        self.deposits: dict[str, tuple[Any, Key, dict[int | None, list[Any]]]] = {}
        self.withdrawals: dict[str, Any] = {}
        self.holds: dict[str, Any] = {}
        self.chain: dict[str, tuple[int, int, int, int]] = {}


def _checked(values: list[str | None] | None, count: Any) -> list[str]:
    if values is None:
        return []
    if count is not None and count != len(values):
        raise _Unusual
    if None in values:
        raise _Unusual
    return values  # type: ignore[return-value]


class _RawPositions:
    """What one epoch's item texts say, kept up to date text by text along a chunk's epochs.

    A dump repeats most entries from the epoch before (at seed scale ~900 of ~3,000 deposit
    texts change per epoch, a few holds and withdrawals, ~40 of ~3,400 chain prices), and a
    position's state is a pure function of its deposit and hold texts, the chain's price of its
    pending epoch and whether that epoch has ended. So moving from epoch x-1 to x only the
    positions whose texts changed (set differences of the texts, in C), whose pending epoch is
    x-1 (it ends now) or whose pending epoch's chain price changed need their state again;
    the others are equal to what they were. `advance` returns those keys, so the comparison
    with the stored positions can look at them alone (see _positions_part).

    Anything a text-level view cannot decide as parse_positions would (a key or an identical
    text twice in one item, one (operator, domain epoch) priced in two domains) raises
    _Unusual, as an undecodable text does: the whole document then decides.
    """

    def __init__(self) -> None:
        #: Per item (d deposits, h holds, w withdrawals, c chain prices): the texts now.
        self.texts: dict[str, set[str]] = {"d": set(), "h": set(), "w": set(), "c": set()}
        self.deposit_text: dict[Key, str] = {}
        self.hold_text: dict[Key, str] = {}
        #: (operator, domain, domain epoch) -> its chain price text.
        self.chain_text: dict[tuple[int, int, int], str] = {}
        #: (operator, domain epoch) -> shares per stake: what effective shares convert at.
        self.chain: dict[tuple[int, int], int] = {}
        #: Keys of the deposits pending in a domain epoch, by (operator, epoch) and by epoch.
        self.pending_for: dict[tuple[int, int], set[Key]] = defaultdict(set)
        self.pending_in: dict[int, set[Key]] = defaultdict(set)
        self.states: dict[Key, tuple[Any, ...]] = {}
        self.withdrawals: dict[Key, tuple[Any, ...]] = {}

    def advance(
        self, row: Any, x: int, memo: _Decoded, *, from_previous: bool
    ) -> tuple[int | None, set[Key]]:
        """Move to epoch x's texts (`row`, from _ITEMS_SQL); (head block, keys whose state or
        withdrawal may differ from before). `from_previous`: the texts held are x-1's; else
        they are forgotten and every key of x is returned."""
        if not from_previous:
            self.__init__()  # type: ignore[misc]
        if not row.shaped:
            raise _Unusual
        try:
            changed: set[Key] = set()
            moved_prices = self._chain(_checked(row.chain, row.chain_count), x, memo)
            gone, added = self._diff("d", _checked(row.deposits, row.deposit_count))
            for v in gone:
                d = memo.deposits[v][0]
                key = (d.operator_id, d.account)
                del self.deposit_text[key]
                if d.pending is not None:
                    self.pending_for[(d.operator_id, d.pending.domain_epoch)].discard(key)
                    self.pending_in[d.pending.domain_epoch].discard(key)
                changed.add(key)
            for v in added:
                decoded = memo.deposits.get(v)
                if decoded is None:
                    op, account, payload = nominators.position_key(v, nominators.DEPOSITS_ITEM)
                    shares, fee, dom, dep, amount, pfee = nominators.deposit_fields(payload)
                    pending = (
                        None if dom is None else nominators.PendingDeposit(dom, dep, amount, pfee)  # type: ignore[arg-type]
                    )
                    d = nominators.Deposit(op, bytes.fromhex(account), shares, fee, pending)
                    decoded = memo.deposits[v] = (d, (d.operator_id, d.account), {})
                d, key, _ = decoded
                if key in self.deposit_text:
                    raise _Unusual  # a key twice in one epoch's deposits
                self.deposit_text[key] = v
                if d.pending is not None:
                    self.pending_for[(d.operator_id, d.pending.domain_epoch)].add(key)
                    self.pending_in[d.pending.domain_epoch].add(key)
                changed.add(key)
            # Conversions that change with no text changing: the pending epoch ended at x (the
            # state converts from here on), or its chain price moved.
            changed |= self.pending_in.get(x - 1, set())
            for price_key in moved_prices:
                changed |= self.pending_for.get(price_key, set())
            gone, added = self._diff("h", _checked(row.holds, row.hold_count))
            for v in gone:
                key = memo.holds[v][:2]
                del self.hold_text[key]
                changed.add(key)
            for v in added:
                held = memo.holds.get(v)
                if held is None:
                    op, account, payload = nominators.position_key(
                        v, nominators.DEPOSIT_ON_HOLD_ITEM
                    )
                    held = memo.holds[v] = (
                        op,
                        bytes.fromhex(account),
                        nominators.hold_amount(payload),
                    )
                key = held[:2]
                if key in self.hold_text:
                    raise _Unusual
                self.hold_text[key] = v
                changed.add(key)
            for key in changed:
                self._restate(key, x, memo)
            changed |= self._withdrawals(_checked(row.withdrawals, row.withdrawal_count), memo)
            head = nominators.head_domain_number(row.head, x)
        except (parser.ParseError, KeyError, TypeError, ValueError, AttributeError):
            raise _Unusual from None
        return head, changed

    def _diff(self, item: str, values: list[str]) -> tuple[set[str], set[str]]:
        """(texts gone, texts added) of `item` since the texts held; an identical text twice
        is a key twice, which the whole document decides."""
        now = set(values)
        if len(now) != len(values):
            raise _Unusual
        before, self.texts[item] = self.texts[item], now
        return before - now, now - before

    def _chain(self, values: list[str], x: int, memo: _Decoded) -> set[tuple[int, int]]:
        """Take x's chain price texts; the (operator, domain epoch) keys whose price moved."""
        gone, added = self._diff("c", values)
        moved: set[tuple[int, int]] = set()
        for v in gone:
            op, dom, dep, _ = memo.chain[v]
            del self.chain_text[(op, dom, dep)]
            self.chain.pop((op, dep), None)
            moved.add((op, dep))
        for v in added:
            if v not in memo.chain:
                # One value at a time: chain_price_rows returns its rows sorted by key, not in
                # the order of the values it was given.
                (memo.chain[v],) = parser.chain_price_rows([v], epoch=x)
            op, dom, dep, price = memo.chain[v]
            if (op, dom, dep) in self.chain_text or (op, dep) in self.chain:
                raise _Unusual  # a key twice, or one epoch priced in two domains
            self.chain_text[(op, dom, dep)] = v
            self.chain[(op, dep)] = price
            moved.add((op, dep))
        return moved

    def _restate(self, key: Key, x: int, memo: _Decoded) -> None:
        """The state row of `key` at x from its deposit and hold texts (absent: no position)."""
        deposit, hold = self.deposit_text.get(key), self.hold_text.get(key)
        if deposit is None and hold is None:
            self.states.pop(key, None)
            return
        if deposit is None:
            state: list[Any] = [None] * 8
        else:
            d, _, variants = memo.deposits[deposit]
            # The state row depends on the text and, for a pending deposit, only on whether
            # its epoch has ended and the chain's price for it: one row per such variant.
            p = d.pending
            if p is None or p.domain_epoch >= x:
                variant = None
            else:
                variant = self.chain.get((d.operator_id, p.domain_epoch), -1)
            fixed = variants.get(variant)
            if fixed is None:
                fixed = variants[variant] = _deposit_state(d, self.chain, x)
            state = fixed.copy()
        if hold is not None:
            state[7] = memo.holds[hold][2]
        self.states[key] = tuple(state)

    def _withdrawals(self, values: list[str], memo: _Decoded) -> set[Key]:
        changed: set[Key] = set()
        gone, added = self._diff("w", values)
        for v in gone:
            key = memo.withdrawals[v][0]
            del self.withdrawals[key]
            changed.add(key)
        for v in added:
            w = memo.withdrawals.get(v)
            if w is None:
                op, account, payload = nominators.position_key(v, nominators.WITHDRAWALS_ITEM)
                total, total_fee, wd, we, unlock, wshares, refund, unlocking = (
                    nominators.withdrawal_fields(payload)
                )
                w = memo.withdrawals[v] = (
                    (op, bytes.fromhex(account)),
                    (
                        total,
                        total_fee,
                        wd,
                        we,
                        unlock,
                        wshares,
                        refund,
                        _unlocking_rows(nominators.Unlocking(*u) for u in unlocking),
                    ),
                )
            if w[0] in self.withdrawals:
                raise _Unusual
            self.withdrawals[w[0]] = w[1]
            changed.add(w[0])
        return changed


def _position_docs(conn: Connection, chunk: list[int], known: list[int]) -> list[Any]:
    """Per epoch of `chunk`: whether its document carries position items and, for `known`,
    the position items (and the chain's prices, the head block) as one JSON text."""
    return list(
        conn.execute(
            text(
                """
            SELECT epoch,
                   jsonb_path_exists(d, 'lax $.deposits.entries[0]')
                   OR jsonb_path_exists(d, 'lax $.withdrawals.entries[0]')
                   OR jsonb_path_exists(d, 'lax $.depositOnHold.entries[0]') AS entries,
                   CASE WHEN epoch = ANY(CAST(:known AS integer[])) THEN jsonb_build_object(
                       'deposits', d -> 'deposits', 'withdrawals', d -> 'withdrawals',
                       'depositOnHold', d -> 'depositOnHold',
                       'headDomainNumber', d -> 'headDomainNumber',
                       'operatorEpochSharePrice', d -> 'operatorEpochSharePrice')::text
                   END AS doc
            FROM (SELECT epoch, CASE jsonb_typeof(data) WHEN 'array' THEN data -> 0
                         ELSE data END AS d
                  FROM epochs WHERE epoch = ANY(CAST(:epochs AS integer[]))
                  OFFSET 0) s
            """
            ),
            {"epochs": chunk, "known": known},
        ).all()
    )


def _positions_part(
    conn: Connection, chunk: list[int], inductive: bool = True
) -> tuple[int, list[dict[str, Any]], list[int], int]:
    """(differences, examples, epochs at fault, epochs compared) over one chunk of epochs.

    Each epoch's stored states (the walk) are compared with its raw states (_RawPositions).
    The chunk's first epoch, and any epoch not walked from the one before it (a gap, a new
    segment, a document that took the whole-document path), is compared key by key in full.
    From there on an epoch x compares only the keys that can differ from x-1's comparison:
    those whose raw texts or conversion changed (_RawPositions.advance), those with stored
    rows at x (the walk's `touched`), and those that already differed at x-1. Every other key
    has the same state on both sides as at x-1, where the two were equal, so the differences
    found are exactly a full comparison's (`inductive=False` compares every epoch in full; the
    tests hold the two equal), for ~1/3 of the work at seed scale.
    """
    infos = _epoch_infos(conn)
    epochs = [e for e in chunk if e in infos]
    # Whether each document carries position items (for the epochs without positions); the
    # items themselves as text arrays for the epochs with positions (_ITEMS_SQL), each
    # distinct entry text decoded once per chunk (_Decoded); a document of another shape, or
    # one whose entries do not decode, goes through parse_positions whole.
    without = [e for e in chunk if e not in infos]
    fetched = _position_docs(conn, without, []) if without else []
    # The item texts ITEMS_BATCH epochs at a time as the walk reaches them (a whole chunk's
    # would be ~2.5 MB per seed-scale epoch in memory at once).
    position = {e: i for i, e in enumerate(epochs)}
    items: dict[int, Any] = {}
    loaded = -1
    memo = _Decoded()
    raw = _RawPositions()
    carries = {int(r.epoch) for r in fetched if r.entries}
    count = 0
    examples: list[dict[str, Any]] = []
    bad: list[int] = []
    #: The epoch `raw` and `differing` describe (None: nothing to compare from).
    previous: int | None = None
    #: Keys whose stored and raw states or withdrawals differed at `previous`.
    differing: set[Key] = set()

    def differ(x: int, example: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        if not bad or bad[-1] != x:
            bad.append(x)
        if len(examples) < MAX_EXAMPLES:
            examples.append({"epoch": x, **example})

    # A normalized epoch whose document carries position items must have its positions too
    # (sql/042: an epoch without an epoch_positions row is a hole, never "no positions").
    for x in chunk:
        if x not in infos and x in carries:
            differ(x, {"problem": "document carries positions, epoch_positions has no row"})
    for x, state, touched in walk(conn, infos, epochs):
        batch = position[x] // ITEMS_BATCH
        if batch != loaded:
            wanted = epochs[batch * ITEMS_BATCH : (batch + 1) * ITEMS_BATCH]
            items = {r.epoch: r for r in position_items(conn, wanted)}
            loaded = batch
        # The stored states at x are x-1's plus the rows at x unless x starts a new segment
        # (the walk then starts over from x's rows alone).
        follows = inductive and previous == x - 1 and infos[x].base_revision is not None
        previous = None
        row = items.get(x)
        if row is None:
            differ(x, {"problem": "no raw document"})
            continue
        keys: set[Key] | None = None
        try:
            head, changed = raw.advance(row, x, memo, from_previous=follows)
            positions, withdrawals = raw.states, raw.withdrawals
            if follows:
                keys = changed | touched | differing
        except _Unusual:
            docs = _position_docs(conn, [x], [x])
            if not docs or docs[0].doc is None:
                differ(x, {"problem": "no raw document"})
                continue
            try:
                parsed, positions, withdrawals = _raw_states(orjson.loads(docs[0].doc), x)
            except (ParseError, KeyError, TypeError, ValueError) as exc:
                differ(x, {"problem": f"raw positions do not parse: {exc}"})
                continue
            head = parsed.head_domain_number
        info = infos[x]
        if info.positions != len(positions) or info.withdrawals != len(withdrawals):
            differ(
                x,
                {
                    "problem": "epoch_positions counts",
                    "recorded": f"{info.positions}/{info.withdrawals}",
                    "raw": f"{len(positions)}/{len(withdrawals)}",
                },
            )
        if info.head_domain_number != head:
            differ(
                x,
                {
                    "problem": "head_domain_number",
                    "recorded": info.head_domain_number,
                    "raw": head,
                },
            )
        differing = set()
        for name, table, want in (
            ("position", state.positions, positions),
            ("withdrawal", state.withdrawals, withdrawals),
        ):
            if keys is None:
                if table == want:  # the usual case, one comparison in C; else find what differs
                    continue
                candidates: Iterable[Key] = set(table) | set(want)
            else:
                candidates = keys
            for key in sorted(k for k in candidates if table.get(k) != want.get(k)):
                differing.add(key)
                have, expect = table.get(key), want.get(key)
                differ(
                    x,
                    {
                        "operator_id": key[0],
                        "account": _hex(key[1]),
                        "what": name,
                        "stored": None if have is None else [str(v) for v in have],
                        "raw": None if expect is None else [str(v) for v in expect],
                    },
                )
        if positions is raw.states:  # the raw side now describes x: x+1 can follow from it
            previous = x
    return count, examples, bad, len(epochs)
