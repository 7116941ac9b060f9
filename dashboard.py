"""Streamlit entry point: `streamlit run dashboard.py`.

Only navigation lives here; each page is a thin file in pages/.
"""

import streamlit as st

from shareprice import ui

st.set_page_config(page_title="shareprice", page_icon="📈", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/explorer.py", title="Share price explorer", icon="📈", default=True),
        st.Page("pages/progress.py", title="Migration progress", icon="⏳"),
        st.Page("pages/integrity.py", title="Integrity checks", icon="✅"),
        st.Page("pages/timings.py", title="v1 vs v2 timings", icon="⏱️"),
    ]
)
ui.connection_notice()
navigation.run()
