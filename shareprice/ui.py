"""The one module of the library that imports streamlit: glue between pages and the library.

Pages stay descriptions of the UI; here live the shared pieces every page needs: the engine
(one per process, shared by all sessions), the data version that keys caches, and the guard that
turns a dead database into a clear message with a retry button instead of a traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import sqlalchemy as sa
import streamlit as st
from sqlalchemy.engine import Engine

from shareprice import config, db


def _secrets_to_env() -> None:
    """Let `.streamlit/secrets.toml` configure connections like environment variables do."""
    try:
        secrets = dict(st.secrets)
    except Exception:  # no secrets file: that is the normal case
        return
    for key in (*config.DATABASE_URL_VARS, config.READONLY_URL_VAR, config.DATA_DIR_VAR):
        value = secrets.get(key)
        if value and not os.environ.get(key):
            os.environ[key] = str(value)


@st.cache_resource(show_spinner=False)
def _engine_for(url_key: str | None) -> Engine:
    return db.get_engine(url_key)


def engine() -> Engine:
    """The dashboard's engine: the read-only URL when configured, else the main one."""
    _secrets_to_env()
    return _engine_for(config.readonly_url() or config.configured_url())


def using_readonly_role() -> bool:
    _secrets_to_env()
    return config.readonly_url() is not None


def connection_notice() -> None:
    """Say in the sidebar which connection the dashboard uses, without the password."""
    if using_readonly_role():
        st.sidebar.caption(f"🔒 Read-only connection: `{masked_url()}`")
    else:
        st.sidebar.warning(
            "Using the main (read-write) database URL. Set `SHAREPRICE_READONLY_URL` to a "
            "`shareprice_reader` URL (`shareprice db roles`) so the dashboard cannot write.",
            icon="🔓",
        )


def masked_url() -> str:
    try:
        return config.mask_url(engine().url)
    except Exception:
        return config.mask_url(config.readonly_url() or config.configured_url() or "embedded")


def data_version(eng: Engine) -> int:
    """Changes whenever a backfill writes; part of every cache key so new data shows at once."""
    with eng.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM data_version_seq"
            ).scalar_one()
        )


@contextlib.contextmanager
def database_guard() -> Iterator[None]:
    """Render a clear 'database unavailable' panel (masked URL, retry) instead of a traceback."""
    try:
        yield
    except (db.DatabaseUnavailable, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        detail = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig else exc
        first_line = (
            str(detail).strip().splitlines()[0] if str(detail).strip() else type(exc).__name__
        )
        st.error(
            f"**Database unavailable** at `{masked_url()}`.\n\n"
            f"{config.mask_secrets(first_line)}\n\n"
            "Start it with `shareprice db up` (embedded) or check the server, then retry.",
            icon="🔌",
        )
        if st.button("Retry", key=f"retry-{id(exc)}"):
            st.rerun()
        st.stop()
    except sa.exc.ProgrammingError as exc:
        if "does not exist" in str(exc.orig):
            st.warning(
                "The database has no shareprice schema yet. Run `shareprice migrate`, then "
                "`shareprice demo` (or `shareprice import FILE...`) and `shareprice backfill`.",
                icon="🧱",
            )
            st.stop()
        raise


def empty_state(what: str = "The database has no epochs yet.") -> None:
    st.info(
        f"{what}\n\n"
        "Fill it with generated demo data: `shareprice demo && shareprice backfill`, or import "
        "real files: `shareprice import PATH... && shareprice backfill`. `make run` does this "
        "by itself on an empty database.",
        icon="📭",
    )
