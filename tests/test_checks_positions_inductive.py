"""nominator_positions_match_raw compares an epoch with its raw document by what changed since
the epoch before (the keys whose texts, conversions or stored rows changed, and those that
already differed); it must find exactly what comparing every key of every epoch finds, on clean
data and on faults that last over several epochs, in the stored rows and in the raw texts."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from shareprice.checks import nominator_checks as nc


def _both(engine: Engine) -> tuple[tuple, tuple]:
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        epochs = list(conn.execute(text("SELECT epoch FROM epochs ORDER BY epoch")).scalars())
        inductive = nc._positions_part(conn, epochs, inductive=True)
        full = nc._positions_part(conn, epochs, inductive=False)
        conn.exec_driver_sql("COMMIT")
    return inductive, full


def _edit_doc(conn: Connection, epoch: int, edit: Callable[[dict], None]) -> None:
    doc = orjson.loads(
        conn.execute(text("SELECT data::text FROM epochs WHERE epoch = :e"), {"e": epoch}).scalar()
    )
    edit(doc[0] if isinstance(doc, list) else doc)
    conn.execute(
        text("UPDATE epochs SET data = CAST(:d AS jsonb) WHERE epoch = :e"),
        {"d": orjson.dumps(doc).decode(), "e": epoch},
    )


# A position row that holds for at least 4 epochs (its key's next row is that far on).
_LASTING = """
SELECT p.operator_id, p.account, p.from_epoch, n.next_epoch
FROM nominator_positions p
CROSS JOIN LATERAL (
    SELECT min(q.from_epoch) AS next_epoch FROM nominator_positions q
    WHERE q.operator_id = p.operator_id AND q.account = p.account AND q.from_epoch > p.from_epoch
) n
WHERE p.deposit_on_hold IS NOT NULL AND n.next_epoch >= p.from_epoch + 4
  AND p.from_epoch > (SELECT min(epoch) FROM epoch_positions)
ORDER BY p.from_epoch, p.operator_id, p.account LIMIT 1
"""


def _on_lasting_row(conn: Connection, change: str) -> int:
    """Apply `change` (a statement on :o, :a, :e) to the _LASTING row; how long it lasts."""
    row = conn.execute(text(_LASTING)).one()
    conn.execute(
        text(change + " WHERE operator_id = :o AND account = :a AND from_epoch = :e"),
        {"o": row.operator_id, "a": row.account, "e": row.from_epoch},
    )
    return int(row.next_epoch - row.from_epoch)


def stored_value_lasting_several_epochs(conn: Connection) -> int:
    return _on_lasting_row(
        conn, "UPDATE nominator_positions SET deposit_on_hold = deposit_on_hold + 1"
    )


def stored_change_row_deleted(conn: Connection) -> int:
    return _on_lasting_row(conn, "DELETE FROM nominator_positions")


def stored_withdrawal_added(conn: Connection) -> int:
    row = conn.execute(text(_LASTING)).one()
    conn.execute(
        text(
            "INSERT INTO nominator_withdrawals (operator_id, account, from_epoch, total_amount, "
            "total_storage_fee, unlocking) VALUES (:o, :a, :e, 7, 0, '[]') ON CONFLICT DO NOTHING"
        ),
        {"o": row.operator_id, "a": row.account, "e": row.from_epoch},
    )
    return 1


def raw_hold_text_changed_in_one_epoch(conn: Connection) -> int:
    epoch = conn.execute(
        text(
            "SELECT epoch FROM epoch_positions WHERE positions > 0 ORDER BY epoch LIMIT 1 OFFSET 20"
        )
    ).scalar_one()

    def edit(doc: dict) -> None:
        entry = doc["depositOnHold"]["entries"][0]
        key, amount = entry["value"].rsplit(",", 1)
        entry["value"] = f"{key},{int(amount) + 1}"

    _edit_doc(conn, epoch, edit)
    return 1


# A converted pending deposit whose state row lasts for at least 3 epochs, and the epoch after
# its row starts: there the key has no stored row and no deposit text changes.
_CONVERTED = """
SELECT p.operator_id, p.account, p.from_epoch, p.pending_epoch
FROM nominator_positions p
CROSS JOIN LATERAL (
    SELECT min(q.from_epoch) AS next_epoch FROM nominator_positions q
    WHERE q.operator_id = p.operator_id AND q.account = p.account AND q.from_epoch > p.from_epoch
) n
WHERE p.pending_epoch IS NOT NULL AND p.pending_epoch < p.from_epoch
  AND p.effective_shares IS NOT NULL AND p.pending_amount > 0
  AND coalesce(n.next_epoch, 2147483647) >= p.from_epoch + 3
  AND EXISTS (SELECT 1 FROM epoch_positions e WHERE e.epoch = p.from_epoch + 1)
