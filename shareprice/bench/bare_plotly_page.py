"""The yardstick for the explorer's render time: a bare Streamlit page with one plotly chart of
4 lines x 3,700 points (what the old dashboard drew). `?gl=1` draws it with Scattergl instead.

Run by `shareprice bench render`; not part of the dashboard.
"""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

st.title("Bare plotly page")
gl = st.query_params.get("gl") == "1"
rng = np.random.default_rng(0)
epochs = np.arange(3700)
trace = go.Scattergl if gl else go.Scatter
fig = go.Figure()
for i in range(4):
    prices = 1.0 + np.cumsum(rng.random(3700) * 1e-6) * (i + 1)
    fig.add_trace(trace(x=epochs, y=prices, mode="lines", name=f"operator {i}"))
fig.update_layout(height=520)
st.plotly_chart(fig)
st.caption("bare page drawn")
