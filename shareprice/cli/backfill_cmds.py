"""(placeholder: commands land with their issue)"""

from __future__ import annotations

import click

commands: list[click.Command] = []
bench_commands: list[click.Command] = []
