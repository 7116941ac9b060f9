"""Which epochs changed since the raw-reading checks last verified them (sql/041, sql/080).

An epoch verified at a raw revision and a digest of its normalized rows is unchanged while its
raw revision is the same and no change mark (left by the tables' statement triggers, sql/080)
names it, or while its digest, recomputed because a mark names it, is still the verified one
(a re-backfill that wrote the same rows). So an incremental run computes digests only for the
epochs that are unverified, re-indexed or marked (after a follow batch: a handful), where
hashing every normalized row took ~3 s at seed scale; a full or sample run computes them for
every epoch it reads (they are what it records as verified).

A saved run then forgets the marks it accounted for (`settled`, `forget_settled_marks`): those
of epochs whose verification now matches their rows or is gone, and only marks its snapshot
saw, so a write committed while it was reading keeps its mark for the next run.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Connection

# Per normalized epoch: its raw revision, its last verification, and whether a change mark the
# run's snapshot sees names it; `everything` when a mark names every epoch (a TRUNCATE).
_EPOCHS_SQL = """
SELECT n.epoch, e.revision, v.revision AS verified_revision, v.rows_digest AS verified_digest,
       m.epoch IS NOT NULL AS marked
FROM epoch_normalizations n
JOIN epochs e ON e.epoch = n.epoch
LEFT JOIN epoch_verifications v ON v.epoch = n.epoch
LEFT JOIN (SELECT DISTINCT epoch FROM epoch_rows_changes) m ON m.epoch = n.epoch
ORDER BY n.epoch
"""
_EVERYTHING_SQL = "SELECT EXISTS (SELECT 1 FROM epoch_rows_changes WHERE epoch IS NULL)"
#: Up to this many epochs, their digests are computed for them alone (a follow batch: ~50 ms at
#: seed scale); beyond, one pass over every row is cheaper than matching each row against the
#: list (every epoch as a list: ~5.5 s at seed scale, all of them in one pass: ~2.5 s).
DIGESTS_BY_LIST_MAX = 300


@dataclass(frozen=True)
class EpochState:
    epoch: int
    revision: int
    verified_revision: int | None
    verified_digest: str | None
    marked: bool

    @property
    def verified_here(self) -> bool:
        """Verified at the current raw revision (whatever its rows hash to now)."""
        return self.verified_digest is not None and self.verified_revision == self.revision


@dataclass
class Changes:
    """The run's view of which epochs changed, and the digests it computed."""

    states: dict[int, EpochState]
    #: The run's snapshot (pg_current_snapshot()), to forget only the marks it saw.
    snapshot: str
    #: Digests recomputed in this run, by epoch.
    digests: dict[int, str] = field(default_factory=dict)

    @property
    def epochs(self) -> list[int]:
        return list(self.states)

    def candidates(self) -> list[int]:
        """The epochs whose digest an incremental run needs: unverified at this revision, or
        marked as changed since."""
        return [e for e, s in self.states.items() if not s.verified_here or s.marked]

    def compute_digests(self, conn: Connection, epochs: Sequence[int] | None) -> None:
        """Recompute the digests of `epochs` (None: every normalized epoch) from the rows."""
        if epochs is None or len(epochs) > DIGESTS_BY_LIST_MAX:
            wanted = None if epochs is None else set(epochs)
            rows = conn.execute(text("SELECT epoch, rows_digest FROM epoch_rows_digests()"))
            self.digests.update(
                {
                    int(r.epoch): str(r.rows_digest)
                    for r in rows
                    if wanted is None or int(r.epoch) in wanted
                }
            )
            return
        if not epochs:
            return
        rows = conn.execute(
            text("SELECT epoch, rows_digest FROM epoch_rows_digests_of(CAST(:e AS integer[]))"),
            {"e": list(epochs)},
        )
        self.digests.update({int(r.epoch): str(r.rows_digest) for r in rows})

    def unchanged(self, epoch: int) -> bool:
        """Verified at this revision, and unmarked or still hashing to its verified digest."""
        s = self.states[epoch]
        if not s.verified_here:
            return False
        return not s.marked or self.digests.get(epoch) == s.verified_digest

    def changed_behind_triggers(self) -> list[int]:
        """Epochs verified at this revision, unmarked, whose recomputed digest is not the
        verified one: their rows changed by a write that left no mark."""
        return [
            e
            for e, s in self.states.items()
            if s.verified_here
            and not s.marked
            and e in self.digests
            and self.digests[e] != s.verified_digest
        ]

    def settled(self, covered: Collection[int], records: bool) -> list[int]:
        """Epochs whose marks a save of this run may forget: their verification after the save
        will match their recomputed digest, or there will be none to be fooled. `covered`: the
        epochs the raw checks read; `records`: the save records their outcome (each becomes
        verified with its digest, or loses its verification)."""
        out = []
        for epoch, digest in self.digests.items():
            s = self.states.get(epoch)
            if s is None:
                continue
            if (records and epoch in covered) or not s.verified_here or s.verified_digest == digest:
                out.append(epoch)
        return sorted(out)


def read(conn: Connection) -> Changes:
    """Every normalized epoch's state in the run's snapshot (no digest computed yet)."""
    everything = bool(conn.execute(text(_EVERYTHING_SQL)).scalar_one())
    states = {
        int(r.epoch): EpochState(
            int(r.epoch),
            int(r.revision),
            None if r.verified_revision is None else int(r.verified_revision),
            r.verified_digest,
            everything or bool(r.marked),
        )
        for r in conn.execute(text(_EPOCHS_SQL))
    }
    snapshot = str(conn.execute(text("SELECT pg_current_snapshot()::text")).scalar_one())
    return Changes(states, snapshot)


def forget_settled_marks(
    conn: Connection, snapshot: str, settled: Sequence[int], everything: bool
) -> int:
    """Delete the change marks a saved run accounted for: those its snapshot saw, naming a
    settled epoch, or any epoch at all (the wildcard included) when `everything` (the run
    settled every normalized epoch, so no mark left can matter)."""
    result = conn.execute(
        text(
            """
            DELETE FROM epoch_rows_changes
            WHERE pg_visible_in_snapshot(changed_by, CAST(:snapshot AS pg_snapshot))
              AND (:everything OR epoch = ANY(CAST(:settled AS integer[])))
            """
        ),
        {"snapshot": snapshot, "settled": list(settled), "everything": everything},
    )
    return int(result.rowcount or 0)
