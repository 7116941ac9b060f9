"""Every advisory-lock key shareprice takes, in one place, so no two can collide.

PostgreSQL advisory locks are named by a bigint chosen by the application; two features picking
the same number would block each other in ways no error explains. All keys share the high word
0x5E4E ("shareprice") and a low word per feature; a new lock takes the next free number here.
"""

from __future__ import annotations

#: `shareprice migrate`: serializes concurrent migrations (two test workers, make run + CLI).
MIGRATION = 0x5E4E_0001

#: Session lock held by the running backfill: one backfill at a time per database. Other
#: processes read its holder from pg_locks to say who runs.
BACKFILL = 0x5E4E_0401

#: Shared by every batch transaction, taken exclusively by a starting backfill to wait until the
#: batches of a killed run's surviving workers have ended.
BACKFILL_BARRIER = 0x5E4E_0402

#: Transaction lock serializing the short tail of batch transactions (metadata, chain prices),
#: so parallel workers never deadlock on the same operators' rows.
BACKFILL_TAIL = 0x5E4E_0403

#: The comprehensive_analytics view swap (use-v2 / rollback): two swaps cannot interleave.
ANALYTICS_VIEW_SWAP = 0x5E4E_0410
