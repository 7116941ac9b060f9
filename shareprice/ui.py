"""The one module of the library that imports streamlit: glue between pages and the library.

Pages stay descriptions of the UI; here live the shared pieces every page needs: the engine
(one per process, shared by all sessions), the data version that keys caches, and the guard that
turns a dead database into a clear message with a retry button instead of a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import TypeVar, TypeVarTuple, cast

# pandas before any page runs: plotly's validators take sys.modules["pandas"] when it is there,
# without the import lock, so two sessions' first runs at once (a fresh server, the load bench)
# could see a half-imported pandas ("partially initialized module 'pandas' has no attribute
# 'Series'"). Pages import this module first; its import completes pandas for every thread.
import pandas  # noqa: F401
import plotly.graph_objects as go
import psycopg
import sqlalchemy as sa
import streamlit as st
from sqlalchemy.engine import Engine

from shareprice.errors import describe, error_line
from shareprice.store import config, db

Args = TypeVarTuple("Args")
Result = TypeVar("Result")


_no_secrets_file = False


def secrets_to_env() -> None:
    """Let `.streamlit/secrets.toml` configure connections like environment variables do.

    Called by every page helper, and by dashboard.py before it builds the HTTP API, so the API
    reads the same (read-only) URL as the pages even before any page has run."""
    global _no_secrets_file
    if _no_secrets_file:
        return
    try:
        secrets = dict(st.secrets)
    except Exception:  # no secrets file: that is the normal case
        # Remember it: st.secrets looks for the files again on every access while there are
        # none, under one process-wide lock, and this runs a dozen times per rerun. With 50
        # sessions that lock was where their reruns queued (the load bench's thread dumps).
        _no_secrets_file = True
        return
    for key in (*config.DATABASE_URL_VARS, config.READONLY_URL_VAR, config.DATA_DIR_VAR):
        value = secrets.get(key)
        if value and not os.environ.get(key):
            os.environ[key] = str(value)


def navigation_is_the_only_router() -> None:
    """Tell Streamlit to route every URL through dashboard.py's `st.navigation`, never `pages/`.

    Streamlit decides once per process whether the app is a "pages directory" app: `pages/`
    exists beside dashboard.py, so it starts out as one, and it changes its mind only when
    `st.navigation` first runs. A fresh server whose first visitor opens `/nominators` (a link
    someone shared) ran pages/nominators.py directly: no connection notice, a sidebar of file
    names, and every later session in that process too. dashboard.py calls this while the server
    imports it, before the first session exists. The flag is a public class attribute."""
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False


@st.cache_resource(show_spinner=False)
def _engine_for(url_key: str | None) -> Engine:
    return db.get_engine(url_key)


def engine() -> Engine:
    """The dashboard's engine: the read-only URL when configured, else the main one."""
    secrets_to_env()
    return _engine_for(config.readonly_url() or config.configured_url())


def primary_engine() -> Engine | None:
    """The main database when the dashboard reads a separate read-only URL (maybe a standby):
    what `queries.replica_status` compares against to say how many epochs the standby is behind.
    None when only one URL is configured."""
    secrets_to_env()
    readonly, main = config.readonly_url(), config.configured_url()
    if readonly is None or main is None or readonly == main:
        return None
    return _engine_for(main)


def using_readonly_role() -> bool:
    secrets_to_env()
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
    from shareprice import queries

    return queries.data_version(eng)


def _url_key() -> str | None:
    secrets_to_env()
    return config.readonly_url() or config.configured_url()


# cache_resource, not cache_data: cache_data pickles each result and unpickles a fresh copy on
# every call, so 50 sessions rerunning hold 50 copies of the same frames and spend their CPU
# unpickling them (the load bench found it). Results here are polars frames (immutable: every
# operation returns a new frame) and plain read-only values, so one shared object serves every
# session. Concurrent first calls for one key wait for a single computation.
@st.cache_resource(show_spinner=False, max_entries=256, ttl=6 * 3600)
def _cached_call(
    name: str, url_key: str | None, version: int, args: tuple, _query: Callable[..., object]
) -> object:
    # `name` (the query's qualified name) is the cache key; `_query` itself is not hashed.
    return _query(_engine_for(url_key), *args)


