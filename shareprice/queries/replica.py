"""Whether the database being read is a hot standby, and how far behind its primary it is.

Scale-out is PostgreSQL's own streaming replication: more dashboard and API processes, each
reading a hot standby through `SHAREPRICE_READONLY_URL`. A standby serves what it has replayed,
so a viewer on one can see data a few seconds older than the primary holds. The progress page
and `/api/v1/health` say so instead of letting that go unnoticed: the replay lag in seconds
(what PostgreSQL knows on the standby alone) and, when the primary is reachable too, how many
epochs the standby's normalized tables are behind the primary's.

The lag is `now() - pg_last_xact_replay_timestamp()` — the age of the last transaction replayed —
except when everything received has been replayed: an idle standby has no new transaction to
replay, so the age of the last one says how long the primary has been quiet, not how far behind
the standby is. Then the lag is 0.

May import: sqlalchemy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class ReplicaStatus:
    #: Seconds the standby's replay trails the primary; 0 when caught up; None when the standby
    #: has not replayed any transaction yet (nothing to measure against).
    replay_lag_s: float | None
    #: Primary's latest normalized epoch minus the standby's; None without a primary engine or
    #: when the primary cannot be reached.
    epochs_behind: int | None
    #: Commit time (on the primary) of the last transaction the standby replayed.
    last_replay_at: datetime | None


# On the standby: recovery state, whether everything received is replayed (NULL when WAL comes
# from an archive rather than a stream), the replay age in seconds, and the newest epoch the
# standby's normalized tables hold. One round trip; every function here is executable by PUBLIC.
_STANDBY_STATUS_SQL = sa.text(
    """
    -- replica_status: standby side
    SELECT pg_is_in_recovery()                                          AS in_recovery,
           pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()          AS caught_up,
           EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())  AS replay_age_s,
           pg_last_xact_replay_timestamp()                              AS last_replay_at,
           (SELECT max(epoch) FROM epoch_normalizations)                AS latest_epoch
    """
)

# On the primary: how many normalized epochs lie beyond the standby's newest. For contiguous
# histories this is primary max(epoch) minus standby max(epoch); when the standby holds none yet
# (:standby_latest is NULL) it is every epoch the primary holds.
_PRIMARY_AHEAD_SQL = sa.text(
    """
    -- replica_status: primary side
    SELECT CASE
               WHEN CAST(:standby_latest AS integer) IS NULL THEN count(*)
               ELSE COALESCE(max(epoch) - CAST(:standby_latest AS integer), 0)
           END
    FROM epoch_normalizations
    """
)


def replica_status(engine: Engine, primary: Engine | None = None) -> ReplicaStatus | None:
    """The standby's replay lag, or None when `engine` is not a standby (not in recovery).

    `primary`, when given (for example an engine on `SHAREPRICE_DATABASE_URL` while
    `SHAREPRICE_READONLY_URL` names the standby), adds how many epochs the standby is behind.
    """
    with engine.connect() as conn:
        row = conn.execute(_STANDBY_STATUS_SQL).one()
    if not row.in_recovery:
        return None
    if row.caught_up:
        lag: float | None = 0.0
    elif row.replay_age_s is None:
        lag = None
    else:
        lag = max(0.0, float(row.replay_age_s))
    behind: int | None = None
    if primary is not None:
        try:
            with primary.connect() as conn:
                ahead = conn.execute(
                    _PRIMARY_AHEAD_SQL, {"standby_latest": row.latest_epoch}
                ).scalar()
        except (sa.exc.OperationalError, sa.exc.InterfaceError):
            ahead = None  # the primary is unreachable: the standby still serves, lag still known
        behind = None if ahead is None else max(0, int(ahead))
    return ReplicaStatus(replay_lag_s=lag, epochs_behind=behind, last_replay_at=row.last_replay_at)
