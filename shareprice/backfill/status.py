"""How far the backfill has got: the summary behind the progress page and `shareprice progress`.

The page refreshes every two seconds while a backfill writes 3.5 M rows in another process, so
every figure here comes from a cheap source and says which:

- raw epochs, normalized epochs, coverage ranges, failures: exact, from small tables (`epochs`
  read without its JSON column, `epoch_normalizations`, `backfill_errors`, one row per epoch);
- the current run's progress, rate and ETA: exact counters the backfill keeps in `backfill_runs`;
- rows per normalized table: an exact count(*) only while a table is small, otherwise the
  statistics' live-tuple estimate (`pg_stat_user_tables.n_live_tup`, updated as the backfill
  commits), labelled "estimate". Never a full count(*) of a 3.5 M-row table per refresh.

All queries run in one read-only transaction with a short statement_timeout, so a slow or locked
database makes the page say so instead of piling up queries behind the backfill.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

#: A 'running' run whose heartbeat is older than this is shown as interrupted: the backfill
#: beats after every batch, so silence this long means the process died without saying so.
STALE_HEARTBEAT_SECONDS = 30.0

#: Tables at most this many 8 KiB pages (8 MiB) are counted exactly; bigger ones are estimated.
EXACT_COUNT_MAX_PAGES = 1000

#: The normalized tables whose rows the page shows, in the order shown.
NORMALIZED_TABLES = (
    "operator_share_prices",
    "operator_shares",
    "operator_chain_share_prices",
    "operators_metadata",
    "nominator_positions",
    "nominator_withdrawals",
    "epoch_positions",
    "nominator_accounts",
)

#: Per-query limit: the page must never queue behind the backfill for long.
STATEMENT_TIMEOUT_MS = 5000

# Coverage of raw epochs as islands of one state (gaps-and-islands: consecutive raw epochs in
# the same state share `row_number() over all - row_number() within the state`). States:
# normalized = at the raw document's current revision; stale = normalized from an older
# revision; failed = not normalized and some run recorded an error for it; pending = not yet.
COVERAGE_SQL = """
WITH state AS (
    SELECT e.epoch,
           CASE
               WHEN n.epoch IS NULL AND f.epoch IS NOT NULL THEN 'failed'
               WHEN n.epoch IS NULL THEN 'pending'
               WHEN n.revision <> e.revision THEN 'stale'
               ELSE 'normalized'
           END AS state
    FROM epochs e
    LEFT JOIN epoch_normalizations n ON n.epoch = e.epoch
    LEFT JOIN (SELECT DISTINCT epoch FROM backfill_errors) f ON f.epoch = e.epoch
), islands AS (
    SELECT epoch, state,
           row_number() OVER (ORDER BY epoch)
             - row_number() OVER (PARTITION BY state ORDER BY epoch) AS island
    FROM state
)
SELECT state, min(epoch) AS first_epoch, max(epoch) AS last_epoch, count(*) AS epochs
FROM islands
GROUP BY state, island
ORDER BY first_epoch
"""

# Exact small counts: raw epochs (heap only, the JSON stays in TOAST) and normalized ones.
EPOCH_COUNTS_SQL = """
SELECT (SELECT count(*) FROM epochs) AS raw_epochs,
       (SELECT min(epoch) FROM epochs) AS first_raw_epoch,
       (SELECT max(epoch) FROM epochs) AS last_raw_epoch,
       (SELECT count(*) FROM epoch_normalizations) AS normalized_any,
       (SELECT max(epoch) FROM epoch_normalizations) AS latest_normalized_epoch
"""

# Size and live-tuple statistics of the normalized tables: catalog reads, no table scan.
TABLE_STATS_SQL = """
SELECT c.relname AS table_name,
       pg_relation_size(c.oid) / current_setting('block_size')::int AS pages,
       coalesce(s.n_live_tup, 0) AS live_tuples,
       c.reltuples::bigint AS reltuples
FROM pg_class c
JOIN pg_namespace ns ON ns.oid = c.relnamespace AND ns.nspname = current_schema()
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relname = ANY(:tables) AND c.relkind = 'r'
"""

# Runs, newest first, with ages measured by the server's clock (no client clock skew).
RUNS_SQL = """
SELECT run_id, status, started_at, finished_at, heartbeat_at, epoch_from, epoch_to,
       epochs_total, epochs_done, epochs_failed, rows_written, last_epoch, pid, host, error,
       extract(epoch FROM clock_timestamp() - heartbeat_at) AS heartbeat_age_s,
       extract(epoch FROM coalesce(finished_at, heartbeat_at) - started_at) AS elapsed_s
