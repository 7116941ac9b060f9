"""Helpers shared by the CLI modules: engine from options, errors without tracebacks."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.engine import Engine

from shareprice.errors import describe
from shareprice.store import db

url_option = click.option(
    "--url",
    "url",
    envvar=None,
    default=None,
    help="Database URL (default: SHAREPRICE_DATABASE_URL / DATABASE_URL, else the embedded server).",
)


#: Set to 1 for tracebacks instead of one masked line (developers only: tracebacks may show
#: data, never printed by default).
DEBUG_VAR = "SHAREPRICE_DEBUG"


def engine_for(url: str | None) -> Engine:
    """The engine for `url` (or the configured or embedded database), checked reachable: a dead
    server is one masked DatabaseUnavailable line (through friendly_errors), not a traceback
    deep in the first query."""
    engine = db.get_engine(url)
    db.check_available(engine)
    return engine


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn failures into one masked line on stderr and exit status 1.

    A `ShareError` is a failure we expected and described: its message is the line. Anything
    else is a bug or a driver error: the class name goes in front. Passwords never reach the
    terminal either way. `SHAREPRICE_DEBUG=1` re-raises instead, for the full traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as exc:  # the last line of defence: never print a URL with a password
            if os.environ.get(DEBUG_VAR, "").lower() in ("1", "true", "yes"):
                raise
            raise click.ClickException(describe(exc)) from None

    return wrapper
