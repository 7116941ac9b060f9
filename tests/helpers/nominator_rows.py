"""Nominator position rows written by hand, following sql/042 exactly, for the nominator query,
API and page tests (before, and besides, the backfill writing them from real dumps).

The scenario (`load_scenario`), epochs 10..20 with prices for operators 0 and 1 at every epoch:
- epoch_positions: 10 full rows, 11-13 changes, 14 a HOLE (prices but no position items),
  15 full rows again (a second segment), 16-20 changes; head domain block 1850 at epoch 20.
- ALICE on operator 0: 100 shares at 10; a pending deposit of 50 AI3 at 12 (epoch 12: still
  pending), converted at 13 (effective changes, raw fields do not); restated at 15; a withdrawal
  of 30 shares at 17; a closing row at 19 (deposit gone), the withdrawal unlocking from 19 on.
- ALICE on operator 1: a pending deposit at 11 converted at 12; NO row at the full-rows epoch 15
  (so gone from 15 without a closing row); a new position from 18.
- BOB on operator 0: 500 shares from 10, restated at 15, unchanged to 20.
- CAROL on operator 0: from 16, with effective shares unknown (the pending epoch's chain price
  missing): a position whose value is unknown.

`oracle_state` reads a position's state at an epoch by the header's rule with a plain scan, an
independent implementation for the tests to compare the SQL against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import Engine

from helpers.normalized_rows import Row, load
from shareprice.chain import ss58

PERQ = 10**18
AI3 = 10**18
ALICE = bytes.fromhex("d4e54c36839df60aa2ea9c75144714d0f5c9a4a59124419a6f8d4432b3c29e0b")
BOB = bytes(range(1, 33))
CAROL = bytes(range(100, 132))
EPOCHS = range(10, 21)
HOLE = 14
FULL_ROWS = (10, 15)
HEAD = 1850
#: Chain prices (shares per stake) of the epochs pending deposits convert at.
CHAIN = {(0, 12): 999_000_000_000_000_000, (1, 11): 998_000_000_000_000_000}
UNLOCK_IN_SHARES = 1900
UNLOCK_LIST = 1800


def price(operator_id: int, epoch: int) -> int:
    return PERQ + epoch * 10**12 + operator_id * 7 * 10**11


def operator_shares(operator_id: int) -> int:
    return (2000 + operator_id * 100) * AI3


@dataclass(frozen=True)
class PositionRow:
    operator_id: int
    account: bytes
    from_epoch: int
    known_shares: int | None = None
    known_storage_fee: int | None = None
    pending_epoch: int | None = None
    pending_amount: int | None = None
    pending_storage_fee: int | None = None
    effective_shares: int | None = None
    deposit_on_hold: int | None = None

    @property
    def closing(self) -> bool:
        return all(
            v is None
            for v in (
                self.known_shares,
                self.known_storage_fee,
                self.pending_epoch,
                self.pending_amount,
                self.pending_storage_fee,
                self.effective_shares,
                self.deposit_on_hold,
            )
        )


@dataclass(frozen=True)
class WithdrawalRow:
    operator_id: int
    account: bytes
    from_epoch: int
    total_amount: int | None = None
    in_shares_epoch: int | None = None
    in_shares_unlock_block: int | None = None
    in_shares: int | None = None
    unlocking: tuple[tuple[int, int, int], ...] | None = None  # (block, amount, refund)

    @property
    def closing(self) -> bool:
        return self.total_amount is None and self.in_shares is None and self.unlocking is None


CONVERTED_0 = 100 * AI3 + CHAIN[(0, 12)] * 50 * AI3 // PERQ
CONVERTED_1 = CHAIN[(1, 11)] * 20 * AI3 // PERQ
AFTER_WITHDRAWAL = CONVERTED_0 - 30 * AI3
FEE = 2 * AI3

POSITIONS = [
    # ALICE, operator 0
    PositionRow(0, ALICE, 10, 100 * AI3, FEE, effective_shares=100 * AI3, deposit_on_hold=100 * AI3),
    PositionRow(0, ALICE, 12, 100 * AI3, FEE, 12, 50 * AI3, AI3, 100 * AI3, 150 * AI3),
    PositionRow(0, ALICE, 13, 100 * AI3, FEE, 12, 50 * AI3, AI3, CONVERTED_0, 150 * AI3),
    PositionRow(0, ALICE, 15, 100 * AI3, FEE, 12, 50 * AI3, AI3, CONVERTED_0, 150 * AI3),
    PositionRow(0, ALICE, 17, AFTER_WITHDRAWAL, FEE, effective_shares=AFTER_WITHDRAWAL,
                deposit_on_hold=120 * AI3),
    PositionRow(0, ALICE, 19),  # closing
    # ALICE, operator 1
    PositionRow(1, ALICE, 11, 0, 0, 11, 20 * AI3, AI3, 0, 20 * AI3),
    PositionRow(1, ALICE, 12, 0, 0, 11, 20 * AI3, AI3, CONVERTED_1, 20 * AI3),
    PositionRow(1, ALICE, 18, 0, 0, 20, 5 * AI3, AI3 // 10, 0, 5 * AI3),
    # BOB, operator 0
    PositionRow(0, BOB, 10, 500 * AI3, FEE, effective_shares=500 * AI3, deposit_on_hold=490 * AI3),
    PositionRow(0, BOB, 15, 500 * AI3, FEE, effective_shares=500 * AI3, deposit_on_hold=490 * AI3),
    # CAROL, operator 0: the pending epoch's chain price is missing
    PositionRow(0, CAROL, 16, 0, 0, 13, 7 * AI3, AI3, None, 7 * AI3),
]  # fmt: skip

WITHDRAWALS = [
    WithdrawalRow(0, ALICE, 17, 0, 17, UNLOCK_IN_SHARES, 30 * AI3, ()),
    WithdrawalRow(0, ALICE, 19, 31 * AI3, None, None, None, ((UNLOCK_LIST, 31 * AI3, AI3 // 2),)),
]


def load_scenario(engine: Engine) -> None:
    """Prices, operators, chain prices, accounts and the position rows above."""
    load(
        engine,
        [
            Row(op, e, price(op, e), stake=operator_shares(op) * price(op, e) // PERQ,
                shares=operator_shares(op))
            for op in (0, 1)
            for e in EPOCHS
        ],
        end_blocks={e: 1000 + 120 * e for e in EPOCHS},
    )  # fmt: skip
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        with raw.cursor() as cur:
            cur.executemany(
                "INSERT INTO epoch_positions (epoch, base_revision, head_domain_number, "
                "positions, withdrawals) VALUES (%s, %s, %s, %s, 0)",
                [
                    (e, None if e in FULL_ROWS else 1, 100 * e if e != 20 else HEAD, 3)
                    for e in EPOCHS
                    if e != HOLE
                ],
            )
            cur.executemany(
                "INSERT INTO operator_chain_share_prices (operator_id, domain_id, domain_epoch, "
                "shares_per_stake_perq, seen_in_epoch) VALUES (%s, 0, %s, %s, 20)",
                [(op, e, p) for (op, e), p in CHAIN.items()],
            )
            cur.executemany(
                "INSERT INTO nominator_accounts (account, ss58) VALUES (%s, %s)",
                [(a, ss58.encode(a)) for a in (ALICE, BOB, CAROL)],
            )
            cur.executemany(
                "INSERT INTO nominator_positions (operator_id, account, from_epoch, known_shares,"
                " known_storage_fee, pending_domain_id, pending_epoch, pending_amount,"
                " pending_storage_fee, effective_shares, deposit_on_hold)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        p.operator_id, p.account, p.from_epoch, p.known_shares,
                        p.known_storage_fee, None if p.pending_epoch is None else 0,
                        p.pending_epoch, p.pending_amount, p.pending_storage_fee,
                        p.effective_shares, p.deposit_on_hold,
                    )
                    for p in POSITIONS
                ],
            )  # fmt: skip
            cur.executemany(
                "INSERT INTO nominator_withdrawals (operator_id, account, from_epoch,"
                " total_amount, total_storage_fee, in_shares_domain_id, in_shares_epoch,"
                " in_shares_unlock_block, in_shares, in_shares_storage_fee_refund, unlocking)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
                [
                    (
                        w.operator_id, w.account, w.from_epoch, w.total_amount,
                        None if w.closing else 0,
                        None if w.in_shares is None else 0, w.in_shares_epoch,
                        w.in_shares_unlock_block, w.in_shares,
                        None if w.in_shares is None else AI3 // 4,
                        None if w.unlocking is None else json.dumps([
                            {"unlock_block": b, "amount": str(a), "storage_fee_refund": str(r)}
                            for b, a, r in w.unlocking
                        ]),
                    )
                    for w in WITHDRAWALS
                ],
            )  # fmt: skip
            cur.execute("SELECT nextval('data_version_seq')")
        raw.commit()


def oracle_state(rows: list, operator_id: int, account: bytes, epoch: int):
    """sql/042's rule by plain scan: None when the epoch is a hole or there is no position."""
    if epoch == HOLE or epoch not in EPOCHS:
        return None
    start = max(e for e in FULL_ROWS if e <= epoch)
    mine = [
        r
        for r in rows
        if r.operator_id == operator_id and r.account == account and start <= r.from_epoch <= epoch
    ]
    if not mine:
        return None
    last = max(mine, key=lambda r: r.from_epoch)
    return None if last.closing else last
