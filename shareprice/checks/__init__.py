"""Integrity checks: proofs that the normalized tables agree with the raw documents.

A registry of named checks (each says what it proves), the checks themselves as SQL over the
tables and, for those that need it, the raw JSON through the chain parser; runs stored with their
results in `integrity_runs` for the integrity page's history.

May import: shareprice.chain, shareprice.store, shareprice.errors.
"""

from shareprice.checks.definitions import (
    CHECKS,
    Check,
    CheckResult,
    CheckRun,
    HistoryRun,
    SaveResult,
    Scope,
    check_names,
    format_table,
    history,
    history_table,
    is_read_only_error,
    load_results,
    results_table,
    run_checks,
    sample_epochs,
    save_run,
    select_checks,
)

__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "CheckRun",
    "HistoryRun",
    "SaveResult",
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
]
