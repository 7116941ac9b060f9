"""The check that the incremental runs' change detector itself is right (sql/080).

An incremental run re-reads raw JSON only for epochs whose digest of normalized rows moved
since they were last verified. Since sql/080 those digests are kept by statement triggers as
rows are written, not recomputed from ~10.6 M rows at every run (~2 s at seed scale). A write
that bypasses triggers (session_replication_role = replica, a disabled trigger, a change below
SQL) would leave a digest unmoved over changed rows; this check recomputes every digest from the
rows and compares. It runs in full and sample runs: an incremental run is the one that relies on
the maintained digests, and paying their recomputation there would undo what they save.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from shareprice.checks.registry import MAX_EXAMPLES, Outcome, Scope, check, status_for

# Epochs whose maintained digest (epoch_rows_digests) differs from the one recomputed from the
# normalized rows (epoch_rows_digests_recomputed); both list every normalized epoch.
_DIFFERING_SQL = """
SELECT coalesce(m.epoch, r.epoch) AS epoch, m.rows_digest AS maintained,
       r.rows_digest AS recomputed
FROM epoch_rows_digests() m
FULL JOIN epoch_rows_digests_recomputed() r ON r.epoch = m.epoch
WHERE m.rows_digest IS DISTINCT FROM r.rows_digest
ORDER BY 1
"""


@check(
    "rows_digests_maintained",
    "Every normalized epoch's digest kept by the write triggers (sql/080, what incremental runs "
    "use to find changed epochs) equals the digest recomputed from its rows, so no write "
    "bypassed them. Compared in full and sample runs. Count: epochs that differ.",
)
def _rows_digests_maintained(conn: Connection, scope: Scope) -> Outcome:
    if scope.mode == "incremental":
        return Outcome(
            "pass",
            0,
            note="not compared in an incremental run, which relies on these digests; "
            "`shareprice check --full` (or --sample) recomputes and compares them",
        )
    rows = conn.execute(text(_DIFFERING_SQL)).all()
    examples: list[dict[str, Any]] = [
        {"epoch": r.epoch, "maintained": r.maintained, "recomputed": r.recomputed}
        for r in rows[:MAX_EXAMPLES]
    ]
    note = f"{scope.normalized_epochs:,} epochs' digests recomputed from their rows"
    if rows:
        note += (
            "; a write bypassed the triggers: `SELECT epoch_rows_digest_rebuild()` recomputes "
            "them, and the next incremental run re-reads the epochs whose rows changed"
        )
    return Outcome(status_for(len(rows)), len(rows), examples, note)
