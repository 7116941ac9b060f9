"""The layers hold, and the tool holding them would notice if they did not.

`make lint` runs lint-imports; this test also plants a forbidden import in a copy of the package
and expects the same contracts to break, so a contract that silently matched nothing (a renamed
package, a typo in pyproject) cannot pass for a kept one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.requirements import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_contracts_are_kept():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "broken" not in done.stdout.lower().split("contracts:")[-1].replace("0 broken", "")


def test_a_planted_violation_breaks_the_contracts(tmp_path: Path):
    shutil.copytree(ROOT / "shareprice", tmp_path / "shareprice")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "shareprice/chain/codec.py").open("a") as codec:
        codec.write("\nimport streamlit  # noqa\nfrom shareprice.store import db  # noqa\n")
    with (tmp_path / "shareprice/store/config.py").open("a") as config:
        config.write("\nfrom shareprice import cli  # noqa\n")
    done = _lint(tmp_path)
    assert done.returncode != 0
    out = done.stdout
    assert (
        "The chain package is pure: it imports nothing of shareprice but its errors BROKEN" in out
    )
    assert "Only shareprice.ui imports streamlit BROKEN" in out
    assert "shareprice.chain.codec -> streamlit" in out
    assert "shareprice.store.config -> shareprice.cli" in out
    assert "No library module imports the CLI or the benchmarks BROKEN" in out
    assert "Packages are layered: a package imports only packages below it BROKEN" in out
