"""No credential in the repository; the test password never reaches captured output.

The captured-output half runs as a session hook in conftest.py (every test's captured stdout,
stderr, logs and failure text is searched for the session's password). This file checks the
repository, and proves the hook would notice a leak.
"""

import re
import subprocess
from pathlib import Path

from helpers.database import TEST_PASSWORD, captured_leaks, record_leaks

ROOT = Path(__file__).resolve().parent.parent
# user:password@ inside a URL, where the password is not a mask (***), a <placeholder> or empty.
CREDENTIAL_URL = re.compile(r"://[^\s/:@]+:(?!\*\*\*@|<[a-z-]+>@)[^\s@/]+@")


def tracked_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def test_repository_does_not_contain_the_test_password():
    for path in tracked_files():
        assert TEST_PASSWORD not in path.read_text(errors="ignore"), path


def test_no_credentials_in_shipped_code_or_docs():
    shipped = [p for p in tracked_files() if not p.relative_to(ROOT).parts[0] == "tests"]
    offenders = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in shipped
        for m in CREDENTIAL_URL.finditer(p.read_text(errors="ignore"))
    ]
    assert offenders == []


def test_database_url_of_tests_carries_the_password(db_url):
    # Guard for the leak hook: if tests ran without a password there would be nothing to find.
    assert db_url.password == TEST_PASSWORD


def test_leak_hook_notices_a_leak():
    class Report:
        nodeid = "fake::test"
        when = "call"
        sections = [("Captured stdout call", f"connecting to postgresql://x:{TEST_PASSWORD}@h/d")]
        longrepr = None

    before = list(captured_leaks)
    record_leaks(Report())
    assert captured_leaks == [*before, "fake::test (call)"]
    captured_leaks.pop()  # the fake leak must not fail the session
