"""What the user sees, built without streamlit: every plotly figure and table builder, and the
explorer's URL and widget state.

Pure functions from frames to figures and from query strings to validated state, so every rule of
presentation is tested without a browser. `shareprice.ui` and the pages put them on screen.

May import: shareprice.queries and shareprice.timings (their public names), shareprice.chain,
polars, plotly.
"""
