"""The checks' vocabulary: what a check is, what it returns, which epochs it covers.

Kept apart from the checks themselves so the runner, the report and the CLI can talk about
checks (names, results, scopes) without importing forty SQL statements, and so a new check is
one decorated function in `definitions.py` and nothing else.

A check proves one property, returns pass / warn / fail with the number of offending rows and up
to MAX_EXAMPLES examples; the runner adds its name, timing and what it proves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.engine import Connection

Status = Literal["pass", "warn", "fail"]
STATUS_ORDER: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}
MAX_EXAMPLES = 20


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the runner adds name, timing and what it proves."""

    status: Status
    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class CheckResult:
    name: str
    proves: str
    status: Status
    count: int
    examples: list[dict[str, Any]]
    seconds: float
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "count": self.count,
            "examples": self.examples,
            "seconds": round(self.seconds, 4),
            "proves": self.proves,
            "note": self.note,
        }


@dataclass(frozen=True)
class Scope:
    """Which epochs the raw-reading checks look at."""

    raw_epochs: int
    normalized_epochs: int
    #: None: all normalized epochs. Otherwise the seeded sample, sorted.
    sample: list[int] | None
    sample_size: int | None
    seed: int

    def describe(self) -> str:
        if self.sample is None:
            return f"all {self.normalized_epochs:,} normalized epochs"
        return (
            f"a seeded sample of {len(self.sample):,} of {self.normalized_epochs:,} "
            f"normalized epochs (seed {self.seed})"
        )

    @property
    def params(self) -> dict[str, Any]:
        """Bind `:sample` (NULL = all) for the SQL filter `epoch_in_scope`."""
        return {"sample": self.sample}


# Used by raw-reading checks: `(:sample IS NULL OR e.epoch = ANY(:sample))`.
EPOCH_IN_SCOPE = "(CAST(:sample AS integer[]) IS NULL OR {col} = ANY(CAST(:sample AS integer[])))"


@dataclass(frozen=True)
class Check:
    name: str
    proves: str
    func: Callable[[Connection, Scope], Outcome]
    reads_raw: bool


CHECKS: list[Check] = []


def check(name: str, proves: str, reads_raw: bool = False):
    def register(func: Callable[[Connection, Scope], Outcome]):
        CHECKS.append(Check(name, proves, func, reads_raw))
        return func

    return register


def check_names() -> list[str]:
    return [c.name for c in CHECKS]


def select_checks(only: Sequence[str] | None) -> list[Check]:
    if not only:
        return list(CHECKS)
    unknown = [n for n in only if n not in check_names()]
    if unknown:
        raise ValueError(
            f"unknown check(s) {', '.join(unknown)}; known: {', '.join(check_names())}"
        )
    return [c for c in CHECKS if c.name in set(only)]
