"""v1 (raw JSON parsed in Python) vs v2 (normalized tables) vs the bare-cursor floor.

The page chooses shapes and options, runs `shareprice timings` in a child process
(`timings.TimingJob`), follows it every second and can stop it; results and the recorded history
come from `shareprice.timings`, the figures from `shareprice.display.timing_charts`.
"""

import streamlit as st

from shareprice import queries, timings, ui
from shareprice.display import explorer_state, timing_charts

#: Session keys: the running (or last) job, its final state, and which job's end was shown.
JOB = "timings_job"
RESULT = "timings_result"
SHOWN = "timings_shown"

st.title("v1 (JSON) vs v2 (normalized) timings")
st.caption(
    "Each request shape answered three ways: **v1** parses the raw documents like the old "
    "`/api/epochs`, **v2** reads the normalized tables, the **floor** is v2's SQL on a bare "
    "cursor. Runs in a separate process with a time limit; you can stop it and keep using the "
    "page. Terminal twins: `shareprice timings` (detailed, recorded) and `shareprice bench queries`."
)

with ui.database_guard():
    engine = ui.engine()
    raw_epochs = queries.summary(engine).raw_epochs
    if raw_epochs == 0:
        ui.empty_state()
        st.stop()

    job = st.session_state.get(JOB)
    with st.form("timing_options"):
        names = st.multiselect(
            "Shapes",
            [*timings.SHAPE_NAMES, timings.CUSTOM_SHAPE],
            default=list(timings.SHAPE_NAMES),
        )
        st.caption(
            "Custom shape: operators and an epoch range (prefilled with the explorer's "
            "selection when you come from it)."
        )
        chosen_ops, chosen_from, chosen_to = timings.custom_prefill(
            st.session_state.get(explorer_state.SESSION_OPERATORS),
            st.session_state.get(explorer_state.SESSION_RANGE),
        )
        ops_col, from_col, to_col, last_col = st.columns(4)
        custom_operators = ops_col.text_input(
            "Operator ids", value=chosen_ops, placeholder="e.g. 0, 1, 2"
        )
        epoch_from = from_col.number_input("From epoch", min_value=0, value=chosen_from, step=1)
        epoch_to = to_col.number_input("To epoch", min_value=0, value=chosen_to, step=1)
        last_epochs = last_col.number_input("Or the last N epochs", min_value=1, value=None)
        runs_col, v1_col, limit_col, timeout_col = st.columns(4)
        runs = runs_col.number_input("Runs (v2, floor)", 1, 50, value=3)
        v1_runs = v1_col.number_input("Runs of v1 (0 = skip)", 0, 20, value=1)
        time_limit = limit_col.number_input("Time limit (s)", 10, 7200, value=900)
        statement_timeout = timeout_col.number_input("Statement timeout (s)", 1, 3600, value=120)
        cold_col, memory_col, explain_col = st.columns(3)
        cold = cold_col.toggle("Cold and warm runs", value=True)
        memory = memory_col.toggle("Python peak memory (tracemalloc)", value=True)
        explain = explain_col.toggle("EXPLAIN (ANALYZE, BUFFERS)", value=True)
        st.caption(
            "At seed scale (3,734 epochs x ~940 operators) one v1 run takes 35-50 s; all four "
            "named shapes with v1 cold and warm, memory and plans take about 20 minutes. Shapes "
            "that finish before a stop or the time limit are kept."
        )
        start = st.form_submit_button("Run", type="primary", disabled=bool(job and job.running))

    if start and names:
        args = timings.job_arguments(
            names=names,
            operators=custom_operators,
            epoch_from=epoch_from,
            epoch_to=epoch_to,
            last_epochs=last_epochs,
            runs=runs,
            v1_runs=v1_runs,
            statement_timeout_s=statement_timeout,
            cold=cold,
            memory=memory,
            explain=explain,
        )
        if job is not None:
            job.cleanup()
        url = engine.url.render_as_string(hide_password=False)
        job = st.session_state[JOB] = timings.TimingJob.start(url, args, float(time_limit))

    @st.fragment(run_every=1 if job is not None and job.running else None)
    def job_panel() -> None:
        current = st.session_state.get(JOB)
        if current is None:
            return
        if current.enforce_time_limit():
            st.warning("The run overran its time limit and was stopped.", icon="⏱️")
        state = timings.job_progress(current.events())
        if current.running:
            st.progress(
                state["fraction"],
                text=timings.progress_text(state, current.elapsed_s, current.time_limit_s),
            )
            if st.button("Stop", icon="⏹️"):
                current.stop()
                st.rerun()
            return
        status, error = timings.job_outcome(current)
        st.session_state[RESULT] = state | {"status": status, "error": error}
        if state["result"] is None:
            # Killed, or failed, before it could record its end: keep what finished.
            timings.mark_finished(engine, state["run_id"], status, error)
        if st.session_state.get(SHOWN) != id(current):
            st.session_state[SHOWN] = id(current)
            st.rerun()  # full rerun: the form's Run button comes back, results render below

    job_panel()

    finished = st.session_state.get(RESULT)
    if finished is not None:
        result = finished["result"] or {}
        shapes = timings.shapes_from_dicts(result.get("shapes") or finished["shapes_done"])
        heading = f"This run ({finished['status']})"
        if finished["not_saved"]:
            st.info(finished["not_saved"], icon="🔒")
        elif finished["run_id"] is not None:
            st.caption(f"Recorded as timing run {finished['run_id']}.")
        cold_method = result.get("cold_method")
    else:
        latest = timings.load_run(engine)
        shapes = latest["shapes"] if latest else []
        heading = (
            f"Latest recorded run {latest['run']['run_id']} ({latest['run']['status']}, "
            f"{latest['run']['started_at']:%Y-%m-%d %H:%M})"
            if latest
            else ""
        )
        cold_method = latest["run"]["cold_method"] if latest else None
        if not latest:
            st.info("No timing runs yet: choose shapes and press **Run**.")

    if heading:
        st.subheader(heading)
    if finished is not None and finished["status"] != "completed":
        st.warning(
            f"The run ended early ({finished['status']}"
            + (f": {finished['error']}" if finished["error"] else "")
            + f"); {len(shapes)} shape(s) finished before that.",
            icon="⏹️",
        )
    if shapes:
        for shape in shapes:
            if shape.equal is True:
                st.success(f"`{shape.name}`: v1 and v2 returned equal results.", icon="🟰")
            elif shape.equal is False:
                st.error(f"`{shape.name}`: v1 and v2 returned DIFFERENT results.", icon="≠")
        st.dataframe(timing_charts.detailed_table(shapes), hide_index=True)
        if cold_method:
            st.caption(f"Cold runs: {cold_method}.")
        st.caption(
            "bytes: the result's size (polars) for v1/v2, its text size on the wire for the "
            "floor. Python peak: tracemalloc during one extra run (Python objects only, not "
            "polars' or libpq's native buffers)."
        )
        st.plotly_chart(timing_charts.timings_figure(shapes), width="stretch")
        for shape in shapes:
            for variant, plan in sorted(shape.plans.items()):
                with st.expander(f"EXPLAIN (ANALYZE, BUFFERS): {shape.name}, {variant}"):
                    st.code(plan, language="text")

    st.subheader("History")
    past = timings.history(engine)
    if past:
        st.plotly_chart(timing_charts.history_figure(past), width="stretch")
        st.dataframe(past, hide_index=True)
    else:
        st.write("No recorded runs yet.")