def cached(query: Callable[[Engine, *Args], Result], version: int, *args: *Args) -> Result:
    """`query(engine, *args)`, cached per query, database, data version and arguments.

    Called with the query function itself (`ui.cached(queries.series_v2, version, request)`), so
    grep and the type checker see every caller. Shared by all sessions: the first viewer after a
    backfill batch pays for the query, the others read the cache; a new data version (any
    backfill write) makes every entry stale. The result is the cached object itself, shared by
    every session: treat it as read-only (never mutate a returned frame or dict in place).
    """
    name = f"{query.__module__}.{query.__qualname__}"
    return cast(Result, _cached_call(name, _url_key(), version, args, query))


@st.cache_resource(show_spinner=False, max_entries=128, ttl=6 * 3600)
def _shared_call(
    key: tuple, url_key: str | None, version: int, _build: Callable[[], object]
) -> object:
    return _build()


def shared(key: tuple, version: int, build: Callable[[], Result]) -> Result:
    """`build()`, computed once per process for an equal `key` and data version, then shared by
    every session (read-only, like `cached`): for what a page derives from cached data the
    same way for every viewer, such as the explorer's figure for one view. Building a plotly
    figure costs far more CPU than reading the cached frames it is drawn from, and on two cores
    every session's rerun waits for the others' (the load bench's finding). `key` must name
    everything `build` depends on besides the database and its data version; `build` itself
    is not hashed.
    """
    return cast(Result, _shared_call(key, _url_key(), version, build))


class _PreparedFigure(go.Figure):
    """A figure whose dict form is made once. st.plotly_chart calls `to_dict()` on every run,
    which deep-copies every trace and base64-encodes every array: a third of a rerun's CPU for
    the explorer's chart. A shared figure is never changed, so its dict can be made once and
    handed out as is (Streamlit only serializes it)."""

    def __init__(self, figure: go.Figure) -> None:
        super().__init__(figure)
        self._prepared = super().to_dict()

    def to_dict(self) -> dict:
        return self._prepared


def shared_figure(key: tuple, version: int, build: Callable[[], go.Figure]) -> go.Figure:
    """`shared` for a plotly figure: one per key and data version for every session, with its
    dict form made once (see _PreparedFigure). Draw it with st.plotly_chart; never change it."""
    return shared(("figure", *key), version, lambda: _PreparedFigure(build()))


@contextlib.contextmanager
def database_guard() -> Iterator[None]:
    """Render a clear 'database unavailable' panel (masked URL, retry) instead of a traceback."""
    try:
        yield
    except (
        db.DatabaseUnavailable,
        sa.exc.OperationalError,
        sa.exc.InterfaceError,
        psycopg.OperationalError,  # raw psycopg use (queries' COPY): no SQLAlchemy wrapper
        psycopg.InterfaceError,
    ) as exc:
        st.error(
            f"**Database unavailable** at `{masked_url()}`.\n\n"
            f"{error_line(exc)}\n\n"
            "Start it with `shareprice db up` (embedded) or check the server, then retry.",
            icon="🔌",
        )
        if st.button("Retry", key=f"retry-{id(exc)}"):
            st.rerun()
        st.stop()
    except (sa.exc.ProgrammingError, psycopg.errors.UndefinedTable) as exc:
        if "does not exist" in str(getattr(exc, "orig", None) or exc):
            st.warning(
                "The database has no shareprice schema yet. Run `shareprice migrate`, then "
                "`shareprice demo` (or `shareprice import FILE...`) and `shareprice backfill`.",
                icon="🧱",
            )
            st.stop()
        raise


@contextlib.contextmanager
def page_guard() -> Iterator[None]:
    """database_guard, plus a last line of defence: an unexpected error becomes one masked line
    on the page (and a full traceback in the server log), never a traceback in the browser."""
    try:
        with database_guard():
            yield
    except Exception as exc:
        logging.getLogger("shareprice.ui").exception("page failed")
        st.error(
            f"Something went wrong while drawing this page: {describe(exc)[:300]}",
            icon="⚠️",
        )
        st.stop()


def empty_state(what: str = "The database has no epochs yet.") -> None:
    st.info(
        f"{what}\n\n"
        "Fill it with generated demo data: `shareprice demo && shareprice backfill`, or import "
        "real files: `shareprice import PATH... && shareprice backfill`. `make run` does this "
        "by itself on an empty database.",
        icon="📭",
    )
