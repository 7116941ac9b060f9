"""The check that the change marks incremental runs rely on (sql/080) missed no write.

An incremental run re-reads raw JSON only for epochs that are unverified, re-indexed or named
by a change mark, which the normalized tables' statement triggers leave for every write. A
write that bypasses triggers (session_replication_role = replica, a disabled trigger, a
data-only pg_restore with --disable-triggers) leaves no mark, so no incremental run would look
at that epoch again. Full and sample runs recompute the digest of every epoch they read; this
check fails on a verified, unmarked epoch whose rows no longer hash to its verified digest.
Those epochs were re-read by the same run (a wrong value among them fails the raw checks), and
a saved run records their new digests, so the next incremental run starts from the truth.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from shareprice.checks import changes
from shareprice.checks.registry import MAX_EXAMPLES, Outcome, Scope, check, status_for


@check(
    "verified_digests_hold",
    "Every epoch verified at its current raw revision and not marked as changed (sql/080: the "
    "tables' triggers mark every write, which is how incremental runs find changed epochs) "
    "still hashes to the digest it was verified with: no write bypassed the triggers. Compared "
    "for the epochs a full or sample run reads. Count: epochs whose rows changed unmarked.",
)
def _verified_digests_hold(conn: Connection, scope: Scope) -> Outcome:
    if scope.mode == "incremental":
        return Outcome(
            "pass",
            0,
            note="not compared in an incremental run, which relies on the change marks; "
            "`shareprice check --full` (or --sample) recomputes the digests and compares them",
        )
    changed: changes.Changes | None = scope.cache.get("changes")
    if changed is None:  # called outside run_checks: compute what it would have
        changed = changes.read(conn)
        changed.compute_digests(conn, scope.epochs)
    unmarked = changed.changed_behind_triggers()
    examples: list[dict[str, Any]] = [
        {
            "epoch": e,
            "verified_digest": changed.states[e].verified_digest,
            "digest_now": changed.digests[e],
        }
        for e in unmarked[:MAX_EXAMPLES]
    ]
    note = f"{len(changed.digests):,} epochs' digests recomputed from their rows"
    if unmarked:
        note += (
            "; rows changed by a write that bypassed the triggers. This run re-read those "
            "epochs (the raw checks judge their values); saved, it records their digests now"
        )
    return Outcome(status_for(len(unmarked)), len(unmarked), examples, note)