ORDER BY p.from_epoch DESC, p.operator_id, p.account LIMIT 1
"""


def raw_chain_price_changed_in_one_epoch(conn: Connection) -> int:
    """The chain price a converted deposit converts at, doubled in one later document only:
    its effective shares move there with no deposit text and no stored row changing."""
    row = conn.execute(text(_CONVERTED)).one()
    changed = []

    def edit(doc: dict) -> None:
        for entry in doc["operatorEpochSharePrice"]["entries"]:
            raw = bytes.fromhex(entry["value"][2 + 64 : 2 + 64 + 32])
            op = int.from_bytes(raw[0:8], "little")
            dep = int.from_bytes(raw[12:16], "little")
            if (op, dep) == (row.operator_id, row.pending_epoch):
                key, price = entry["value"].split(",", 1)
                entry["value"] = f"{key},{int(price) * 2}"
                changed.append(entry)

    _edit_doc(conn, row.from_epoch + 1, edit)
    assert changed, "the document lists the chain price its pending deposit converts at"
    return 1


def stored_conversion_missing(conn: Connection) -> int:
    """The row where a pending deposit converts (its epoch has just ended: only effective
    shares change, no text does) is deleted: the stored state stays unconverted."""
    row = conn.execute(
        text(
            "SELECT p.operator_id, p.account, p.from_epoch, n.next_epoch "
            "FROM nominator_positions p "
            "JOIN nominator_positions b ON b.operator_id = p.operator_id "
            " AND b.account = p.account AND b.from_epoch = p.from_epoch - 1 "
            "CROSS JOIN LATERAL (SELECT min(q.from_epoch) AS next_epoch "
            " FROM nominator_positions q WHERE q.operator_id = p.operator_id "
            " AND q.account = p.account AND q.from_epoch > p.from_epoch) n "
            "WHERE p.pending_epoch = p.from_epoch - 1 AND b.pending_epoch = p.pending_epoch "
            "AND b.known_shares = p.known_shares AND b.pending_amount = p.pending_amount "
            "AND b.deposit_on_hold = p.deposit_on_hold "
            "AND b.effective_shares <> p.effective_shares AND n.next_epoch >= p.from_epoch + 2 "
            "ORDER BY p.from_epoch, p.operator_id LIMIT 1"
        )
    ).one()
    conn.execute(
        text(
            "DELETE FROM nominator_positions "
            "WHERE operator_id = :o AND account = :a AND from_epoch = :e"
        ),
        {"o": row.operator_id, "a": row.account, "e": row.from_epoch},
    )
    return int(row.next_epoch - row.from_epoch)


FAULTS = [
    stored_value_lasting_several_epochs,
    stored_change_row_deleted,
    stored_withdrawal_added,
    raw_hold_text_changed_in_one_epoch,
    raw_chain_price_changed_in_one_epoch,
    stored_conversion_missing,
]


def test_clean_data_compares_equal_both_ways(normalized_small_copy):
    inductive, full = _both(normalized_small_copy)
    assert inductive == full
    assert inductive[0] == 0 and inductive[3] > 50


@pytest.mark.parametrize("fault", FAULTS, ids=[f.__name__ for f in FAULTS])
def test_a_fault_is_found_alike_in_every_epoch_it_lasts(normalized_small_copy, fault):
    with normalized_small_copy.begin() as conn:
        lasting = fault(conn)
    inductive, full = _both(normalized_small_copy)
    assert inductive == full
    count, examples, bad, _ = inductive
    assert count >= lasting and len(bad) >= lasting, (count, bad, examples[:3])


def _items(conn: Connection) -> list:
    epochs = list(conn.execute(text("SELECT epoch FROM epoch_positions ORDER BY epoch")).scalars())
    return nc.position_items(conn, epochs)


def _held_equal_fresh(rows: list) -> int:
    """Advance one _RawPositions through consecutive epochs; at each, its states must equal a
    fresh decode of that epoch alone. Returns how many epochs advanced from the one before."""
    memo = nc._Decoded()
    held = nc._RawPositions()
    followed = 0
    previous = None
    for row in sorted(rows, key=lambda r: r.epoch):
        follows = previous == row.epoch - 1
        held.advance(row, row.epoch, memo, from_previous=follows)
        fresh = nc._RawPositions()
        fresh.advance(row, row.epoch, nc._Decoded(), from_previous=False)
        assert held.states == fresh.states, row.epoch
        assert held.withdrawals == fresh.withdrawals, row.epoch
        followed += follows
        previous = row.epoch
    return followed


def test_raw_states_advanced_epoch_by_epoch_equal_fresh_decodes(normalized_small_copy):
    with normalized_small_copy.connect() as conn:
        rows = _items(conn)
    assert _held_equal_fresh(rows) > 50


def test_a_conversion_without_its_chain_price_is_noticed_without_any_text_changing(
    normalized_small_copy,
):
    """A pending deposit of epoch x-1 converts at x; if x's document lacks that price (the
    conversion has no price: a hole), nothing in x's texts changes for that position, yet its
    state does (effective shares unknown)."""
    with normalized_small_copy.begin() as conn:
        row = conn.execute(
            text(
                "SELECT from_epoch, operator_id FROM nominator_positions "
                "WHERE pending_epoch = from_epoch - 1 AND effective_shares IS NOT NULL "
                "ORDER BY from_epoch LIMIT 1"
            )
        ).one()

        def drop(doc: dict) -> None:
            entries = doc["operatorEpochSharePrice"]["entries"]
            keep = [
                e
                for e in entries
                if (
                    int.from_bytes(bytes.fromhex(e["value"][66:82]), "little"),
                    int.from_bytes(bytes.fromhex(e["value"][90:98]), "little"),
                )
                != (row.operator_id, row.from_epoch - 1)
            ]
            assert len(keep) == len(entries) - 1
            doc["operatorEpochSharePrice"] = {"entries": keep, "count": len(keep)}

        _edit_doc(conn, row.from_epoch, drop)
        rows = _items(conn)
    assert _held_equal_fresh(rows) > 50


# --- the SQL-side walk (nominator_shares_sum and the other invariants) ------------------------


def effective_shares_off_for_several_epochs(conn: Connection) -> int:
    return _on_lasting_row(
        conn, "UPDATE nominator_positions SET effective_shares = effective_shares + 3"
    )


def hold_missing_for_several_epochs(conn: Connection) -> int:
    return _on_lasting_row(conn, "UPDATE nominator_positions SET deposit_on_hold = NULL")


def withdrawal_without_deposit_with_shares(conn: Connection) -> int:
    """A withdrawal of shares in an epoch that has not ended, for an account with no deposit:
    a key-set finding at every epoch it lasts, and shares the operator's total lacks."""
    row = conn.execute(text(_LASTING)).one()
    conn.execute(
        text(
            "INSERT INTO nominator_withdrawals (operator_id, account, from_epoch, total_amount, "
            "total_storage_fee, in_shares_domain_id, in_shares_epoch, in_shares_unlock_block, "
            "in_shares, in_shares_storage_fee_refund, unlocking) "
            "VALUES (:o, :a, :e, 0, 0, 0, :e + 2, 1, 5, 0, '[]')"
        ),
        {"o": row.operator_id, "a": b"\x07" * 32, "e": row.from_epoch},
    )
    return 2


