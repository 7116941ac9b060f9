"""The README's CLI reference is the CLI's own help; regenerate with `python -m shareprice.cli.reference`."""

from pathlib import Path

from shareprice.cli import reference

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_cli_reference_matches_the_cli():
    text = README.read_text()
    assert reference.render_readme(text) == text, (
        "README.md's CLI reference is stale: run `python -m shareprice.cli.reference` and commit"
    )


def test_reference_lists_every_command():
    text = reference.cli_reference()
    for command in ("backfill", "bench load", "check", "db roles", "demo", "import", "migrate"):
        assert f"`shareprice {command}`" in text


def test_quick_start_is_exactly_the_two_make_commands():
    quick_start = README.read_text().split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [
        line.split("#")[0].strip() for line in quick_start.splitlines() if line.startswith("make ")
    ]
    assert commands == ["make run", "make test"]
