"""Integrity checks: does the normalized data say exactly what the raw epochs say?"""

import os

import streamlit as st

from shareprice import checks, queries, ui

#: The coverage choices of the raw-reading checks, as `shareprice check` names them.
COVERAGE = {
    "Incremental: only epochs changed since they were last verified (default)": "incremental",
    "Full: re-read every epoch (all cores; minutes at seed scale)": "full",
    "Sample: a seeded random sample of epochs": "sample",
}

st.title("Integrity checks")
st.caption(
    "Each check proves one property of the normalized tables against the raw epochs. Same "
    "checks in a terminal (exit status 1 when one fails, for a deploy gate): `shareprice check` "
    "(incremental) or `shareprice check --full`."
)

with ui.database_guard():
    engine = ui.engine()
    raw_epochs = queries.summary(engine).raw_epochs
    if raw_epochs == 0:
        ui.empty_state()
        st.stop()

    with st.form("run_checks"):
        chosen = st.multiselect("Checks", checks.check_names(), default=checks.check_names())
        coverage = st.radio(
            "Raw JSON: which epochs the checks that read it look at",
            list(COVERAGE),
            index=0,
            help="The other checks are SQL over the tables and always cover everything.",
        )
        size_col, seed_col = st.columns(2)
        sample_size = size_col.number_input("Sample size (epochs)", 1, value=200, step=50)
        seed = seed_col.number_input("Seed", 0, value=0, step=1)
        start = st.form_submit_button("Run checks", type="primary")
    known = checks.verification_summary(engine)
    st.caption(
        f"{known.epochs:,} epoch(s) have a recorded verification"
        + (f" (latest {known.latest:%Y-%m-%d %H:%M})" if known.latest else "")
        + ": an incremental run re-reads the raw JSON of the others and of every epoch whose "
        "raw document or normalized rows changed since."
    )

    if start:
        mode = COVERAGE[coverage]
        with st.status("Running integrity checks...", expanded=True) as status_box:
            bar = st.progress(0.0, text="raw JSON epochs read")

            def show_progress(done: int, total: int) -> None:
                bar.progress(
                    min(done / max(total, 1), 1.0), text=f"{done:,}/{total:,} raw JSON epochs read"
                )

            run = checks.run_checks(
                engine,
                only=chosen or None,
                sample=int(sample_size) if mode == "sample" else None,
                seed=int(seed),
                full=mode == "full",
                workers=os.cpu_count() or 1,
                on_start=lambda c: st.write(f"Running `{c.name}`..."),
                on_result=lambda r: st.write(f"`{r.name}`: {r.status} ({r.seconds:.2f} s)"),
                on_progress=show_progress,
            )
            status_box.update(
                label=f"{run.status.upper()} on {run.scope.describe()} in {run.seconds:.1f} s",
                state="error" if run.failed else "complete",
                expanded=False,
            )
        saved = checks.save_run(engine, run, source="dashboard")
        if saved.saved:
            st.success(
                f"Recorded as integrity run {saved.run_id}; "
                f"{len(run.verified):,} epoch(s) recorded as verified.",
                icon="💾",
            )
        else:
            st.info(saved.message, icon="🔒")
        covered = run.scope.to_json()["raw_checked_epochs"]
        st.info(
            f"Covered ({run.scope.mode}): the raw-reading checks read {covered:,} epoch(s), "
            f"{run.scope.describe()}; the other checks read every row."
            + (f" {run.verification_note}." if run.verification_note else ""),
            icon="🔎",
        )
        results, heading = run.results, f"This run: {run.scope.describe()}"
    else:
        latest = checks.load_results(engine)
        if latest is None:
            st.info("No checks have run yet: press **Run checks** (or run `shareprice check`).")
            results, heading = [], ""
        else:
            summary, results = latest
            heading = (
                f"Latest recorded run {summary.run_id} ({summary.started_at:%Y-%m-%d %H:%M}, "
                f"{summary.scope_label})"
            )

    if results:
        st.subheader(heading)
        st.dataframe(checks.results_table(results), hide_index=True)
        for result in results:
            icon = {"pass": "✅", "warn": "⚠️", "fail": "❌"}[result.status]
            with st.expander(f"{icon} {result.name}: {result.count:,} offending"):
                st.write(result.proves)
                st.caption(result.note)
                if result.examples:
                    st.dataframe(result.examples, hide_index=True)

    st.subheader("History")
    past = checks.history(engine)
    if past:
        st.dataframe(checks.history_table(past), hide_index=True)
    else:
        st.write("No recorded runs yet.")
