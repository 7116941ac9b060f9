"""Integrity checks: does the normalized data say exactly what the raw epochs say?"""

import streamlit as st

from shareprice import checks, queries, ui

st.title("Integrity checks")
st.caption(
    "Each check proves one property of the normalized tables against the raw epochs. Same "
    "checks in a terminal (exit status 1 when one fails, for a deploy gate): `shareprice check`."
)

with ui.database_guard():
    engine = ui.engine()
    raw_epochs = queries.summary(engine).raw_epochs
    if raw_epochs == 0:
        ui.empty_state()
        st.stop()

    with st.form("run_checks"):
        chosen = st.multiselect("Checks", checks.check_names(), default=checks.check_names())
        sampled = st.toggle(
            "Sample the checks that read raw JSON (faster on big data sets)",
            value=raw_epochs > 500,
        )
        size_col, seed_col = st.columns(2)
        sample_size = size_col.number_input("Sample size (epochs)", 1, value=200, step=50)
        seed = seed_col.number_input("Seed", 0, value=0, step=1)
        start = st.form_submit_button("Run checks", type="primary")

    if start:
        with st.status("Running integrity checks...", expanded=True) as status_box:
            run = checks.run_checks(
                engine,
                only=chosen or None,
                sample=int(sample_size) if sampled else None,
                seed=int(seed),
                on_start=lambda c: st.write(f"Running `{c.name}`..."),
                on_result=lambda r: st.write(f"`{r.name}`: {r.status} ({r.seconds:.2f} s)"),
            )
            status_box.update(
                label=f"{run.status.upper()} on {run.scope.describe()} in {run.seconds:.1f} s",
                state="error" if run.failed else "complete",
                expanded=False,
            )
        saved = checks.save_run(engine, run, source="dashboard")
        if saved.saved:
            st.success(f"Recorded as integrity run {saved.run_id}.", icon="💾")
        else:
            st.info(saved.message, icon="🔒")
        results, heading = run.results, f"This run: {run.scope.describe()}"
    else:
        latest = checks.load_results(engine)
        if latest is None:
            st.info("No checks have run yet: press **Run checks** (or run `shareprice check`).")
            results, heading = [], ""
        else:
            summary, results = latest
            heading = f"Latest recorded run {summary.run_id} ({summary.started_at:%Y-%m-%d %H:%M})"

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
