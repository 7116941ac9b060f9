"""The request shapes the timings measure: four named ones and the custom one from the explorer.

A shape is a `SeriesRequest` with a name, a kind (an operators' series or the all-operators
band) and a sentence saying what it asks. The named shapes are resolved against the data: "all
epochs x 4 operators" takes the operators with the longest history, as the old dashboard's
hard-coded operators 0-3 did, so every database measures a comparable request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl
from sqlalchemy.engine import Engine

from shareprice import queries

SHAPE_NAMES = (
    "all_epochs_4_operators",
    "all_epochs_all_operators",
    "last_100_epochs",
    "one_operator",
)
CUSTOM_SHAPE = "custom"

Kind = Literal["series", "band"]


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    kind: Kind
    request: queries.SeriesRequest
    description: str


def longest_operators(engine: Engine, count: int) -> tuple[int, ...]:
    """The `count` operators with the longest history (then the largest stake): "all epochs x
    N operators" should mean every epoch, as the old dashboard's hard-coded operators 0-3 did,
    not the few hundred epochs of a large late registrant."""
    ops = queries.operators(engine).filter(pl.col("latest_epoch").is_not_null())
    ranked = ops.with_columns(
        (pl.col("last_seen_epoch") - pl.col("first_seen_epoch")).alias("span")
    ).sort(["span", "stake", "operator_id"], descending=[True, True, False], nulls_last=True)
    return tuple(sorted(ranked.head(count)["operator_id"].to_list()))


def shapes(engine: Engine, names: Iterable[str] = SHAPE_NAMES) -> list[Shape]:
    """The named request shapes, resolved against the data (which operators span the most
    epochs)."""
    top = longest_operators(engine, 4)
    catalogue = {
        "all_epochs_4_operators": Shape(
            "all_epochs_4_operators",
            "series",
            queries.SeriesRequest(operators=top),
            "every epoch of the 4 operators with the longest history, full resolution",
        ),
        "all_epochs_all_operators": Shape(
            "all_epochs_all_operators",
            "band",
            queries.SeriesRequest(max_points=queries.DEFAULT_MAX_POINTS),
            "every epoch of every operator, reduced to the overview's percentile band "
            f"(at most {queries.DEFAULT_MAX_POINTS} epochs drawn)",
        ),
        "last_100_epochs": Shape(
            "last_100_epochs",
            "series",
            queries.SeriesRequest(last_epochs=100),
            "the last 100 epochs of every operator, full resolution",
        ),
        "one_operator": Shape(
            "one_operator",
            "series",
            queries.SeriesRequest(operators=longest_operators(engine, 1)),
            "every epoch of the operator with the longest history",
        ),
    }
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown}; known: {', '.join(SHAPE_NAMES)}")
    return [catalogue[n] for n in names]


def custom_shape(request: queries.SeriesRequest, kind: Kind = "series") -> Shape:
    """A request from the explorer's controls (operators, epoch range, last N) as a shape."""
    parts = []
    if request.operators is not None:
        parts.append(f"operators {', '.join(map(str, request.operators))}")
    if request.last_epochs is not None:
        parts.append(f"last {request.last_epochs} epochs")
    elif request.epoch_from is not None or request.epoch_to is not None:
        parts.append(f"epochs {request.epoch_from or 0}-{request.epoch_to or 'latest'}")
    return Shape(CUSTOM_SHAPE, kind, request, "custom: " + ("; ".join(parts) or "everything"))


def request_dict(request: queries.SeriesRequest) -> dict[str, Any]:
    return {
        "operators": list(request.operators) if request.operators is not None else None,
        "epoch_from": request.epoch_from,
        "epoch_to": request.epoch_to,
        "last_epochs": request.last_epochs,
        "max_points": request.max_points,
    }
