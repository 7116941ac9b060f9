"""One exception base and one masked error line, for every layer.

A user (terminal, page, API client) is told what went wrong in one line without a password;
SHAREPRICE_DEBUG=1 is the developer's way to the traceback.
"""

from __future__ import annotations

import inspect
import os
import pkgutil
import subprocess
import sys
from importlib import import_module

import psycopg
import pytest
import sqlalchemy as sa

import shareprice
from shareprice.errors import ShareError, describe, error_line, mask_secrets

SECRET_URL = "postgresql://u:hunter2-secret@127.0.0.1:1/x"


def test_error_line_is_the_first_line_masked():
    exc = RuntimeError(f"could not connect to {SECRET_URL}\nDETAIL: more\nHINT: even more")
    assert error_line(exc) == "could not connect to postgresql://u:***@127.0.0.1:1/x"
    assert error_line(RuntimeError("")) == "RuntimeError"
    assert mask_secrets("host=db password=s3cret user=x") == "host=db password=*** user=x"


def test_error_line_reads_the_driver_error_under_sqlalchemys_wrapper():
    engine = sa.create_engine(SECRET_URL.replace("postgresql", "postgresql+psycopg"))
    with pytest.raises(sa.exc.OperationalError) as caught:
        engine.connect()
    line = error_line(caught.value)
    assert "hunter2-secret" not in line and "\n" not in line
    assert "[SQL" not in line  # SQLAlchemy's own decoration is not the driver's message
    assert line == error_line(caught.value.orig)


def test_describe_names_foreign_errors_and_keeps_our_whole_message():
    assert describe(KeyError("x")) == "KeyError: 'x'"
    ours = ShareError(f"swap refused at {SECRET_URL}\nrun `shareprice views status`")
    assert describe(ours) == (
        "swap refused at postgresql://u:***@127.0.0.1:1/x\nrun `shareprice views status`"
    )


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(shareprice.__path__, "shareprice."):
        if info.name.endswith("bare_plotly_page") or info.name.endswith("__main__"):
            continue
        module = import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not obj.__name__.startswith("_")
            ):
                found.append(obj)
    return found


def test_every_public_exception_derives_from_share_error():
    classes = _exception_classes()
    assert len(classes) >= 10
    assert [c.__qualname__ for c in classes if not issubclass(c, ShareError)] == []
    parse_error = import_module("shareprice.chain.parser").ParseError
    assert issubclass(parse_error, ValueError)  # callers that caught ValueError still do


def _shareprice(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    environment.pop("SHAREPRICE_DEBUG", None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "shareprice", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_cli_prints_one_masked_line_and_debug_prints_the_traceback(tmp_path):
    missing = str(tmp_path / "nothing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    plain = _shareprice("import", str(bad), SHAREPRICE_DATABASE_URL=SECRET_URL)
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr and "hunter2-secret" not in plain.stderr
    assert plain.stderr.strip().startswith("Error:")
    debug = _shareprice(
        "import", str(bad), SHAREPRICE_DATABASE_URL=SECRET_URL, SHAREPRICE_DEBUG="1"
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert os.path.exists(missing) is False
    assert psycopg is not None
