"""Nominator positions: what one account holds with each operator, its value over epochs, and
per operator the holders, their count over epochs and the pool's concentration (issue 14).

Every read follows sql/042's rule for a position's state at epoch X: X must have an
`epoch_positions` row (else the positions are unknown: a hole), S = positions_segment_start(X)
is the latest full-rows epoch at or before X, and the state is the row with the largest
from_epoch in [S, X]; a closing row (every state column NULL) or no row means no position.

The history reads the same rule as intervals: a row holds from its from_epoch until the next
row of the same position (lead) or the next full-rows epoch after it, whichever comes first;
each interval is joined to the operator's price rows by range (an index-only range scan of the
price key per interval) and to `epoch_positions`, so an epoch without position items stays a
hole. One account has a few rows per operator, so the whole history is a handful of range scans.

Value = floor(effective_shares * share_price_perq / 10**18) with our stake-per-share price
(`div` on NUMERIC: exact, the product has ~43 digits). Everything stays an exact int; shares of
a pool are exact 10**18-scaled fractions (floor), turned into text or floats only by callers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import polars as pl
from psycopg import sql
from sqlalchemy.engine import Engine

from shareprice.chain import ss58
from shareprice.chain.records import PERQ
from shareprice.queries.connection import connect, copy_frame, record, scalar_row
from shareprice.queries.epochs import epoch_rate
from shareprice.queries.frames import perq_to_decimal
from shareprice.queries.request import Plan, RequestError

#: Domain blocks per epoch (DOMAIN.md: an epoch is 100 domain blocks): how far an unlock block
#: is, in epochs, from the dump's headDomainNumber.
DOMAIN_BLOCKS_PER_EPOCH = 100
#: Holders in the concentration figure.
TOP_HOLDERS = 10
HOLDERS_MAX_LIMIT = 1000


class AddressError(RequestError):
    """An address a person typed that is no account: names the parameter and the reason."""


@dataclass(frozen=True, slots=True)
class Account:
    account: bytes
    ss58: str

    @property
    def hex(self) -> str:
        return "0x" + self.account.hex()


def resolve_address(text: object, parameter: str = "address") -> Account:
    """An account from an SS58 address (Autonomys, prefix 6094) or 0x + 64 hex digits."""
    if not isinstance(text, str) or not text.strip():
        raise AddressError(f"{parameter}: give an SS58 address (su...) or 0x + 64 hex digits")
    try:
        account = ss58.parse_account(text)
    except ValueError as exc:
        shown = text.strip()
        shown = shown if len(shown) <= 60 else shown[:60] + "..."
        raise AddressError(f"{parameter}: {shown!r} is not an account: {exc}") from None
    return Account(account, ss58.encode(account))


def _int(value: Any) -> int | None:
    """NUMERIC (Decimal) to int, exactly; None stays None."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        assert value == value.to_integral_value(), value
    return int(value)


def share_perq(part: int | None, whole: int | None) -> int | None:
    """part / whole as a floor 10**18-scaled fraction; None when either is unknown or whole 0."""
    if part is None or not whole:
        return None
    return part * PERQ // whole


# --- the latest positions epoch -------------------------------------------------------------------

