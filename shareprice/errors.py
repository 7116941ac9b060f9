"""The errors shareprice raises on purpose, and the one way an error becomes a line of text.

Every expected failure derives from `ShareError`, so the CLI, the pages and the API can tell
"we know what went wrong and said so" (one masked line, exit status 1, a 400/503) from a bug (a
traceback in the server log only). Errors about bad input also stay `ValueError`s where they
were, so callers that caught ValueError keep working.

`error_line` is the one place that turns an exception into the text a user sees: the first line
only (PostgreSQL and psycopg append multi-line context and hints), taken from the driver's error
when SQLAlchemy wraps one, and with every password masked: error messages quote connection URLs.

Imports nothing of shareprice, so every layer, the pure chain parser included, may use it.
"""

from __future__ import annotations

import re

_PASSWORD_IN_TEXT = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)@")
_PASSWORD_PARAM = re.compile(r"(?i)(?P<key>password=)(?P<pw>[^&\s]+)")


class ShareError(Exception):
    """An expected failure with a message fit for a user: shown as one masked line."""


def mask_secrets(text: str) -> str:
    """Mask every password-looking part of free text (URLs in error messages, log lines)."""
    text = _PASSWORD_IN_TEXT.sub(
        lambda m: m.group("scheme") + ("***" if m.group("pw") else "") + "@", text
    )
    return _PASSWORD_PARAM.sub(lambda m: m.group("key") + "***", text)


def error_line(exc: BaseException) -> str:
    """The first line of `exc`'s message (of the driver's error under SQLAlchemy's), masked;
    the exception's class name when it has no message."""
    detail = getattr(exc, "orig", None) or exc
    lines = str(detail).strip().splitlines()
    return mask_secrets(lines[0].strip()) if lines else type(exc).__name__


def describe(exc: BaseException) -> str:
    """What a user is told of `exc`, masked. Our own errors (`ShareError`) are written for users:
    their whole message. Anything else (a bug, a driver error): `ClassName: first line`, where
    the class says more than the message alone."""
    if isinstance(exc, ShareError):
        return mask_secrets(str(exc).strip()) or type(exc).__name__
    return f"{type(exc).__name__}: {error_line(exc)}"
