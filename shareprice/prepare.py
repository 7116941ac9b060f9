"""What `make run` does before starting Streamlit: a database that is up, migrated and not empty.

Every step is idempotent and cheap when already done, so a second `make run` is up in seconds.

The last step is the analytics view (issue 12): `comprehensive_analytics` is installed over its
v1 definition (the raw JSON), which is the only correct one before a backfill, and stays there
until someone runs `shareprice views use-v2`: the old system's own query on it then takes 30 s
at seed scale instead of milliseconds. On the embedded default database, which this project
owns, `prepare` makes the swap itself once every raw epoch is normalized. On an adopted
database (an external URL) it is the operator's call: `view_advice` says whether the swap is
safe (coverage, the last integrity check) and the command that makes it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from sqlalchemy.engine import Engine, make_url

from shareprice.store import analytics_view, db, migrate


def epoch_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM epochs").scalar_one())


def prepare(engine: Engine, echo: Callable[[str], None] = print, demo: bool = True) -> None:
    applied = migrate.migrate(engine)
    echo(f"schema: {'applied ' + ', '.join(applied) if applied else 'up to date'}")
    if demo and epoch_count(engine) == 0:
        load_demo = _demo_loader()
        if load_demo is None:
            echo(
                "no epochs yet, and no demo generator in this build: the dashboard will say how to import data"
            )
        else:
            load_demo(engine, echo)
    backfill = _backfiller()
    if backfill is not None:
        backfill(engine, echo)
    if is_embedded(engine):
        echo(swap_view_when_complete(engine))
    else:
        for line in view_advice(engine):
            echo(line)


def is_embedded(engine: Engine) -> bool:
    """Whether `engine` reads the embedded server this project runs (its socket dir), as
    opposed to an adopted or external database."""
    status = db.embedded_status()
    if not status.running or status.url is None:
        return False
    return make_url(status.url).query.get("host") == engine.url.query.get("host")


def _coverage(engine: Engine) -> tuple[int, int]:
    """(raw epochs, of which not normalized at their current revision)."""
    from shareprice.backfill import status

    summary = status.summarize(engine)
    return summary.raw_epochs, summary.raw_epochs - summary.normalized_epochs


def swap_view_when_complete(engine: Engine) -> str:
    """On the embedded default: swap comprehensive_analytics to v2 once nothing is pending."""
    state = analytics_view.state(engine)
    if state.version == "v2":
        return "comprehensive_analytics: v2 (normalized tables)"
    raw, pending = _coverage(engine)
    if raw == 0 or pending:
        return (
            f"comprehensive_analytics: stays on v1 (raw JSON) while {pending:,} of {raw:,} raw "
            "epochs are not normalized"
        )
    try:
        return "comprehensive_analytics: " + analytics_view.use_v2(engine)
    except analytics_view.ViewSwapRefused as exc:
        return f"comprehensive_analytics: not swapped: {exc}"


def view_advice(engine: Engine) -> list[str]:
    """For an adopted database: whether swapping comprehensive_analytics to v2 is safe now
    (every raw epoch normalized, the last integrity check passed) and how to do it."""
    from shareprice import checks

    state = analytics_view.state(engine)
    if state.version == "v2":
        return ["comprehensive_analytics reads v2 (the normalized tables)"]
    if state.version is None:
        return [f"comprehensive_analytics: unexpected state ({state.describe()}), not advising"]
    raw, pending = _coverage(engine)
    runs = checks.history(engine, limit=1)
    last = runs[0] if runs else None
    check_line = (
        "no integrity check has run (`shareprice check`)"
        if last is None
        else f"last integrity check: {last.status} (run {last.run_id}, "
        f"{last.started_at.astimezone(datetime.UTC):%Y-%m-%d %H:%M} UTC)"
    )
    coverage = f"{raw - pending:,} of {raw:,} raw epochs normalized"
    if pending or raw == 0:
        verdict = "not safe yet: v2 would miss the epochs not normalized"
    elif last is not None and last.status == "fail":
        verdict = "not advised: the last integrity check failed"
    else:
        verdict = "safe"
    return [
        f"comprehensive_analytics is on v1 (raw JSON, slow); swap to v2: {verdict}",
        f"  {coverage}; {check_line}",
        "  swap with `shareprice views use-v2` (one transaction; `shareprice views rollback` "
        "undoes it)",
    ]


def _demo_loader() -> Callable[[Engine, Callable[[str], None]], None] | None:
    """The demo data step: the generator's `demo` profile (a few seconds, ~130 MB of JSON)."""
    from shareprice.ingest import generator

    def load_demo(engine: Engine, echo: Callable[[str], None]) -> None:
        echo("no epochs yet: generating the demo data set (shareprice demo --profile demo)")
        summary = generator.generate(engine, "demo")
        echo(
            f"demo data: {summary.epochs:,} epochs, {summary.operator_states:,} operator states, "
            f"{summary.json_bytes / 1e6:,.0f} MB of JSON in {summary.seconds:.1f}s"
        )

    return load_demo


def _backfiller() -> Callable[[Engine, Callable[[str], None]], None] | None:
    """The incremental backfill step: normalizes only new or changed epochs (seconds when
    nothing changed); if another backfill is running, the dashboard shows its progress."""
    from shareprice import backfill

    def run_backfill(engine: Engine, echo: Callable[[str], None]) -> None:
        try:
            summary = backfill.run_backfill(engine, backfill.Options())
        except backfill.LockBusy as exc:
            echo(f"backfill: skipped, {exc}")
            return
        if summary.status == "nothing-to-do":
            echo("backfill: every epoch is normalized")
            return
        echo(
            f"backfill: {summary.epochs_done:,} epochs normalized, {summary.epochs_failed:,} "
            f"failed, in {summary.seconds:.1f}s (run {summary.run_id})"
        )

    return run_backfill
