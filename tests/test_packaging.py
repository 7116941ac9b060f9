"""The wheel works as well as the editable install: built, installed into a fresh venv that sees
none of the checkout, and used from outside it on a fresh embedded database.

Also: every subpackage is listed in pyproject (a forgotten one is missing from the wheel, and
`shareprice --help` dies with ModuleNotFoundError), and the migrations travel inside the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from helpers.requirements import ROOT


def _packages_on_disk() -> set[str]:
    found = {"shareprice"}
    for init in (ROOT / "shareprice").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found | {"shareprice.sql"}


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    assert listed == _packages_on_disk()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True, cwd=out,
    )  # fmt: skip
    (built,) = out.glob("shareprice-*.whl")
    return built


def test_wheel_holds_every_package_and_the_migrations(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    for package in _packages_on_disk() - {"shareprice.sql"}:
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("shareprice/sql/"))
    assert shipped == sorted(p.name for p in (ROOT / "sql").glob("*.sql"))


def test_installed_wheel_runs_from_outside_the_checkout(wheel: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    # The project's dependencies from this environment, the project itself only from the wheel:
    # a plain path entry (not a site dir), so the editable install's finder is not loaded.
    site = Path(subprocess.check_output(
        [str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True,
    ).strip())  # fmt: skip
    (site / "shareprice-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip

    work = tmp_path / "elsewhere"
    work.mkdir()
    data_dir = Path("/var/tmp") / f"shareprice-wheel-{os.getpid()}" if os.getuid() == 0 else None
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SHAREPRICE_") and k not in ("DATABASE_URL", "PYTHONPATH")
    }
    env["SHAREPRICE_DATA_DIR"] = str(data_dir or tmp_path / "pgdata")
    env["LC_ALL"] = "C"

    def shareprice(*args: str) -> str:
        done = subprocess.run(
            [str(bin_dir / "shareprice"), *args], cwd=work, env=env, capture_output=True,
            text=True, timeout=240,
        )  # fmt: skip
        assert done.returncode == 0, f"shareprice {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    located = subprocess.check_output(
        [str(bin_dir / "python"), "-c", "import shareprice; print(shareprice.__file__)"],
        cwd=work, env=env, text=True,
    )  # fmt: skip
    assert located.startswith(str(venv)), f"shareprice imported from {located}, not the wheel"
    try:
        assert "Usage: shareprice" in shareprice("--help")
        migrated = shareprice("migrate")
        assert "001_epochs.sql" in migrated
        shareprice("demo", "--epochs", "60", "--operators", "4")
        shareprice("backfill", "--quiet")
        # Exit status 0 (asserted by shareprice()) is check's verdict: 1 when any check fails.
        assert "0 failed" in shareprice("check", "--no-save")
    finally:
        subprocess.run([str(bin_dir / "shareprice"), "db", "down"], cwd=work, env=env,
                       capture_output=True, timeout=60)  # fmt: skip
        if data_dir is not None:
            subprocess.run(["rm", "-rf", str(data_dir)], check=False)
