"""shareprice: operator share prices on Autonomys domain staking.

The library holds everything that is not UI: configuration, the database, the parsers, the
backfill and the query layer. Only `shareprice.ui` imports streamlit.
"""

__version__ = "0.1.0"
