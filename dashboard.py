"""Streamlit entry point: `streamlit run dashboard.py` serves the dashboard and /api on one port.

`streamlit run` finds `app = st.App(...)` in this file (Streamlit 1.67 looks for the assignment
without running the file) and serves it with uvicorn: Streamlit's own routes plus the HTTP API
(shareprice.api) mounted at /api. The App's script is this same file: Streamlit runs it as
`__main__` for every session, where only the navigation below runs; uvicorn imports it as the
module `dashboard`, where only the App is built. Each page is a thin file in pages/.
"""

from pathlib import Path

import streamlit as st

if __name__ == "__main__":
    from shareprice import ui

    st.set_page_config(page_title="shareprice", page_icon="📈", layout="wide")

    navigation = st.navigation(
        [
            st.Page("pages/explorer.py", title="Share price explorer", icon="📈", default=True),
            st.Page("pages/nominators.py", title="Nominators", icon="👥"),
            st.Page("pages/progress.py", title="Migration progress", icon="⏳"),
            st.Page("pages/integrity.py", title="Integrity checks", icon="✅"),
            st.Page("pages/timings.py", title="v1 vs v2 timings", icon="⏱️"),
        ]
    )
    ui.connection_notice()
    navigation.run()
else:
    from shareprice import api, ui

    ui.navigation_is_the_only_router()  # a first visit to /progress must not run pages/ alone
    ui.secrets_to_env()  # the API reads the URLs from the environment, like the CLI
    app = st.App(Path(__file__).resolve(), routes=api.routes(), lifespan=api.lifespan)
