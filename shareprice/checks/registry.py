"""The checks' vocabulary: what a check is, what it returns, which epochs it covers.

Kept apart from the checks themselves so the runner, the report and the CLI can talk about
checks (names, results, scopes) without importing forty SQL statements, and so a new check is
one decorated function in `definitions.py` and nothing else.

A check proves one property, returns pass / warn / fail with the number of offending rows and up
to MAX_EXAMPLES examples; the runner adds its name, timing and what it proves.

The checks that read raw JSON are the expensive ones (the raw documents are gigabytes at seed
scale), so they see an explicit list of epochs (`Scope.epochs`: all of them, the ones changed
since they were last verified, or a sample) and walk it in chunks through `Scope.map`, which the
runner backs with its own connection or with worker processes sharing its snapshot. A raw check
also says which epochs it found at fault (`Outcome.bad_epochs`): only the others are recorded
as verified, so a fault stays visible to every later incremental run until it is fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

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
    #: Raw-reading checks: the epochs of their scope found at fault (None: cannot say, so no
    #: epoch of the run counts as verified).
    bad_epochs: frozenset[int] | None = None


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


def status_for(count: int, bad: Status = "fail") -> Status:
    """A check's status from its count of offending rows: pass at 0, else `bad`."""
    return "pass" if count == 0 else bad


T = TypeVar("T")

#: Which epochs the raw-reading checks cover: every normalized epoch, those whose raw document or
#: normalized rows changed since they were last verified, or a seeded sample.
Mode = Literal["full", "incremental", "sample"]


class EpochMapper(Protocol):
    """Runs `func(conn, chunk)` over `epochs` in chunks, results in order (see Scope.map)."""

    def __call__(
        self, func: Callable[[Connection, list[int]], T], epochs: Sequence[int], chunk: int
    ) -> Iterator[T]: ...


def serial_mapper(conn: Connection) -> EpochMapper:
    """Chunks one after the other on the run's own connection."""

    def run(
        func: Callable[[Connection, list[int]], T], epochs: Sequence[int], chunk: int
    ) -> Iterator[T]:
        for start in range(0, len(epochs), chunk):
            yield func(conn, list(epochs[start : start + chunk]))

    return run


@dataclass(frozen=True)
class Scope:
    """Which epochs the raw-reading checks look at."""

    raw_epochs: int
    normalized_epochs: int
    #: None: all normalized epochs. Otherwise the seeded sample, sorted.
    sample: list[int] | None
    sample_size: int | None
    seed: int
    mode: Mode = "full"
    #: The epochs the raw-reading checks cover, sorted (None: all normalized epochs).
    epochs: list[int] | None = None
    #: How a raw check walks `epochs` (set by the runner; not part of the scope's identity).
    mapper: EpochMapper | None = field(default=None, compare=False, repr=False)
    #: Work several checks of one run share (e.g. the nominator positions walked once), by key.
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def only_changed(self) -> bool:
        """True when the per-epoch checks may judge just `epochs` (an incremental run): in a
        full or sample run they judge every row, as a check over whole tables."""
        return self.mode == "incremental" and self.epochs is not None

    def shared(self, key: str, compute: Callable[[], T]) -> T:
        """`compute()` once per run: checks that judge the same derived data share it."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def describe(self) -> str:
        if self.mode == "sample" or (self.sample is not None and self.epochs is None):
            sample = self.sample or []
            return (
                f"a seeded sample of {len(sample):,} of {self.normalized_epochs:,} "
                f"normalized epochs (seed {self.seed})"
            )
        if self.epochs is None or len(self.epochs) == self.normalized_epochs:
            return f"all {self.normalized_epochs:,} normalized epochs"
        unchanged = self.normalized_epochs - len(self.epochs)
        return (
            f"{len(self.epochs):,} of {self.normalized_epochs:,} normalized epochs, those changed "
            f"since last verified ({unchanged:,} unchanged)"
        )

    def map(
        self,
        func: Callable[[Connection, list[int]], T],
        conn: Connection,
        chunk: int,
    ) -> Iterator[T]:
        """`func(conn, chunk_of_epochs)` over the scope's epochs, results in order; through the
        runner's mapper (maybe worker processes), else serially on `conn`. `func` must be a
        module-level function returning plain data (it may run in another process)."""
        if self.epochs is None:
            epochs = [
                int(e)
                for e in conn.exec_driver_sql(
                    "SELECT epoch FROM epoch_normalizations ORDER BY epoch"
                ).scalars()
            ]
        else:
            epochs = self.epochs
        mapper = self.mapper or serial_mapper(conn)
        return mapper(func, epochs, chunk)

    def to_json(self) -> dict[str, Any]:
        return {
            "raw_epochs": self.raw_epochs,
            "normalized_epochs": self.normalized_epochs,
            "mode": self.mode,
            "sample": self.sample,
            "sample_size": self.sample_size,
            "seed": self.seed,
            "raw_checked_epochs": (
                len(self.epochs) if self.epochs is not None else self.normalized_epochs
            ),
            "description": self.describe(),
        }


@dataclass(frozen=True)
class Check:
    name: str
    proves: str
    func: Callable[[Connection, Scope], Outcome]
    reads_raw: bool
    #: Judges epochs one by one (SQL over the normalized rows of `Scope.epochs` in an
    #: incremental run, everything otherwise) and says which epochs it found at fault, so an
    #: epoch counts as verified only when it passed these checks too.
    per_epoch: bool = False

    @property
    def scoped(self) -> bool:
        """Covers the run's epochs rather than always everything: takes part in verification."""
        return self.reads_raw or self.per_epoch


CHECKS: list[Check] = []


def check(name: str, proves: str, reads_raw: bool = False, per_epoch: bool = False):
    def register(func: Callable[[Connection, Scope], Outcome]):
        CHECKS.append(Check(name, proves, func, reads_raw, per_epoch))
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