FROM backfill_runs
ORDER BY run_id DESC
LIMIT :limit
"""

# Failures that still matter: epochs some run could not normalize and that are not normalized
# now, with the latest reason recorded for each.
FAILURES_SQL = """
SELECT DISTINCT ON (b.epoch) b.epoch, b.run_id, b.reason, b.recorded_at
FROM backfill_errors b
WHERE NOT EXISTS (SELECT 1 FROM epoch_normalizations n WHERE n.epoch = b.epoch)
ORDER BY b.epoch, b.run_id DESC
LIMIT :limit
"""

FAILURE_COUNT_SQL = """
SELECT count(DISTINCT b.epoch)
FROM backfill_errors b
WHERE NOT EXISTS (SELECT 1 FROM epoch_normalizations n WHERE n.epoch = b.epoch)
"""


@dataclass(frozen=True)
class TableRows:
    table: str
    rows: int
    #: False: exact count(*); True: statistics estimate (the table is big).
    estimated: bool


@dataclass(frozen=True)
class CoverageRange:
    first_epoch: int
    last_epoch: int
    #: normalized / stale / failed / pending
    state: str
    epochs: int


@dataclass(frozen=True)
class Failure:
    epoch: int
    run_id: int
    reason: str
    recorded_at: datetime


@dataclass(frozen=True)
class Run:
    run_id: int
    #: What backfill_runs says.
    status: str
    #: What to show: 'interrupted' for a 'running' run whose heartbeat went stale.
    effective_status: str
    started_at: datetime
    finished_at: datetime | None
    heartbeat_at: datetime
    heartbeat_age_s: float
    elapsed_s: float
    epoch_from: int | None
    epoch_to: int | None
    epochs_total: int
    epochs_done: int
    epochs_failed: int
    rows_written: dict[str, int]
    last_epoch: int | None
    pid: int | None
    host: str | None
    error: str | None
    epochs_per_s: float | None
    rows_per_s: float | None
    #: Seconds until the run's epochs are through at its average rate; None when not running.
    eta_s: float | None

    @property
    def rows_total(self) -> int:
        return sum(self.rows_written.values())

    @property
    def percent(self) -> float:
        if self.epochs_total <= 0:
            return 100.0 if self.status == "succeeded" else 0.0
        return 100.0 * (self.epochs_done + self.epochs_failed) / self.epochs_total


@dataclass(frozen=True)
class ProgressSummary:
    raw_epochs: int
    first_raw_epoch: int | None
    last_raw_epoch: int | None
    #: Raw epochs normalized at their current revision.
    normalized_epochs: int
    #: Raw epochs normalized from an older revision of their document (re-run the backfill).
    stale_epochs: int
    failed_epochs: int
    pending_epochs: int
    latest_normalized_epoch: int | None
    tables: list[TableRows]
    coverage: list[CoverageRange]
    current_run: Run | None
    past_runs: list[Run]
    failures: list[Failure]
    #: How long gathering this summary took (the cost of one page refresh).
    query_ms: float
    notes: list[str] = field(default_factory=list)

    @property
    def percent(self) -> float:
        return 100.0 * self.normalized_epochs / self.raw_epochs if self.raw_epochs else 0.0

    @property
    def missing_ranges(self) -> list[CoverageRange]:
        """Runs of consecutive raw epochs not normalized at their current revision.

        Neighbouring pending, failed and stale islands merge into one range (state joined by
        '+'), so "104-105" reads as one gap rather than two.
        """
        merged: list[CoverageRange] = []
        for r in self.coverage:
            if r.state == "normalized":
                continue
            if merged and merged[-1].last_epoch == self._previous_raw_epoch(r):
                last = merged.pop()
                states = last.state.split("+")
                if r.state not in states:
                    states.append(r.state)
                r = CoverageRange(
                    last.first_epoch, r.last_epoch, "+".join(states), last.epochs + r.epochs
                )
            merged.append(r)
        return merged

    def _previous_raw_epoch(self, island: CoverageRange) -> int | None:
        index = self.coverage.index(island)
        return self.coverage[index - 1].last_epoch if index > 0 else None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (datetimes as ISO strings) for `shareprice progress --json`."""
        data = _jsonable(asdict(self))
        data["percent"] = round(self.percent, 3)
        data["missing_ranges"] = _jsonable([asdict(r) for r in self.missing_ranges])
        if self.current_run is not None:
            data["current_run"]["percent"] = round(self.current_run.percent, 3)
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _run_from_row(row: Any, stale_after_s: float) -> Run:
    rows_written = {str(k): int(v) for k, v in (row.rows_written or {}).items()}
    heartbeat_age = float(row.heartbeat_age_s or 0.0)
    elapsed = max(float(row.elapsed_s or 0.0), 0.0)
    status = row.status
    effective = status
    if status == "running" and heartbeat_age > stale_after_s:
        effective = "interrupted"
    epochs_per_s = rows_per_s = eta = None
    if elapsed > 0:
        epochs_per_s = (row.epochs_done + row.epochs_failed) / elapsed
        rows_per_s = sum(rows_written.values()) / elapsed
    if effective == "running" and epochs_per_s:
        remaining = max(row.epochs_total - row.epochs_done - row.epochs_failed, 0)
        eta = remaining / epochs_per_s
    return Run(
        run_id=int(row.run_id),
        status=status,
        effective_status=effective,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
        heartbeat_age_s=heartbeat_age,
        elapsed_s=elapsed,
        epoch_from=row.epoch_from,
        epoch_to=row.epoch_to,
        epochs_total=int(row.epochs_total),
        epochs_done=int(row.epochs_done),
        epochs_failed=int(row.epochs_failed),
        rows_written=rows_written,
        last_epoch=row.last_epoch,
        pid=row.pid,
        host=row.host,
        error=row.error,
        epochs_per_s=epochs_per_s,
        rows_per_s=rows_per_s,
        eta_s=eta,
    )


