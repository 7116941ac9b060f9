"""Nominators: what a nominator's stake with each operator is worth, exactly, and over epochs;
per operator, how many nominators it has, the largest holders and their concentration.

Find a nominator by SS58 address or 0x hex (typed, or `?address=` in the URL, which the holders
table and other pages link to); pick an operator (`?operator=`). Every query goes through
`shareprice.queries` via `ui.cached`, keyed on the data version; the figures and texts come
from `shareprice.display.nominator_view`.
"""

import time

import streamlit as st

from shareprice import queries, ui
from shareprice.display import charts, nominator_view

started = time.perf_counter()
st.title("Nominators")

with ui.page_guard():
    info = queries.summary(ui.engine())
    if info.empty:
        ui.empty_state()
        st.stop()
    version = info.data_version
    latest = ui.cached(queries.latest_positions_epoch, version)
    if latest is None:
        st.info(
            "No nominator positions are stored yet. They are read from Format A storage dumps "
            "(`deposits`, `withdrawals`, `depositOnHold`) by `shareprice backfill`.",
            icon="📭",
        )
        st.stop()
    operators = ui.cached(queries.operators, version)
    names = dict(zip(operators["operator_id"], operators["name"], strict=True))
    colors = dict(zip(operators["operator_id"], operators["color"], strict=True))

    if "nom_address" not in st.session_state:  # the link's state on a session's first run
        st.session_state.nom_address = st.query_params.get("address", "")
        wanted = st.query_params.get("operator", "")
        st.session_state.nom_operator = int(wanted) if wanted.isdigit() else None
    unit = st.segmented_control(
        "Unit", list(charts.UNITS), key="nom_unit", default="AI3", required=True
    )
    address = st.text_input(
        "Nominator address", key="nom_address", placeholder="su... (SS58) or 0x + 64 hex digits"
    ).strip()
    st.caption(f"Positions at epoch {latest.epoch:,}")

    # --- one nominator -----------------------------------------------------------------------
    if address:
        account: queries.Account | None = None
        try:
            account = queries.resolve_address(address)
        except queries.AddressError as exc:
            st.error(str(exc), icon="🔎")
        if account is not None:
            st.query_params["address"] = account.ss58
            view = ui.cached(queries.nominator_positions, version, account.account)
            st.subheader(f"Nominator {account.ss58}")
            st.caption(f"account {account.hex}")
            if not view.known:
                st.info("No position of this address is stored.", icon="🔎")
            else:
                if view.positions:
                    st.html(nominator_view.position_cards_html(view, unit, names, colors))
                else:
                    st.info(f"No open position at epoch {view.epoch:,}.", icon="ℹ️")
                history = ui.cached(queries.nominator_history, version, account.account)
                events = ui.cached(queries.nominator_events, version, account.account)
                if history.height:
                    # one figure per nominator, unit and data version for every session
                    st.plotly_chart(
                        ui.shared_figure(
                            ("nominator_value", account.account, unit),
                            version,
                            lambda: nominator_view.value_figure(
                                history, events, unit, names, colors
                            ),
                        ),
                        key="nom_value_chart",
                    )
                    st.caption(
                        "Value = effective shares x share price per epoch; gaps are epochs "
                        "without position data or without a position. ▲ deposit, ▼ withdrawal."
                    )
    else:
        st.query_params.pop("address", None)

    # --- one operator ------------------------------------------------------------------------
    st.subheader("Per operator")
    ids = operators["operator_id"].to_list()
    if st.session_state.nom_operator not in ids:
        st.session_state.nom_operator = ids[0] if ids else None
    operator_id = st.selectbox(
        "Operator",
        ids,
        key="nom_operator",
        format_func=lambda o: f"#{o} {names.get(o, '')}",
    )
    if operator_id is not None:
        st.query_params["operator"] = str(operator_id)
        holders = ui.cached(queries.operator_holders, version, operator_id, 50)
        counts = ui.cached(queries.nominator_counts, version, operator_id)
        if holders.count == 0 and counts.height == 0:
            st.info(f"Operator #{operator_id} has no nominator positions stored.", icon="ℹ️")
        else:
            st.markdown(nominator_view.concentration_text(holders))
            if counts.height:
                st.plotly_chart(
                    ui.shared_figure(
                        ("nominator_counts", operator_id),
                        version,
                        lambda: nominator_view.counts_figure(counts),
                    ),
                    key="nom_counts_chart",
                )
            st.html(nominator_view.holders_table_html(nominator_view.holders_table(holders, unit)))
    st.caption(
        f"Server time {1000 * (time.perf_counter() - started):.0f} ms · data version {version}"
    )
