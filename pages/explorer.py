"""Share price explorer: operators' share prices, stake and rewards over epochs.

The page state (operators, range, mode, axes, unit, band, totals, live) lives in the URL, so a
view can be shared and reloaded. Every query goes through `shareprice.queries` via `ui.cached`,
keyed on the request and the data version. Live mode: a fragment polls only the data version
every 2 s and reruns the page when it changed, so a new backfill batch is drawn within seconds,
without a reload, and nothing else is queried while nothing changes.
"""

import time
from datetime import UTC, datetime

import streamlit as st

from shareprice import queries, ui
from shareprice.display import charts, explorer_state

started = time.perf_counter()
st.title("Share price explorer")

with ui.page_guard():
    info = queries.summary(ui.engine())  # fresh every run: it carries the data version
    if info.empty:
        ui.empty_state()
        st.stop()
    if info.normalized_epochs == 0 or info.operators == 0 or info.first_epoch is None:
        st.info(
            f"{info.raw_epochs:,} raw epochs are stored, but none is normalized yet. "
            "Run `shareprice backfill` (the *Migration progress* page follows it).",
            icon="⏳",
        )
        st.stop()
    version = info.data_version
    engine = ui.engine()
    operators = ui.cached(queries.operators, version)
    domain = ui.cached(queries.domain_summary, version)
    assert info.first_epoch is not None and info.last_epoch is not None  # checked above
    first: int = info.first_epoch
    last: int = info.last_epoch
    # Derived once per data version and shared by every session (ui.shared): per rerun they
    # cost as much as the queries they are made from, times the sessions rerunning.
    styles = ui.shared(("operator_styles",), version, lambda: charts.styles_from(operators))
    labels = ui.shared(
        ("operator_labels",), version, lambda: explorer_state.operator_labels(operators)
    )
    defaults = ui.shared(
        ("default_operators",), version, lambda: explorer_state.default_operators(operators)
    )

    # --- state: from the link on a session's first run, from the widgets afterwards ---------
    if "ex_ops" not in st.session_state:
        state, notices = explorer_state.state_from_query(
            st.query_params.to_dict(),
            known_operators=labels,
            default_ops=defaults,
            first_epoch=first,
            last_epoch=last,
        )
        for widget_key, value in explorer_state.widget_values(state, first, last).items():
            st.session_state[widget_key] = value
        for notice in notices:
            st.toast(notice, icon="🔗")
            st.warning(notice, icon="🔗")
    if st.session_state.ex_preset is not None:  # a preset follows new epochs as they land
        st.session_state.ex_range = explorer_state.preset_window(
            st.session_state.ex_preset, first, last
        )

    for key in explorer_state.MORE_DISPLAY_KEYS:  # kept while their widgets are not drawn
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]

    def _choose(ids: tuple[int, ...]) -> None:
        st.session_state.ex_ops = list(ids)

    def _preset_changed() -> None:
        if st.session_state.ex_preset is not None:
            st.session_state.ex_range = explorer_state.preset_window(
                st.session_state.ex_preset, first, last
            )

    def _range_changed() -> None:
        st.session_state.ex_preset = None

    # The chart goes out before the widgets: the browser starts loading and drawing it while the
    # sidebar is still arriving. Widget values are already in session state at this point.
    controls = st.container()  # the range presets and slider, above the chart
    state = explorer_state.state_from_widgets(st.session_state)  # type: ignore[arg-type]

    # --- the domain summary and the live status -------------------------------------------
    if domain is not None:  # one HTML block, not 4 metrics + 4 captions (first-view drawing)
        st.html(
            explorer_state.summary_metrics_html(
                explorer_state.summary_metrics(domain, state.unit, datetime.now(UTC))
            )
        )

    @st.fragment(run_every=explorer_state.LIVE_POLL_SECONDS if state.live else None)
    def _live_status() -> None:
        # Only the data version is read here; the page reruns (no reload) when it changed.
        if state.live and ui.data_version(engine) != version:
            st.rerun(scope="app")
        age = ""
        if domain is not None and domain.updated_at is not None:
            seconds = (datetime.now(UTC) - domain.updated_at).total_seconds()
            age = f" · epoch {domain.latest_epoch:,} {domain.updated_source} "
            age += f"{explorer_state.format_age(seconds)} ago"
        dot = "🟢 live" if state.live else "⚪ paused"
        st.caption(f"{dot}{age} · data version {version}")

    _live_status()

    # --- data ---------------------------------------------------------------------------------
    if not state.operators:
        st.info("Pick operators in the sidebar (search by id or name), or press *Largest*.")
    request = explorer_state.request_for(state)
    lo, hi = explorer_state.window_for(state, first, last)
    series = ui.cached(queries.series_v2, version, request)
    band_allowed = explorer_state.band_available(domain.operators if domain else 0)
    band = None
    if state.band and band_allowed and state.mode == "absolute":
        band = ui.cached(queries.band_v2, version, explorer_state.band_request(state))
    dates = ui.cached(queries.epoch_date_labels, version, lo, hi)
    holes = ui.cached(queries.epoch_holes, version, lo, hi)
    totals = ui.cached(queries.epoch_totals, version, lo, hi) if state.totals else None

    # --- charts -------------------------------------------------------------------------------
    # One figure per view, shared by every session drawing that view: building a plotly figure
    # is most of a rerun's CPU (the load bench), and st.plotly_chart only reads it.
    figure = ui.shared_figure(
        ("explorer", state, lo, hi, band_allowed),
        version,
        lambda: charts.explorer_figure(
            series,
            styles,
            mode=state.mode,
            scales={
                "price": state.scale,
                "stake": state.stake_scale,
                "rewards": state.rewards_scale,
            },
            unit=state.unit,
            band=band,
            totals=totals,
            dates=dates,
            holes=holes,
            x_range=(lo, hi),
        ),
    )
    st.plotly_chart(figure, key="ex_chart", config={"displaylogo": False})
    st.caption(explorer_state.describe(state, series, lo, hi, dates_known=bool(dates), holes=holes))

    # --- widgets (placed above the chart and in the sidebar) -----------------------------
    with st.sidebar:
        st.subheader("Operators")
        statuses = st.multiselect(
            "Status",
            explorer_state.statuses(operators),
            key="ex_status",
            help="Limit the operator list to these statuses.",
        )
        st.multiselect(
            f"Operators ({len(labels):,})",
            explorer_state.operator_options(operators, statuses, st.session_state.ex_ops),
            key="ex_ops",
            format_func=lambda o: labels.get(o, str(o)),
            max_selections=explorer_state.MAX_SELECTED,
            placeholder="Search by id or name",
        )
        left, right = st.columns(2)
        left.button(f"Largest {len(defaults)}", on_click=_choose, args=(defaults,), width="stretch")
        right.button("Clear", on_click=_choose, args=((),), width="stretch")
        st.subheader("Display")
        st.segmented_control(
            "Share price",
            list(charts.MODES),
            format_func=lambda m: charts.MODES.get(m, str(m)),
            key="ex_mode",
            required=True,
        )
        # The other display options are drawn only while this is open: widgets inside a closed
        # expander are still sent and drawn, and these seven cost the first view ~0.5 s of the
        # browser's main thread (bench render). Their values stay in session state (above).
        with st.expander(
            "Axes, unit, band, totals, live", key="ex_more", on_change="rerun"
        ) as more:
            if more.open:
                axis_help = (
                    "Auto: plotly's range; Fit: the data's min to max plus 5 %; Log: a log axis "
                    "(Fit where a log axis cannot draw, e.g. changes per epoch)."
                )
                for key, label in (
                    ("ex_scale", "Price axis"),
                    ("ex_stake_scale", "Stake axis"),
                    ("ex_rewards_scale", "Rewards axis"),
                ):
                    st.segmented_control(
                        label,
                        list(charts.SCALES),
                        format_func=lambda s: charts.SCALES.get(s, str(s)),
                        key=key,
                        required=True,
                        help=axis_help,
                    )
                st.segmented_control("Unit", list(charts.UNITS), key="ex_unit", required=True)
                band_help = (
                    "Percentiles (5/25/50/75/95) of every operator's price per epoch, drawn behind "
                    "the selected operators (absolute mode)."
                )
                if not band_allowed:
                    band_help = (
                        f"Needs at least {charts.BAND_MIN_OPERATORS} operators: percentiles of "
                        f"{domain.operators if domain else 0} prices mean nothing."
                    )
                st.toggle(
                    "All-operators band", key="ex_band", disabled=not band_allowed, help=band_help
                )
                if not band_allowed:
                    st.caption(f"Band off: {band_help}")
                st.toggle(
                    "Totals",
                    key="ex_totals",
                    help="Total stake and total rewards of all operators.",
                )
                st.toggle(
                    "Live",
                    key="ex_live",
                    help=f"Check for new data every {explorer_state.LIVE_POLL_SECONDS} s and redraw "
                    "when there is some.",
                )
        # (the connection notice is in the sidebar already: dashboard.py shows it on every page)

    presets, slider = controls.columns([3, 5], vertical_alignment="bottom")
    presets.segmented_control(
        "Range (epochs)",
        list(explorer_state.RANGE_PRESETS),
        format_func=lambda p: explorer_state.PRESET_LABELS.get(p, str(p)),
        key="ex_preset",
        on_change=_preset_changed,
    )
    if last > first:
        slider.slider("Epochs", first, last, key="ex_range", on_change=_range_changed)

    st.query_params.from_dict(explorer_state.to_query(state))

    # --- operators: the selected ones as a light table, all of them on demand -------------
    st.subheader("Selected operators")
    selected = operators.filter(operators["operator_id"].is_in(list(state.operators)))
    if selected.height:
        st.html(explorer_state.operator_cards_html(selected, state.unit))
        # The same cards as a table, built and sent only when asked for: a table hidden in an
        # expander is still sent and drawn with every first view (and loads the table code).
        if st.toggle("As a table", key="ex_cards_table"):
            st.table(
                explorer_state.operator_cards(selected, state.unit),
                border="horizontal",
                hide_index=True,
            )
    if st.toggle(f"Show all {operators.height:,} operators", key="ex_all_table"):
        percent = st.column_config.NumberColumn(format="%.6f%%")
        st.dataframe(
            explorer_state.operator_table(operators, state.unit),
            hide_index=True,
            height=420,
            column_config={
                "Share price": st.column_config.NumberColumn(format="%.12f"),
                "Stake (AI3)": st.column_config.NumberColumn(format="%,.4f"),
                "Nominators": st.column_config.LinkColumn(display_text="nominators"),
                **{f"{d}d {k} %": percent for d in (1, 7, 30) for k in ("yield", "APY")},
            },
        )

    # --- downloads: exactly the points drawn above, built only when clicked -----------------
    def _shown():
        return charts.shown_frame(series, styles, mode=state.mode, unit=state.unit, dates=dates)

    def _wide_csv() -> str:
        return explorer_state.wide_frame(
            series, queries.epoch_totals(engine, lo, hi), queries.epoch_blocks(engine, lo, hi)
        ).write_csv()

    # Drawn only while the popover is open, like the display options: three buttons in columns
    # cost the first view more than the one button that opens them (bench render).
    with st.popover(
        "Download", icon=":material/download:", key="ex_downloads", on_change="rerun"
    ) as menu:
        if menu.open:
            name = explorer_state.download_name(state, lo, hi)
            st.download_button(
                "Download CSV",
                lambda: _shown().write_csv(),
                f"{name}.csv",
                "text/csv",
                width="stretch",
                on_click="ignore",
                help="The points drawn above, one row per operator and epoch.",
            )
            st.download_button(
                "Wide CSV (raw)",
                _wide_csv,
                explorer_state.wide_csv_name(last),
                "text/csv",
                width="stretch",
                on_click="ignore",
                help="epoch,startBlock,endBlock,totalStake,stake<k>…,rewards<k>… in raw Shannons, "
                "one row per epoch shown.",
            )
            st.download_button(
                "Download Parquet",
                lambda: explorer_state.parquet_bytes(_shown()),
                f"{name}.parquet",
                "application/vnd.apache.parquet",
                width="stretch",
                on_click="ignore",
                help="The points drawn above; exact integers as Decimal(38, 0).",
            )
    st.caption(
        f"Server time {1000 * (time.perf_counter() - started):.0f} ms · data version {version}"
    )
