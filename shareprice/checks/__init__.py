"""Integrity checks: proofs that the normalized tables agree with the raw documents.

A registry of named checks (each says what it proves: `registry`), the checks themselves as SQL
over the tables and, for those that need it, the raw JSON through the chain parser
(`definitions`; the nominator positions' checks in `nominator_checks`; the check that no
write escaped the change marks incremental runs rely on, in `digest_checks`); runs on one
snapshot, stored with their results in `integrity_runs` for the integrity page's history
(`runs`), which epochs changed since they were verified (`changes`), reading many rows fast
inside a run (`fetch`); their rendering as tables and text (`report`). Callers use only the
names re-exported here.

May import: shareprice.chain, shareprice.store, shareprice.errors.
"""

from shareprice.checks.registry import (
    CHECKS,
    Check,
    CheckResult,
    Scope,
    check_names,
    select_checks,
)
from shareprice.checks.report import format_table, history_table, results_table
from shareprice.checks.runs import (
    CheckRun,
    HistoryRun,
    SaveResult,
    VerificationSummary,
    Verified,
    history,
    is_read_only_error,
    load_results,
    run_checks,
    sample_epochs,
    save_run,
    verification_summary,
)

__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "CheckRun",
    "HistoryRun",
    "SaveResult",
    "VerificationSummary",
    "Verified",
    "Scope",
    "check_names",
    "format_table",
    "history",
    "history_table",
    "is_read_only_error",
    "load_results",
    "results_table",
    "run_checks",
    "sample_epochs",
    "save_run",
    "select_checks",
    "verification_summary",
]
