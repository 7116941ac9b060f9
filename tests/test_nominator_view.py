"""Nominator figures: an epoch with no drawn neighbour still shows (a marker), holes stay gaps."""

from __future__ import annotations

import polars as pl

from shareprice.display import nominator_view


def test_a_lone_epoch_gets_a_marker_and_a_hole_stays_a_gap():
    history = pl.DataFrame(
        {
            "operator_id": [0, 0, 0, 0],
            "epoch": [10, 11, 20, 30],
            "value": [5 * 10**18, 6 * 10**18, 7 * 10**18, 9 * 10**18],
        }
    )
    events = pl.DataFrame(
        {"operator_id": [], "epoch": [], "kind": [], "detail": []},
        schema={"operator_id": pl.Int64, "epoch": pl.Int64, "kind": pl.Utf8, "detail": pl.Utf8},
    )
    fig = nominator_view.value_figure(history, events, "AI3", {0: "Operator 0"}, {0: "#123456"})
    line, lone = fig.data[0], fig.data[1]
    assert None in list(line.y)  # 11 -> 20 and 20 -> 30 are not bridged
    # 10-11 are drawn as a line; 20 and 30 have a hole on each side (or the edge): markers.
    assert list(lone.x) == [20, 30] and list(lone.y) == [7.0, 9.0]
    assert fig.layout.yaxis.tickformat == ",.4~f"  # 160,000.0005 AI3, as the cards say
    counts = pl.DataFrame({"epoch": [2647], "nominators": [105]})
    lone_count = nominator_view.counts_figure(counts).data[1]
    assert list(lone_count.x) == [2647] and list(lone_count.y) == [105]


def test_epoch_ticks_are_whole_epochs_grouped_alike():
    """A single dump's one epoch: one tick, 2,647, not plotly's 2646 / 2,646.5 / 2647."""
    counts = pl.DataFrame({"epoch": [2647], "nominators": [105]})
    axis = nominator_view.counts_figure(counts).layout.xaxis
    assert list(axis.tickvals) == [2647] and axis.tickformat == ",d"
    assert list(axis.range) == [2646, 2648]
    # A long history keeps plotly's own spacing, grouped alike.
    long = nominator_view.epoch_axis(list(range(0, 3734)))
    assert long == {"title": {"text": "epoch"}, "tickformat": ",d"}


def _holders(count: int, top: int, total: int):
    from shareprice.queries.nominators import Holders

    return Holders(
        operator_id=5,
        epoch=3733,
        count=count,
        total_effective_shares=total,
        top_effective_shares=top,
        operator_shares=total,
        share_price_perq=10**18,
        rows=pl.DataFrame(),
    )


def test_concentration_text_counts_in_words():
    # 1 of 3 parts: 33.33% (truncated); one holder: no "the 1 largest hold"
    many = nominator_view.concentration_text(_holders(12, 1, 3))
    assert many == (
        "12 nominators at epoch 3,733; the 10 largest hold 33.33% of their effective shares"
    )
    one = nominator_view.concentration_text(_holders(1, 7, 7))
    assert one == "1 nominator at epoch 3,733, holding 100.00% of the effective shares"
