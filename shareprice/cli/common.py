"""Helpers shared by the CLI modules: engine from options, errors without tracebacks."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.engine import Engine

from shareprice.store import config, db

url_option = click.option(
    "--url",
    "url",
    envvar=None,
    default=None,
    help="Database URL (default: SHAREPRICE_DATABASE_URL / DATABASE_URL, else the embedded server).",
)


def engine_for(url: str | None) -> Engine:
    try:
        engine = db.get_engine(url)
        db.check_available(engine)
    except db.DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    return engine


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one masked line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except db.DatabaseUnavailable as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # the last line of defence: never print a URL with a password
            if "--debug" in sys.argv:
                raise
            raise click.ClickException(
                config.mask_secrets(f"{type(exc).__name__}: {exc}")
            ) from None

    return wrapper