WALK_FAULTS = [
    stored_change_row_deleted,
    stored_conversion_missing,
    withdrawal_without_deposit_with_shares,
    effective_shares_off_for_several_epochs,
    hold_missing_for_several_epochs,
]


def _walks(engine: Engine) -> tuple[nc.Findings, nc.Findings]:
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        infos = nc._epoch_infos(conn)
        epochs = sorted(infos)
        inductive = nc._judge_range(conn, infos, epochs, inductive=True)
        full = nc._judge_range(conn, infos, epochs, inductive=False)
        conn.exec_driver_sql("COMMIT")
    return inductive, full


def _plain(found: nc.Findings) -> tuple:
    return (
        found.judged,
        found.holes,
        dict(found.counts),
        {name: sorted(bad) for name, bad in found.bad.items() if bad},
        {name: items for name, items in found.items.items() if items},
    )


def test_clean_walk_judges_alike_both_ways(normalized_small_copy):
    inductive, full = _walks(normalized_small_copy)
    assert _plain(inductive) == _plain(full)
    assert inductive.judged > 50 and not any(inductive.counts.values())


@pytest.mark.parametrize("fault", WALK_FAULTS, ids=[f.__name__ for f in WALK_FAULTS])
def test_a_walk_fault_is_judged_alike_in_every_epoch_it_lasts(normalized_small_copy, fault):
    with normalized_small_copy.begin() as conn:
        fault(conn)
    inductive, full = _walks(normalized_small_copy)
    assert _plain(inductive) == _plain(full)
    assert sum(inductive.counts.values()) > 0, _plain(inductive)