# The latest epoch whose document carried position items, its head block and segment start.
_LATEST_SQL = """
SELECT ep.epoch, ep.head_domain_number, positions_segment_start(ep.epoch)
FROM epoch_positions ep ORDER BY ep.epoch DESC LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class PositionsEpoch:
    epoch: int
    head_domain_number: int | None
    segment_start: int | None


def latest_positions_epoch(engine: Engine) -> PositionsEpoch | None:
    """The latest epoch with position items (None: no positions data at all)."""
    with connect(engine) as conn:
        started = time.perf_counter()
        row = conn.execute(_LATEST_SQL).fetchone()
        record("positions_latest_epoch", started, 0 if row is None else 1)
    if row is None:
        return None
    return PositionsEpoch(int(row[0]), _int(row[1]), _int(row[2]))


# --- one account's positions at an epoch ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """One withdrawal of a position: the shares still to be converted (`in_shares`, owed stake
    known once its epoch's chain price is) or an unlocking amount of stake."""

    kind: str  # "in_shares" | "unlocking"
    unlock_block: int
    amount: int | None  # stake (Shannons): owed for the shares, or the amount to unlock
    shares: int | None  # in_shares only
    domain_epoch: int | None  # in_shares only: the epoch the shares were withdrawn in
    storage_fee_refund: int
    unlockable: bool | None  # unlock block <= headDomainNumber (None: head unknown)
    blocks_left: int | None
    eta_epochs: int | None
    eta_seconds: float | None


@dataclass(frozen=True, slots=True)
class Position:
    operator_id: int
    epoch: int  # the epoch the state is read at
    since_epoch: int  # the from_epoch of the row holding that state
    known_shares: int | None
    known_storage_fee: int | None
    pending_epoch: int | None  # converts at the end of this epoch
    pending_amount: int | None
    pending_storage_fee: int | None
    effective_shares: int | None
    deposit_on_hold: int | None
    share_price_perq: int | None
    operator_shares: int | None
    withdrawals: tuple[Withdrawal, ...] = ()

    @property
    def value(self) -> int | None:
        if self.effective_shares is None or self.share_price_perq is None:
            return None
        return self.effective_shares * self.share_price_perq // PERQ

    @property
    def gain(self) -> int | None:
        value = self.value
        if value is None or self.deposit_on_hold is None:
            return None
        return value - self.deposit_on_hold

    @property
    def share_of_pool_perq(self) -> int | None:
        return share_perq(self.effective_shares, self.operator_shares)

    @property
    def storage_fee(self) -> int | None:
        """All storage fees the deposit holds (known and pending)."""
        if self.known_storage_fee is None and self.pending_storage_fee is None:
            return None
        return (self.known_storage_fee or 0) + (self.pending_storage_fee or 0)

    @property
    def pending_converted(self) -> bool:
        """Whether the pending deposit's epoch has ended (its shares are in effective_shares)."""
        return self.pending_epoch is not None and self.pending_epoch < self.epoch


@dataclass(frozen=True, slots=True)
class NominatorView:
    account: Account
    epoch: int | None  # None: no positions data at all
    head_domain_number: int | None
    epochs_per_day: float
    positions: tuple[Position, ...] = ()
    known: bool = False  # the account has any row (position or withdrawal) at any epoch

    @property
    def total_value(self) -> int:
        return sum(p.value or 0 for p in self.positions)


_OPERATOR_KNOWN_SQL = "SELECT EXISTS (SELECT 1 FROM operators_metadata WHERE operator_id = %s)"


def operator_known(engine: Engine, operator_id: int) -> bool:
    """Whether the operator was ever seen (an unknown id is a 404, not an empty pool)."""
    with connect(engine) as conn:
        return bool(scalar_row(conn, "operator_known", _OPERATOR_KNOWN_SQL, (operator_id,))[0])


# One account's deposit state with every operator at epoch X (sql/042's rule: the row with the
# largest from_epoch in [S, X]; closing rows dropped after the pick), with the operator's price
# and total shares at X. The account index (account, operator_id, from_epoch) serves the pick.
_POSITIONS_AT_SQL = """
WITH picked AS (
    SELECT DISTINCT ON (p.operator_id) p.*
    FROM nominator_positions p
    WHERE p.account = %(account)s AND p.from_epoch BETWEEN %(segment_start)s AND %(epoch)s
    ORDER BY p.operator_id, p.from_epoch DESC
)
SELECT k.operator_id, k.from_epoch, k.known_shares, k.known_storage_fee, k.pending_epoch,
       k.pending_amount, k.pending_storage_fee, k.effective_shares, k.deposit_on_hold,
       pr.share_price_perq, sh.shares_raw
FROM picked k
LEFT JOIN operator_share_prices pr ON pr.operator_id = k.operator_id AND pr.epoch = %(epoch)s
LEFT JOIN operator_shares sh ON sh.operator_id = k.operator_id AND sh.epoch = %(epoch)s
WHERE num_nonnulls(k.known_shares, k.known_storage_fee, k.pending_domain_id, k.pending_epoch,
                   k.pending_amount, k.pending_storage_fee, k.effective_shares,
                   k.deposit_on_hold) > 0
ORDER BY k.operator_id
"""

# The same pick over withdrawals, with the chain's shares-per-stake price of the in-shares
# withdrawal's epoch (what its owed stake is computed from; NULL while that epoch has not ended
# or the price is missing).
_WITHDRAWALS_AT_SQL = """
WITH picked AS (
    SELECT DISTINCT ON (w.operator_id) w.*
    FROM nominator_withdrawals w
    WHERE w.account = %(account)s AND w.from_epoch BETWEEN %(segment_start)s AND %(epoch)s
    ORDER BY w.operator_id, w.from_epoch DESC
)
SELECT k.operator_id, k.in_shares_epoch, k.in_shares_unlock_block, k.in_shares,
       k.in_shares_storage_fee_refund, k.unlocking, c.shares_per_stake_perq
FROM picked k
LEFT JOIN operator_chain_share_prices c
       ON c.operator_id = k.operator_id AND c.domain_id = k.in_shares_domain_id
      AND c.domain_epoch = k.in_shares_epoch AND k.in_shares_epoch < %(epoch)s
WHERE num_nonnulls(k.total_amount, k.total_storage_fee, k.in_shares_domain_id,
                   k.in_shares_epoch, k.in_shares_unlock_block, k.in_shares,
                   k.in_shares_storage_fee_refund, k.unlocking) > 0
ORDER BY k.operator_id
"""

# Whether the account has any row at all (an unknown address is a 404, not "no positions").
_KNOWN_SQL = """
SELECT EXISTS (SELECT 1 FROM nominator_positions WHERE account = %(account)s)
    OR EXISTS (SELECT 1 FROM nominator_withdrawals WHERE account = %(account)s)
    OR EXISTS (SELECT 1 FROM nominator_accounts WHERE account = %(account)s)
"""


def eta(
    unlock_block: int, head: int | None, epochs_per_day: float
) -> tuple[bool | None, int | None, int | None, float | None]:
    """(unlockable, blocks left, epochs left, seconds left) of an unlock block against the head
    domain block, at DOMAIN_BLOCKS_PER_EPOCH blocks per epoch and the data's epoch rate."""
    if head is None:
        return None, None, None, None
    left = max(0, unlock_block - head)
    epochs = -(-left // DOMAIN_BLOCKS_PER_EPOCH)
    return unlock_block <= head, left, epochs, epochs * 86_400 / epochs_per_day


def _withdrawals(
    row: Sequence[Any], head: int | None, epochs_per_day: float
) -> tuple[Withdrawal, ...]:
    _, in_epoch, in_unlock, in_shares, in_refund, unlocking, chain_price = row
    out: list[Withdrawal] = []
    if in_shares is not None and in_unlock is not None:
        shares = _int(in_shares)
        assert shares is not None
        price = _int(chain_price)
        owed = None if price is None else shares * PERQ // (price + 1)
        out.append(
            Withdrawal(
                "in_shares",
                int(in_unlock),
                owed,
                shares,
                _int(in_epoch),
                _int(in_refund) or 0,
                *eta(int(in_unlock), head, epochs_per_day),
            )
        )
    for item in unlocking or ():
        block = int(item["unlock_block"])
        out.append(
            Withdrawal(
                "unlocking",
                block,
                int(item["amount"]),
                None,
                None,
                int(item["storage_fee_refund"]),
                *eta(block, head, epochs_per_day),
            )
        )
    return tuple(out)


def nominator_positions(engine: Engine, address: str | bytes) -> NominatorView:
    """One account's positions with every operator at the latest positions epoch, with value,
    share of the pool, gain, pending deposit and withdrawals (with unlock ETA)."""
    account = (
        Account(address, ss58.encode(address))
        if isinstance(address, bytes)
        else resolve_address(address)
    )
    rate = epoch_rate(engine)
    latest = latest_positions_epoch(engine)
    params: dict[str, Any] = {"account": account.account}
    with connect(engine) as conn:
        (known,) = scalar_row(conn, "nominator_known", _KNOWN_SQL, params)
        if latest is None or latest.segment_start is None:
            return NominatorView(
                account,
                None if latest is None else latest.epoch,
                None,
                rate.epochs_per_day,
                known=bool(known),
            )
        params |= {"epoch": latest.epoch, "segment_start": latest.segment_start}
        started = time.perf_counter()
        rows = conn.execute(_POSITIONS_AT_SQL, params).fetchall()
        record("nominator_positions_at", started, len(rows))
        started = time.perf_counter()
        wrows = conn.execute(_WITHDRAWALS_AT_SQL, params).fetchall()
        record("nominator_withdrawals_at", started, len(wrows))
    head = latest.head_domain_number
    withdrawals = {int(r[0]): _withdrawals(r, head, rate.epochs_per_day) for r in wrows}
    positions = [
        Position(
            operator_id=int(r[0]),
            epoch=latest.epoch,
            since_epoch=int(r[1]),
            known_shares=_int(r[2]),
            known_storage_fee=_int(r[3]),
            pending_epoch=_int(r[4]),
            pending_amount=_int(r[5]),
            pending_storage_fee=_int(r[6]),
            effective_shares=_int(r[7]),
            deposit_on_hold=_int(r[8]),
            share_price_perq=_int(r[9]),
            operator_shares=_int(r[10]),
            withdrawals=withdrawals.pop(int(r[0]), ()),
        )
        for r in rows
    ]
    # A withdrawal whose deposit is gone (everything withdrawn): still a position to show.
    for operator_id, items in sorted(withdrawals.items()):
        positions.append(
            Position(
                operator_id, latest.epoch, latest.epoch, None, None, None, None, None, None,
                None, None, None, items,
            )
        )  # fmt: skip
    positions.sort(key=lambda p: p.operator_id)
    return NominatorView(
        account, latest.epoch, head, rate.epochs_per_day, tuple(positions), known=bool(known)
    )


# --- one account's value history ------------------------------------------------------------------

HISTORY_SCHEMA: dict[str, pl.DataType] = {
    "operator_id": pl.Int64(),
    "epoch": pl.Int64(),
    "effective_shares": pl.Int128(),
    "share_price_perq": pl.Int128(),
    "value": pl.Int128(),
    "deposit_on_hold": pl.Int128(),
}

# Per epoch with position items: the next full-rows epoch strictly after it (where every row
# of a segment ends at the latest). One window over epoch_positions (one row per epoch).
_NEXT_START_CTE = sql.SQL("""
next_start AS (
    SELECT ep.epoch, ep.base_revision IS NULL AS full_rows,
           min(ep.epoch) FILTER (WHERE ep.base_revision IS NULL) OVER (
               ORDER BY ep.epoch DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
           ) AS epoch_after
    FROM epoch_positions ep
)
""")

# One account's value per operator and epoch over all epochs: its rows as intervals
# [from_epoch, end) where end = the next row of the position (lead) or the next full-rows epoch,
# whichever is first (sql/042's rule), closing rows and unknown effective shares dropped; each
# interval joined to the operator's prices by range and to epoch_positions (holes stay holes).
_HISTORY_SQL = sql.SQL("""WITH {next_start},
rows AS (
    SELECT p.operator_id, p.from_epoch, p.effective_shares, p.deposit_on_hold,
           lead(p.from_epoch) OVER (PARTITION BY p.operator_id ORDER BY p.from_epoch) AS next_from
    FROM nominator_positions p
    WHERE p.account = %(account)s
), intervals AS (
    SELECT r.operator_id, r.from_epoch, r.effective_shares, r.deposit_on_hold,
           coalesce(least(r.next_from, n.epoch_after), 2147483647) AS end_epoch
    FROM rows r LEFT JOIN next_start n ON n.epoch = r.from_epoch
    WHERE r.effective_shares IS NOT NULL
)
SELECT i.operator_id, pr.epoch, i.effective_shares, pr.share_price_perq,
       div(i.effective_shares * pr.share_price_perq, %(perq)s) AS value, i.deposit_on_hold
FROM intervals i
JOIN operator_share_prices pr
  ON pr.operator_id = i.operator_id AND pr.epoch >= i.from_epoch AND pr.epoch < i.end_epoch
JOIN epoch_positions ep ON ep.epoch = pr.epoch
ORDER BY i.operator_id, pr.epoch
""").format(next_start=_NEXT_START_CTE)


def history_plan(account: bytes) -> Plan:
    return Plan("nominator_history", _HISTORY_SQL, {"account": account, "perq": PERQ})


def nominator_history(engine: Engine, address: str | bytes) -> pl.DataFrame:
    """One row per operator and epoch where the account's position and the operator's price
    are both known: effective shares, price, value (exact), principal held."""
    account = address if isinstance(address, bytes) else resolve_address(address).account
    with connect(engine) as conn:
        return copy_frame(conn, history_plan(account), HISTORY_SCHEMA)


EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "operator_id": pl.Int64(),
    "epoch": pl.Int64(),
    "kind": pl.String(),
    "detail": pl.String(),
}

# Every row of the account (positions and withdrawals), each with the next full-rows epoch
# after it: few per operator, the events are read from their changes in Python.
_EVENT_ROWS_SQL = sql.SQL("""WITH {next_start}
SELECT 'position' AS item, p.operator_id, p.from_epoch, n.epoch_after, n.full_rows,
       num_nonnulls(p.known_shares, p.known_storage_fee, p.pending_domain_id, p.pending_epoch,
                    p.pending_amount, p.pending_storage_fee, p.effective_shares,
                    p.deposit_on_hold) = 0 AS closing,
       p.known_shares, p.pending_epoch, p.pending_amount, p.effective_shares,
       NULL::numeric, NULL::integer, NULL::jsonb
FROM nominator_positions p LEFT JOIN next_start n ON n.epoch = p.from_epoch
WHERE p.account = %(account)s
UNION ALL
SELECT 'withdrawal', w.operator_id, w.from_epoch, n.epoch_after, n.full_rows,
       num_nonnulls(w.total_amount, w.total_storage_fee, w.in_shares_domain_id, w.in_shares_epoch,
                    w.in_shares_unlock_block, w.in_shares, w.in_shares_storage_fee_refund,
                    w.unlocking) = 0,
       NULL, NULL, NULL, NULL, w.in_shares, w.in_shares_epoch, w.unlocking
FROM nominator_withdrawals w LEFT JOIN next_start n ON n.epoch = w.from_epoch
WHERE w.account = %(account)s
ORDER BY 1, 2, 3
""").format(next_start=_NEXT_START_CTE)


@dataclass(slots=True)
class _Track:
    """The last state seen of one item of one operator while walking its rows."""

    state: tuple | None = None
    from_epoch: int = -1
    epoch_after: int | None = None
    events: list[tuple[int, int, str, str]] = field(default_factory=list)


def _position_events(op: int, epoch: int, old: tuple | None, new: tuple | None) -> list[tuple]:
    """Events between two states (known shares, pending epoch, pending amount, effective
    shares) of a deposit: a new pending deposit, or shares down (a withdrawal; a conversion
    only ever adds shares)."""
    if old == new:
        return []
    if old is None:
        return [(op, epoch, "deposit", "position opened")]
    if new is None:
        return [(op, epoch, "withdrawal", "position closed")]
    out = []
    if new[1:3] != old[1:3] and new[2] is not None:
        out.append((op, epoch, "deposit", f"pending {new[2]} Shannons"))
    known_down = None not in (old[0], new[0]) and new[0] < old[0]
    effective_down = None not in (old[3], new[3]) and new[3] < old[3]
    if known_down or effective_down:
        out.append((op, epoch, "withdrawal", "shares down"))
    return out


def _withdrawal_events(op: int, epoch: int, old: tuple | None, new: tuple | None) -> list[tuple]:
    if old == new:
        return []
    if new is None:
        return [(op, epoch, "unlock", "withdrawals unlocked")]
    old_shares, old_epoch, old_count = old if old is not None else (None, None, 0)
    shares, in_epoch, count = new
    if shares is not None and (shares != old_shares or in_epoch != old_epoch):
        return [(op, epoch, "withdrawal", f"{shares} shares withdrawn")]
    if count > old_count:
        return [(op, epoch, "withdrawal", "stake unlocking")]
    return [(op, epoch, "unlock", "withdrawal unlocked")]


def nominator_events(engine: Engine, address: str | bytes) -> pl.DataFrame:
    """Epochs where the account deposited (pending changed, a position opened) or withdrew
    (known shares down, a withdrawal appeared or grew, a position closed) or stake unlocked.

    A position that has no row at a full-rows epoch is gone from that epoch on (sql/042), even
    without a closing row; that counts as closed there."""
    account = address if isinstance(address, bytes) else resolve_address(address).account
    with connect(engine) as conn:
        started = time.perf_counter()
        rows = conn.execute(_EVENT_ROWS_SQL, {"account": account}).fetchall()
        record("nominator_event_rows", started, len(rows))
    events: list[tuple] = []
    tracks: dict[tuple[str, int], _Track] = {}

    def advance(item: str, op: int, track: _Track, until: int | None) -> None:
        # the segment ended before `until` without a row: the item is gone at that start
        if track.epoch_after is not None and (until is None or track.epoch_after < until):
            changes = _position_events if item == "position" else _withdrawal_events
            events.extend(changes(op, track.epoch_after, track.state, None))
            track.state, track.epoch_after = None, None

    for row in rows:
        item, op, from_epoch, epoch_after, full_rows, closing = row[:6]
        known, p_epoch, p_amount, effective, w_shares, w_epoch, unlocking = row[6:]
        first = (item, op) not in tracks
        track = tracks.setdefault((item, op), _Track())
        advance(item, op, track, from_epoch)
        changes = _position_events if item == "position" else _withdrawal_events
        state: tuple | None
        if item == "position":
            state = (
                None if closing else (_int(known), _int(p_epoch), _int(p_amount), _int(effective))
            )
        else:
            state = None if closing else (_int(w_shares), _int(w_epoch), len(unlocking or ()))
        # The first row of an item at a full-rows epoch was there when the data begins (or
        # resumes after a hole): when it was made is unknown, so it is no event.
        if not (first and full_rows):
            events.extend(changes(op, from_epoch, track.state, state))
        track.state, track.from_epoch = state, from_epoch
        track.epoch_after = None if state is None else _int(epoch_after)
    for (item, op), track in tracks.items():
        advance(item, op, track, None)
    events.sort(key=lambda e: (e[0], e[1]))
    return pl.DataFrame(events, schema=EVENTS_SCHEMA, orient="row")


# --- per operator -------------------------------------------------------------------------------

COUNTS_SCHEMA: dict[str, pl.DataType] = {"epoch": pl.Int64(), "nominators": pl.Int64()}

# Nominators (positions: a Deposits or DepositOnHold entry) of one operator per epoch with
# position items: each row an interval [from_epoch, end) as in the history, +1 at its start and
# -1 at its end, summed up in epoch order. Hole epochs are not output (their count is unknown).
_COUNTS_SQL = sql.SQL("""WITH {next_start},
rows AS (
    SELECT p.from_epoch,
           num_nonnulls(p.known_shares, p.known_storage_fee, p.pending_domain_id,
                        p.pending_epoch, p.pending_amount, p.pending_storage_fee,
                        p.effective_shares, p.deposit_on_hold) > 0 AS open,
           lead(p.from_epoch) OVER (PARTITION BY p.account ORDER BY p.from_epoch) AS next_from
    FROM nominator_positions p
    WHERE p.operator_id = %(operator_id)s
), deltas AS (
    SELECT r.from_epoch AS epoch, 1 AS delta FROM rows r WHERE r.open
    UNION ALL
    SELECT least(r.next_from, n.epoch_after), -1
    FROM rows r LEFT JOIN next_start n ON n.epoch = r.from_epoch
    WHERE r.open AND least(r.next_from, n.epoch_after) IS NOT NULL
), per_epoch AS (
    SELECT epoch, sum(delta) AS delta FROM deltas GROUP BY epoch
), running AS (
    SELECT e.epoch, sum(coalesce(d.delta, 0)) OVER (ORDER BY e.epoch) AS nominators
    FROM (SELECT epoch FROM epoch_positions UNION SELECT epoch FROM per_epoch) e
    LEFT JOIN per_epoch d ON d.epoch = e.epoch
)
SELECT r.epoch, r.nominators::bigint AS nominators
FROM running r JOIN epoch_positions ep ON ep.epoch = r.epoch
WHERE r.epoch >= (SELECT min(from_epoch) FROM rows)
ORDER BY r.epoch
""").format(next_start=_NEXT_START_CTE)


def nominator_counts(engine: Engine, operator_id: int) -> pl.DataFrame:
    """epoch -> number of nominators (positions) of the operator, per epoch with positions."""
    with connect(engine) as conn:
        return copy_frame(
            conn,
            Plan("nominator_counts", _COUNTS_SQL, {"operator_id": operator_id}),
            COUNTS_SCHEMA,
        )


HOLDERS_SCHEMA: dict[str, pl.DataType] = {
    "rank": pl.Int64(),
    "account": pl.String(),
    "ss58": pl.String(),
    "effective_shares": pl.Int128(),
    "value": pl.Int128(),
    "deposit_on_hold": pl.Int128(),
    "pending_amount": pl.Int128(),
    "pending_epoch": pl.Int64(),
}


@dataclass(frozen=True, slots=True)
class Holders:
    """One operator's nominators at an epoch: the largest (by effective shares) and the pool's
    concentration."""

    operator_id: int
    epoch: int | None
    count: int
    total_effective_shares: int
    top_effective_shares: int  # of the TOP_HOLDERS largest
    operator_shares: int | None
    share_price_perq: int | None
    rows: pl.DataFrame

    @property
    def top_share_perq(self) -> int | None:
        """The TOP_HOLDERS largest holders' share of all effective shares (10**18 scale)."""
        return share_perq(self.top_effective_shares, self.total_effective_shares)


# Every position of one operator at epoch X (sql/042's pick over the primary key, which leads
# with operator_id), ranked by effective shares; totals over all of them in the same pass.
_HOLDERS_SQL = """
WITH picked AS (
    SELECT DISTINCT ON (p.account) p.*
    FROM nominator_positions p
    WHERE p.operator_id = %(operator_id)s
      AND p.from_epoch BETWEEN %(segment_start)s AND %(epoch)s
    ORDER BY p.account, p.from_epoch DESC
), open AS (
    SELECT k.*, row_number() OVER (
               ORDER BY k.effective_shares DESC NULLS LAST, k.account) AS rank
    FROM picked k
    WHERE num_nonnulls(k.known_shares, k.known_storage_fee, k.pending_domain_id, k.pending_epoch,
                       k.pending_amount, k.pending_storage_fee, k.effective_shares,
                       k.deposit_on_hold) > 0
)
SELECT o.rank, o.account, a.ss58, o.effective_shares, o.deposit_on_hold, o.pending_amount,
       o.pending_epoch,
       count(*) OVER () AS holders,
       sum(o.effective_shares) OVER () AS total_effective,
       sum(o.effective_shares) FILTER (WHERE o.rank <= %(top)s) OVER () AS top_effective
FROM open o LEFT JOIN nominator_accounts a ON a.account = o.account
ORDER BY o.rank
"""
_OPERATOR_AT_SQL = """
SELECT (SELECT share_price_perq FROM operator_share_prices
        WHERE operator_id = %(operator_id)s AND epoch = %(epoch)s),
       (SELECT shares_raw FROM operator_shares
        WHERE operator_id = %(operator_id)s AND epoch = %(epoch)s)
"""


def operator_holders(engine: Engine, operator_id: int, limit: int | None = 50) -> Holders:
    """The operator's nominators at the latest positions epoch, largest first (at most `limit`
    rows; None: all), with their count and the top-10 share of effective shares."""
    if limit is not None and not 1 <= limit <= HOLDERS_MAX_LIMIT:
        raise RequestError(f"limit: an integer 1 .. {HOLDERS_MAX_LIMIT}, got {limit}")
    latest = latest_positions_epoch(engine)
    empty = pl.DataFrame(schema=HOLDERS_SCHEMA)
    if latest is None or latest.segment_start is None:
        return Holders(operator_id, None, 0, 0, 0, None, None, empty)
    params = {
        "operator_id": operator_id,
        "epoch": latest.epoch,
        "segment_start": latest.segment_start,
        "top": TOP_HOLDERS,
    }
    with connect(engine) as conn:
        started = time.perf_counter()
        rows = conn.execute(_HOLDERS_SQL, params).fetchall()
        record("operator_holders", started, len(rows))
        price, shares = scalar_row(conn, "operator_at_epoch", _OPERATOR_AT_SQL, params)
    price, shares = _int(price), _int(shares)
    count = int(rows[0][7]) if rows else 0
    total = (_int(rows[0][8]) or 0) if rows else 0
    top = (_int(rows[0][9]) or 0) if rows else 0
    shown = rows if limit is None else rows[:limit]
    table = []
    for r in shown:
        effective = _int(r[3])
        value = None if effective is None or price is None else effective * price // PERQ
        account = bytes(r[1])
        table.append(
            (
                int(r[0]),
                "0x" + account.hex(),
                r[2] or ss58.encode(account),
                effective,
                value,
                _int(r[4]),
                _int(r[5]),
                _int(r[6]),
            )
        )
    frame = pl.DataFrame(
        table,
        schema=HOLDERS_SCHEMA,
        orient="row",
    )
    return Holders(operator_id, latest.epoch, count, total, top, shares, price, frame)


# --- the JSON documents (the API's and the CLI's) ---------------------------------------------


def _text(value: int | None) -> str | None:
    """An exact integer as a decimal string (JSON numbers lose digits beyond 2^53)."""
    return None if value is None else str(value)


def _exact_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows for JSON: Int128 columns (exact amounts) as decimal strings, nulls as null."""
    wide = [name for name, dtype in frame.schema.items() if dtype == pl.Int128]
    return frame.with_columns(pl.col(wide).cast(pl.String)).to_dicts()


def _withdrawal_json(w: Withdrawal) -> dict[str, Any]:
    return {
        "kind": w.kind,
        "unlock_block": w.unlock_block,
        "amount": _text(w.amount),
        "shares": _text(w.shares),
        "domain_epoch": w.domain_epoch,
        "storage_fee_refund": _text(w.storage_fee_refund),
        "unlockable": w.unlockable,
        "blocks_left": w.blocks_left,
        "eta_epochs": w.eta_epochs,
        "eta_seconds": None if w.eta_seconds is None else round(w.eta_seconds),
    }


def _position_json(p: Position) -> dict[str, Any]:
    return {
        "operator_id": p.operator_id,
        "epoch": p.epoch,
        "since_epoch": p.since_epoch,
        "shares": _text(p.effective_shares),
        "value": _text(p.value),
        "known_shares": _text(p.known_shares),
        "pending_amount": _text(p.pending_amount),
        "pending_epoch": p.pending_epoch,
        "pending_converted": p.pending_converted,
        "deposit_on_hold": _text(p.deposit_on_hold),
        "gain": _text(p.gain),
        "storage_fee": _text(p.storage_fee),
        "share_price_perq": _text(p.share_price_perq),
        "share_of_pool": perq_to_decimal(p.share_of_pool_perq),
        "withdrawals": [_withdrawal_json(w) for w in p.withdrawals],
    }


def nominator_document(
    engine: Engine, account: Account, history: bool = False
) -> dict[str, Any] | None:
    """`GET /api/v1/nominators/{address}`'s body, built once for the API and the CLI (so the two
    cannot drift): the positions at the latest positions epoch, exact integers as decimal
    strings; `history` adds per operator the value per epoch and the deposit/withdrawal events.
    None when the account has no row at all (the API's 404)."""
    view = nominator_positions(engine, account.account)
    if not view.known:
        return None
    body: dict[str, Any] = {
        "address": account.ss58,
        "account": account.hex,
        "epoch": view.epoch,
        "head_domain_number": view.head_domain_number,
        "positions": [_position_json(position) for position in view.positions],
    }
    if history:
        values = nominator_history(engine, account.account)
        events = nominator_events(engine, account.account)
        operators = sorted(set(values["operator_id"]) | set(events["operator_id"]))
        body["history"] = [
            {
                "operator_id": op,
                "values": _exact_rows(
                    values.filter(values["operator_id"] == op).select(
                        "epoch",
                        pl.col("effective_shares").alias("shares"),
                        "value",
                        "deposit_on_hold",
                    )
                ),
                "events": events.filter(events["operator_id"] == op)
                .select("epoch", "kind", "detail")
                .to_dicts(),
            }
            for op in operators
        ]
    return body


def operator_nominators_document(
    engine: Engine, operator_id: int, limit: int | None = 50
) -> dict[str, Any] | None:
    """`GET /api/v1/operators/{id}/nominators`'s body, built once for the API and the CLI: the
    nominator count, the largest holders (at most `limit`) and the top-10 share, exact integers
    as decimal strings. None when the operator was never seen (the API's 404)."""
    if not operator_known(engine, operator_id):
        return None
    holders = operator_holders(engine, operator_id, limit)
    rows = holders.rows.with_columns(
        pl.col("effective_shares")
        .map_elements(
            lambda s: perq_to_decimal(share_perq(s, holders.operator_shares)),
            return_dtype=pl.String,
        )
        .alias("share_of_pool")
    ).select(
        "rank",
        pl.col("ss58").alias("address"),
        "account",
        pl.col("effective_shares").alias("shares"),
        "value",
        "deposit_on_hold",
        "share_of_pool",
        "pending_amount",
        "pending_epoch",
    )
    return {
        "operator_id": operator_id,
        "epoch": holders.epoch,
        "count": holders.count,
        "total_shares": str(holders.total_effective_shares),
        "top10_shares": str(holders.top_effective_shares),
        "top10_share": perq_to_decimal(holders.top_share_perq),
        "operator_shares": _text(holders.operator_shares),
        "share_price_perq": _text(holders.share_price_perq),
        "nominators": _exact_rows(rows),
    }
