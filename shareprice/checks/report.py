"""How check results read: tables for the integrity page and text for `shareprice check`.

Rendering only (no SQL, no streamlit): the page and the CLI show the same words, and a change of
wording is one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shareprice.checks.registry import MAX_EXAMPLES, CheckResult, check_names
from shareprice.checks.runs import CheckRun, HistoryRun


def results_table(results: Sequence[CheckResult]) -> list[dict[str, Any]]:
    icons = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail"}
    return [
        {
            "check": r.name,
            "status": icons.get(r.status, r.status),
            "count": r.count,
            "seconds": round(r.seconds, 3),
            "note": r.note,
        }
        for r in results
    ]


def history_table(runs: Sequence[HistoryRun]) -> list[dict[str, Any]]:
    """One row per run, one column per check (its status and count): regressions stand out."""
    names = check_names()
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run": run.run_id,
            "started": run.started_at,
            "status": run.status,
            "seconds": round(run.seconds, 2),
            "scope": run.scope_label,
            "by": run.source,
        }
        for name in names:
            if name in run.checks:
                status, count, _ = run.checks[name]
                row[name] = status if status == "pass" else f"{status} ({count:,})"
            else:
                row[name] = ""
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- text rendering


def format_table(run: CheckRun) -> str:
    """The results as `shareprice check` prints them."""
    width = max((len(r.name) for r in run.results), default=5)
    lines = [f"{'check':<{width}}  status  {'count':>9}  {'seconds':>8}  note"]
    for r in run.results:
        lines.append(
            f"{r.name:<{width}}  {r.status.upper():<6}  {r.count:>9,}  {r.seconds:>8.2f}  {r.note}"
        )
        if r.status != "pass":
            for example in r.examples[:5]:
                lines.append("    " + ", ".join(f"{k}={v}" for k, v in example.items()))
            if r.count > 5 and r.examples:
                lines.append(f"    ... up to {MAX_EXAMPLES} examples with --json")
    lines.append(
        f"{run.status.upper()}: {sum(r.status == 'fail' for r in run.results)} failed, "
        f"{sum(r.status == 'warn' for r in run.results)} warned, "
        f"{sum(r.status == 'pass' for r in run.results)} passed on {run.scope.describe()} "
        f"in {run.seconds:.2f}s"
    )
    if run.verification_note:
        lines.append(run.verification_note)
    return "\n".join(lines)
