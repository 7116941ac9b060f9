"""What `make run` does before starting Streamlit: a database that is up, migrated and not empty.

Every step is idempotent and cheap when already done, so a second `make run` is up in seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from shareprice.store import migrate


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
