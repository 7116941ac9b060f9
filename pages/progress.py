"""Migration progress: how far the backfill has got, refreshed live while it runs."""

import datetime

import streamlit as st

from shareprice import queries, ui
from shareprice.backfill import status
from shareprice.display import progress_view
from shareprice.store import analytics_view

REFRESH_SECONDS = 2

st.title("Migration progress")
st.caption(
    "Raw epochs (`epochs`) against what `shareprice backfill` has normalized. Cheap queries only: "
    "the backfill in another process is not slowed by this page. Same summary in a terminal: "
    "`shareprice progress`."
)
live = st.toggle(f"Refresh every {REFRESH_SECONDS} s", value=True)


@st.fragment(run_every=REFRESH_SECONDS if live else None)
def show_progress() -> None:
    with ui.database_guard():
        summary = status.summarize(ui.engine())
        replica = queries.replica_status(ui.engine(), ui.primary_engine())
        view = analytics_view.state(ui.engine())
    if summary.raw_epochs == 0 and not summary.past_runs:
        ui.empty_state()
        return

    total, done, pct, latest = st.columns(4)
    total.metric("Raw epochs", f"{summary.raw_epochs:,}")
    done.metric("Normalized epochs", f"{summary.normalized_epochs:,}")
    pct.metric("Normalized", f"{summary.percent:.1f}%")
    latest.metric(
        "Latest normalized epoch",
        "-" if summary.latest_normalized_epoch is None else f"{summary.latest_normalized_epoch}",
    )
    if replica is not None:  # a hot standby: it serves what it has replayed so far
        lag, behind, replayed = st.columns(3)
        lag.metric(
            "Replay lag",
            "-" if replica.replay_lag_s is None else f"{replica.replay_lag_s:.1f} s",
            help="How far this standby's replay trails the primary (0 when it has replayed all "
            "it received).",
        )
        behind.metric(
            "Epochs behind primary",
            "-" if replica.epochs_behind is None else f"{replica.epochs_behind:,}",
            help="Needs SHAREPRICE_DATABASE_URL (the primary) beside SHAREPRICE_READONLY_URL.",
        )
        replayed.metric(
            "Last replayed commit",
            "-"
            if replica.last_replay_at is None
            else f"{replica.last_replay_at.astimezone(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC",
        )
    if view.version == "v2":
        st.caption(
            "`comprehensive_analytics` is live on **v2** (the normalized tables); "
            "`shareprice views rollback` returns it to v1."
        )
    elif view.version == "v1":
        st.caption(
            "`comprehensive_analytics` is live on **v1** (parses the raw JSON: slow); "
            "`shareprice views use-v2` swaps it once every epoch is normalized."
        )
    else:
        st.caption(f"`comprehensive_analytics`: unexpected state ({view.describe()}).")
    st.progress(
        min(summary.percent / 100.0, 1.0),
        text=f"{summary.normalized_epochs:,} of {summary.raw_epochs:,} raw epochs normalized "
        f"({summary.percent:.1f}%)",
    )

    st.subheader("Current run")
    run = summary.current_run
    if run is None:
        st.info("No backfill has run yet: `shareprice backfill` normalizes the raw epochs.")
    else:
        line = status.run_line(run)
        if run.effective_status == "running":
            st.info(line, icon="⏳")
        elif run.effective_status == "succeeded":
            st.success(line, icon="✅")
        elif run.effective_status == "interrupted":
            st.warning(
                f"{line}. Interrupted: the process stopped without finishing; "
                "`shareprice backfill` resumes where it stopped.",
                icon="⚠️",
            )
        else:
            st.error(f"{line}. {run.error or ''}", icon="❌")
        rate, rows_rate, eta, beat = st.columns(4)
        rate.metric("Epochs/s", f"{run.epochs_per_s:.1f}" if run.epochs_per_s else "-")
        rows_rate.metric("Rows/s", f"{run.rows_per_s:,.0f}" if run.rows_per_s else "-")
        eta.metric("ETA", status.format_duration(run.eta_s))
        beat.metric("Heartbeat age", status.format_duration(run.heartbeat_age_s))

    st.subheader("Coverage")
    st.caption(
        "Raw epochs by state: normalized (current revision), stale (raw document changed since), "
        "failed, pending. Gaps show as non-green stripes. Not normalized: "
        + status.format_ranges(summary.missing_ranges)
    )
    if summary.coverage:
        st.plotly_chart(progress_view.coverage_figure(summary), width="stretch")

    st.subheader("Rows per table")
    st.dataframe(progress_view.tables_table(summary.tables), hide_index=True)

    st.subheader("Failed epochs")
    if summary.failures:
        st.dataframe(progress_view.failures_table(summary.failures), hide_index=True)
    else:
        st.write("None: every epoch a run tried was normalized.")

    st.subheader("Runs")
    st.dataframe(progress_view.runs_table(summary.past_runs), hide_index=True)

    for note in summary.notes:
        st.caption(f"Note: {note}.")
    st.caption(f"Gathered in {summary.query_ms:.0f} ms.")


show_progress()
