"""What a detailed timing run produces: per shape, path and cache state, the runs and their sizes.

One set of classes for every place a result lives: measured in this process (`measure`), stored
in and loaded from timing_results (`runs`), carried as JSON lines from a job's child process to
the page (`to_dict` and `shapes_from_dicts` are each other's inverse), and printed as one table
row per shape, path and cache state (display.timing_charts.detailed_table, for the page and the CLI).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, overload

VARIANTS = ("v1", "v2", "floor")
CACHE_STATES = ("cold", "warm")


@overload
def round_ms(value: float) -> float: ...
@overload
def round_ms(value: None) -> None: ...
def round_ms(value: float | None) -> float | None:
    """Milliseconds (and ratios) to three decimals, as every result stores them."""
    return None if value is None else round(value, 3)


@dataclass(slots=True)
class PathTiming:
    """One path (v1, v2 or floor) of one shape in one cache state."""

    shape: str
    variant: str
    cache: str
    runs_ms: list[float] = field(default_factory=list)
    rows: int | None = None
    bytes: int | None = None
    peak_bytes: int | None = None
    equal: bool | None = None
    error: str | None = None

    @property
    def median_ms(self) -> float | None:
        return round_ms(statistics.median(self.runs_ms)) if self.runs_ms else None

    @property
    def min_ms(self) -> float | None:
        return round_ms(min(self.runs_ms)) if self.runs_ms else None

    @property
    def max_ms(self) -> float | None:
        return round_ms(max(self.runs_ms)) if self.runs_ms else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "variant": self.variant,
            "cache": self.cache,
            "median_ms": self.median_ms,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "runs_ms": [round_ms(t) for t in self.runs_ms],
            "rows": self.rows,
            "bytes": self.bytes,
            "peak_bytes": self.peak_bytes,
            "equal": self.equal,
            "error": self.error,
        }


@dataclass(slots=True)
class DetailedShape:
    name: str
    description: str
    request: dict[str, Any]
    timings: list[PathTiming]
    #: v1 and v2 returned equal frames (None: v1 did not run).
    equal: bool | None
    #: EXPLAIN (ANALYZE, BUFFERS) text per path ('v1', 'v2').
    plans: dict[str, str]

    def timing(self, variant: str, cache: str) -> PathTiming | None:
        return next((t for t in self.timings if t.variant == variant and t.cache == cache), None)

    def ratio(self, cache: str = "warm") -> float | None:
        """v1 median / v2 median in one cache state."""
        v1, v2 = self.timing("v1", cache), self.timing("v2", cache)
        if v1 and v2 and v1.median_ms and v2.median_ms:
            return round_ms(v1.median_ms / v2.median_ms)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.name,
            "description": self.description,
            "request": self.request,
            "equal": self.equal,
            "v1_over_v2_warm": self.ratio("warm"),
            "v1_over_v2_cold": self.ratio("cold"),
            "timings": [t.to_dict() for t in self.timings],
            "plans": self.plans,
        }


@dataclass(slots=True)
class DetailedRun:
    shapes: list[DetailedShape]
    status: str
    run_id: int | None
    #: Why the run was not recorded ("" when it was, or when saving was not asked for).
    not_saved: str
    cold_method: str | None
    database: dict[str, Any]
    error: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "run_id": self.run_id,
            "not_saved": self.not_saved,
            "cold_method": self.cold_method,
            "database": self.database,
            "error": self.error,
            "shapes": [s.to_dict() for s in self.shapes],
        }


def shapes_from_dicts(items: Iterable[dict[str, Any]]) -> list[DetailedShape]:
    """DetailedShape objects back from their to_dict() form (a job's JSON events)."""
    out = []
    for item in items:
        timings = [
            PathTiming(
                t["shape"],
                t["variant"],
                t["cache"],
                list(t["runs_ms"]),
                t.get("rows"),
                t.get("bytes"),
                t.get("peak_bytes"),
                t.get("equal"),
                t.get("error"),
            )
            for t in item["timings"]
        ]
        out.append(
            DetailedShape(
                item["shape"],
                item.get("description", ""),
                item.get("request", {}),
                timings,
                item.get("equal"),
                dict(item.get("plans") or {}),
            )
        )
    return out
