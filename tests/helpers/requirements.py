"""Things a test needs from the machine: a skip on a developer's laptop, a failure in CI.

Under `CI=true` nothing is skipped: a suite that goes green because the real samples or Chromium
were missing has tested nothing that matters, so a missing requirement fails the run with a
message naming what is missing and how `.ci/run` provides it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data" / "autonomys"
CHROMIUM = Path("/usr/bin/chromium")
PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(present: bool, what: str, *, module: bool = False) -> None:
    """Skip (outside CI) or fail (under CI=true) when `present` is false."""
    if present:
        return
    if in_ci():
        pytest.fail(f"CI=true and {what}: nothing may be skipped in CI", pytrace=False)
    pytest.skip(what, allow_module_level=module)


def require_shared_data(*, module: bool = False) -> Path:
    require(
        SHARED_DATA.is_dir(),
        f"the real samples are missing at {SHARED_DATA} (../shared beside the checkout)",
        module=module,
    )
    return SHARED_DATA


def require_chromium() -> None:
    require(CHROMIUM.exists(), f"system Chromium is missing at {CHROMIUM} (apt install chromium)")


def require_pg15() -> Path:
    require(
        (PG15_BIN / "pg_ctl").exists(),
        f"Debian's PostgreSQL 15 is missing at {PG15_BIN} (apt install postgresql-15)",
    )
    return PG15_BIN
