"""v1 (JSON) vs v2 (normalized) timings."""

import streamlit as st

from shareprice import ui

st.title("v1 (JSON) vs v2 (normalized) timings")

with ui.database_guard():
    engine = ui.engine()
    with engine.connect() as conn:
        epochs = conn.exec_driver_sql("SELECT count(*) FROM epochs").scalar_one()
    if epochs == 0:
        ui.empty_state()
    else:
        st.write(f"{epochs:,} raw epochs stored.")