def table_rows(conn: Connection, exact_max_pages: int = EXACT_COUNT_MAX_PAGES) -> list[TableRows]:
    """Rows per normalized table: exact while small, the statistics' live estimate when big."""
    stats = {
        r.table_name: r
        for r in conn.execute(text(TABLE_STATS_SQL), {"tables": list(NORMALIZED_TABLES)})
    }
    result: list[TableRows] = []
    for name in NORMALIZED_TABLES:
        stat = stats.get(name)
        if stat is None:
            continue
        if stat.pages <= exact_max_pages:
            # The name comes from NORMALIZED_TABLES above, never from input.
            count = conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one()  # noqa: S608
            result.append(TableRows(name, int(count), estimated=False))
        else:
            estimate = stat.live_tuples
            if estimate <= 0:
                # Statistics reset (crash, pg_stat_reset): the planner's own estimate, which
                # scales the last ANALYZE's density by the table's current size.
                estimate = _planner_rows(conn, name)
            result.append(TableRows(name, int(estimate), estimated=True))
    return result


def _planner_rows(conn: Connection, table: str) -> int:
    # The name comes from NORMALIZED_TABLES, never from input.
    plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table}").scalar_one()  # noqa: S608
    if isinstance(plan, str):
        import json

        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def summarize(
    engine: Engine,
    *,
    runs_limit: int = 20,
    failures_limit: int = 100,
    stale_after_s: float = STALE_HEARTBEAT_SECONDS,
    exact_max_pages: int = EXACT_COUNT_MAX_PAGES,
) -> ProgressSummary:
    """One consistent snapshot of the backfill's progress, from cheap queries only."""
    started = time.perf_counter()
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN READ ONLY")
        conn.execute(
            text("SELECT set_config('statement_timeout', :ms, true)"),
            {"ms": str(STATEMENT_TIMEOUT_MS)},
        )
        counts = conn.execute(text(EPOCH_COUNTS_SQL)).one()
        coverage = [
            CoverageRange(int(r.first_epoch), int(r.last_epoch), r.state, int(r.epochs))
            for r in conn.execute(text(COVERAGE_SQL))
        ]
        tables = table_rows(conn, exact_max_pages)
        runs = [
            _run_from_row(r, stale_after_s)
            for r in conn.execute(text(RUNS_SQL), {"limit": runs_limit})
        ]
        failures = [
            Failure(int(r.epoch), int(r.run_id), r.reason, r.recorded_at)
            for r in conn.execute(text(FAILURES_SQL), {"limit": failures_limit})
        ]
        failed_count = int(conn.execute(text(FAILURE_COUNT_SQL)).scalar_one())
        conn.exec_driver_sql("COMMIT")
    by_state: dict[str, int] = {}
    for r in coverage:
        by_state[r.state] = by_state.get(r.state, 0) + r.epochs
    notes: list[str] = []
    estimated = [t.table for t in tables if t.estimated]
    if estimated:
        notes.append(
            "rows of "
            + ", ".join(estimated)
            + " are statistics estimates (pg_stat_user_tables.n_live_tup); other counts are exact"
        )
    orphans = int(counts.normalized_any) - by_state.get("normalized", 0) - by_state.get("stale", 0)
    if orphans > 0:
        notes.append(f"{orphans} normalized epoch(s) no longer have a raw document")
    if failed_count > len(failures):
        notes.append(f"showing {len(failures)} of {failed_count} failed epochs")
    return ProgressSummary(
        raw_epochs=int(counts.raw_epochs),
        first_raw_epoch=counts.first_raw_epoch,
        last_raw_epoch=counts.last_raw_epoch,
        normalized_epochs=by_state.get("normalized", 0),
        stale_epochs=by_state.get("stale", 0),
        failed_epochs=by_state.get("failed", 0),
        pending_epochs=by_state.get("pending", 0),
        latest_normalized_epoch=counts.latest_normalized_epoch,
        tables=tables,
        coverage=coverage,
        current_run=runs[0] if runs else None,
        past_runs=runs,
        failures=failures,
        query_ms=(time.perf_counter() - started) * 1000.0,
        notes=notes,
    )


