"""Raw epochs into the normalized tables: the runner, its worker pool and signals, the raw
reader, the writer, and the status the progress page shows.

Resumable and revision-aware: an epoch is normalized at most once per revision of its raw
document, a kill loses at most the batches in flight, and a bad document is recorded with its
epoch and reason while the rest go on.

May import: shareprice.chain, shareprice.store, shareprice.errors. The public names below are
what the CLI, `prepare` and the benchmarks use; `status` is the progress page's module.
"""

from shareprice.backfill.batch import BackfillError, LockBusy
from shareprice.backfill.runner import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_WORKERS,
    Options,
    pending_count,
    run_backfill,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_WORKERS",
    "BackfillError",
    "LockBusy",
    "Options",
    "pending_count",
    "run_backfill",
]
