"""Server-side downsampling: at most max_points per operator, every bucket's extremes kept,
every operator kept, nothing interpolated; the SQL and the Python (v1) versions agree."""

import random
from fractions import Fraction

import polars as pl
import pytest
from helpers.normalized_rows import Row, load

from shareprice import queries

PERQ = 10**18


def _walk(operator_id: int, epochs: list[int], seed: int) -> list[Row]:
    """A rising price with noise, one slash (a drop) and one jump; distinct prices and changes."""
    rng = random.Random(seed)
    price = PERQ
    rows = []
    for i, epoch in enumerate(epochs):
        price += rng.randrange(1, 10**9)
        if i == len(epochs) // 3:
            price -= 10**15  # slashed
        if i == 2 * len(epochs) // 3:
            price += 10**14
        rows.append(Row(operator_id, epoch, price, stake=10**21 + i, rewards=rng.randrange(10**12)))
    return rows


@pytest.fixture()
def data(engine):
    epochs_1 = [e for e in range(0, 1300) if e % 97 != 5]  # gaps: change per epoch over 2 epochs
    rows = _walk(1, epochs_1, 1) + _walk(2, list(range(100, 130)), 2) + _walk(3, [700], 3)
    load(engine, rows)
    return rows


def _change(row: Row, prev: Row | None) -> Fraction | None:
    if prev is None:
        return None
    return Fraction(row.price - prev.price, prev.price * (row.epoch - prev.epoch))


