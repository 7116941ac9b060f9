"""Helpers shared by the CLI modules: engine from options, errors without tracebacks."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

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


class StatusLine:
    """One line of progress on stderr: redrawn in place on a terminal, else written as a new
    line every few seconds so logs stay readable. What the line says is the caller's."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True, width: int = 100):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.width = width
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last = 0.0
        self.drawn = False

    def due(self, *, final: bool = False, after_s: float = 0.0) -> bool:
        """Whether to draw now: not before `after_s`, then at most every 0.2 s on a terminal
        and every 5 s in a log, and always for the `final` state."""
        if not self.enabled:
            return False
        now = time.monotonic()
        if now - self.started < after_s:
            return False
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            return False
        self.last = now
        return True

    @property
    def elapsed_s(self) -> float:
        return max(time.monotonic() - self.started, 1e-6)

    def show(self, line: str) -> None:
        if self.tty:
            self.stream.write("\r" + line[: self.width + 10].ljust(self.width))
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def bar(done: int, total: int, width: int = 24) -> str:
    """`[#####.....]` for done of total."""
    filled = int(width * done / max(total, 1))
    return f"[{'#' * filled}{'.' * (width - filled)}]"