# ----------------------------------------------------------------------------- text rendering


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_ranges(ranges: list[CoverageRange], limit: int = 20) -> str:
    parts = [
        f"{r.first_epoch}" if r.first_epoch == r.last_epoch else f"{r.first_epoch}-{r.last_epoch}"
        for r in ranges[:limit]
    ]
    if len(ranges) > limit:
        parts.append(f"... ({len(ranges) - limit} more)")
    return ", ".join(parts) if parts else "none"


def run_line(run: Run) -> str:
    status = run.effective_status
    if status != run.status:
        status += (
            f" (recorded '{run.status}', no heartbeat for {format_duration(run.heartbeat_age_s)})"
        )
    rate = (
        f"{run.epochs_per_s:.1f} epochs/s, {run.rows_per_s:,.0f} rows/s"
        if run.epochs_per_s
        else "-"
    )
    return (
        f"run {run.run_id}: {status}; {run.epochs_done:,}/{run.epochs_total:,} epochs done "
        f"({run.percent:.1f}%), {run.epochs_failed:,} failed, {run.rows_total:,} rows; "
        f"rate {rate}; ETA {format_duration(run.eta_s)}; "
        f"heartbeat {format_duration(run.heartbeat_age_s)} ago"
    )


def format_text(summary: ProgressSummary) -> str:
    """The summary as `shareprice progress` prints it."""
    lines = [
        f"raw epochs:         {summary.raw_epochs:,}"
        + (f" ({summary.first_raw_epoch}-{summary.last_raw_epoch})" if summary.raw_epochs else ""),
        f"normalized epochs:  {summary.normalized_epochs:,} ({summary.percent:.1f}%)"
        + (f", {summary.stale_epochs:,} stale" if summary.stale_epochs else "")
        + (f", {summary.failed_epochs:,} failed" if summary.failed_epochs else "")
        + (f", {summary.pending_epochs:,} pending" if summary.pending_epochs else ""),
        f"latest normalized:  {summary.latest_normalized_epoch if summary.latest_normalized_epoch is not None else '-'}",
        f"not normalized:     {format_ranges(summary.missing_ranges)}",
        "rows per table:",
    ]
    for t in summary.tables:
        lines.append(f"  {t.table:<28} {t.rows:>14,}  {'estimate' if t.estimated else 'exact'}")
    lines.append(
        "current run:        " + (run_line(summary.current_run) if summary.current_run else "none")
    )
    if summary.current_run and summary.current_run.error:
        lines.append(f"  error: {summary.current_run.error}")
    if summary.failures:
        lines.append("failed epochs:")
        for f in summary.failures[:20]:
            lines.append(f"  {f.epoch} (run {f.run_id}): {f.reason}")
    if len(summary.past_runs) > 1:
        lines.append("past runs:")
        for run in summary.past_runs[1:]:
            lines.append("  " + run_line(run))
    for note in summary.notes:
        lines.append(f"note: {note}")
    lines.append(f"(gathered in {summary.query_ms:.0f} ms)")
    return "\n".join(lines)