def expected_keepers(rows: list[Row], max_points: int) -> set[int]:
    """Epochs that must be kept, computed independently of the query module's helpers."""
    rows = sorted(rows, key=lambda r: r.epoch)
    n = len(rows)
    if n <= max_points:
        return {r.epoch for r in rows}
    # a run of buckets never bridges a hole; each hole costs one bucket of the budget
    holes = sum(1 for a, b in zip(rows, rows[1:], strict=False) if b.epoch - a.epoch > 1)
    buckets = max(1, max_points // 6 - holes)
    groups: dict[tuple[int, int], list[tuple[Row, Fraction | None]]] = {}
    segment = 0
    for i, row in enumerate(rows):
        segment += bool(i and row.epoch - rows[i - 1].epoch > 1)
        groups.setdefault((segment, i * buckets // n), []).append(
            (row, _change(row, rows[i - 1] if i else None))
        )
    keep = set()
    for members in groups.values():
        keep.add(members[0][0].epoch)
        keep.add(members[-1][0].epoch)
        keep.add(min(members, key=lambda m: m[0].price)[0].epoch)
        keep.add(max(members, key=lambda m: m[0].price)[0].epoch)
        changed = [m for m in members if m[1] is not None]
        if changed:
            keep.add(min(changed, key=lambda m: m[1])[0].epoch)
            keep.add(max(changed, key=lambda m: m[1])[0].epoch)
    return keep


@pytest.mark.parametrize("max_points", [6, 60, 600, 1200])
def test_downsampling_keeps_every_bucket_extreme_and_every_operator(engine, data, max_points):
    frame = queries.series_v2(engine, queries.SeriesRequest(max_points=max_points))
    assert sorted(frame["operator_id"].unique().to_list()) == [1, 2, 3]
    by_key = {(r.operator_id, r.epoch): r for r in data}
    for operator_id in (1, 2, 3):
        rows = [r for r in data if r.operator_id == operator_id]
        part = frame.filter(pl.col("operator_id") == operator_id)
        holes = sum(1 for a, b in zip(rows, rows[1:], strict=False) if b.epoch - a.epoch > 1)
        assert part.height <= max(max_points, 6 * (holes + 1))
        kept = set(part["epoch"].to_list())
        assert expected_keepers(rows, max_points) <= kept
        # every point is a real row, values untouched (never averaged, never interpolated)
        for row in part.iter_rows(named=True):
            source = by_key[(operator_id, row["epoch"])]
            assert row["share_price_perq"] == source.price
            assert row["stake"] == source.stake and row["rewards"] == source.rewards
    # the global extremes survive whatever the reduction
    one = [r for r in data if r.operator_id == 1]
    kept_one = frame.filter(pl.col("operator_id") == 1)
    assert kept_one["share_price_perq"].max() == max(r.price for r in one)
    assert kept_one["share_price_perq"].min() == min(r.price for r in one)
    assert kept_one["epoch"].min() == one[0].epoch and kept_one["epoch"].max() == one[-1].epoch


def test_no_reduction_below_max_points(engine, data):
    full = queries.series_v2(engine, queries.SeriesRequest(operators=(2, 3)))
    reduced = queries.series_v2(engine, queries.SeriesRequest(operators=(2, 3), max_points=60))
    assert full.height == 31
    assert queries.frames_equal(full, reduced)


def test_sql_and_python_downsampling_agree(engine, data):
    full = queries.series_v2(engine, queries.SeriesRequest())
    for max_points in (6, 61, 600):
        sql_frame = queries.series_v2(engine, queries.SeriesRequest(max_points=max_points))
        rows = []
        for operator_id in (1, 2, 3):
            part = full.filter(pl.col("operator_id") == operator_id)
            operator_rows = list(part.select(list(queries.SERIES_EXACT_SCHEMA)).iter_rows())
            rows += queries.downsample_rows(operator_rows, max_points)
        python_frame = queries.finish_series(
            pl.DataFrame(rows, schema=queries.SERIES_EXACT_SCHEMA, orient="row")
        )
        assert queries.frames_equal(sql_frame, python_frame), max_points


def test_change_per_epoch_spans_gaps(engine, data):
    frame = queries.series_v2(
        engine, queries.SeriesRequest(operators=(1,), epoch_from=0, epoch_to=8)
    )
    row = frame.filter(pl.col("epoch") == 6).row(0, named=True)  # epoch 5 is missing
    assert row["prev_epoch"] == 4
    expected = (
        (row["share_price_perq"] - row["prev_share_price_perq"]) / row["prev_share_price_perq"] / 2
    )
    assert row["change_bps"] == pytest.approx(expected * 10_000, rel=1e-12)
    assert frame.filter(pl.col("epoch") == 0)["change_bps"].to_list() == [None]


def test_change_key_truncates_toward_zero_like_sql_div():
    assert queries.change_key(PERQ - 1, PERQ, 2, 1) == -1
    assert queries.change_key(PERQ + 1, PERQ, 2, 1) == 1
    assert queries.change_key(PERQ, PERQ, 2, 1) == 0
    assert queries.change_key(PERQ, None, 2, None) is None


def test_max_points_too_small_is_refused():
    with pytest.raises(queries.RequestError):
        queries.SeriesRequest(max_points=5)


@pytest.mark.parametrize("max_points", [6, 40, 400])
def test_band_reduction_keeps_the_envelope(engine, data, max_points):
    full = queries.band_v2(engine, queries.SeriesRequest())
    reduced = queries.band_v2(engine, queries.SeriesRequest(max_points=max_points))
    assert full.height == 1300 - len([e for e in range(1300) if e % 97 == 5 and not 100 <= e < 130])
    epochs = full["epoch"].to_list()
    holes = sum(1 for a, b in zip(epochs, epochs[1:], strict=False) if b - a > 1)
    assert reduced.height <= max(max_points, 4 * (holes + 1))  # both sides of a hole are kept
    assert reduced["p05"].min() == full["p05"].min() and reduced["p95"].max() == full["p95"].max()
    assert reduced["epoch"].min() == full["epoch"].min()
    assert reduced["epoch"].max() == full["epoch"].max()
    # every reduced row is a real epoch's band, untouched
    assert reduced.join(full, on=reduced.columns, how="anti").height == 0
    rows = list(full.select(list(queries.BAND_EXACT_SCHEMA)).iter_rows())
    python = queries.finish_band(
        pl.DataFrame(
            queries.downsample_band_rows(rows, max_points),
            schema=queries.BAND_EXACT_SCHEMA,
            orient="row",
        )
    )
    assert queries.frames_equal(reduced, python)
