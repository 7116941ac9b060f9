"""The query module against a real PostgreSQL: requests, the band, operators, safety."""

import polars as pl
import pytest
import sqlalchemy as sa
from helpers.normalized_rows import Row, load

from shareprice import queries

PERQ = 10**18
BIG = 2**100 + 12345  # beyond 64 bits: must survive exactly


@pytest.fixture()
def small(engine):
    rows = [
        Row(o, e, PERQ + o * 10**6 + e, stake=BIG + e, shares=BIG // 2, rewards=e or None)
        for o in (0, 1, 2)
        for e in range(0, 50)
    ]
    rows += [Row(3, e, PERQ + 5 * e) for e in range(40, 50)]  # a late operator
    load(engine, rows)
    return rows


def test_empty_database(engine):
    info = queries.summary(engine)
    assert info.empty and info.data_version == 0
    assert queries.series_v2(engine, queries.SeriesRequest()).height == 0
    assert queries.series_v2(engine, queries.SeriesRequest(last_epochs=10)).height == 0
    assert queries.band_v2(engine, queries.SeriesRequest()).height == 0
    assert queries.operators(engine).height == 0
    assert queries.series_v1(engine, queries.SeriesRequest(last_epochs=10)).height == 0


def test_series_exact_integers_and_floats(engine, small):
    frame = queries.series_v2(engine, queries.SeriesRequest(operators=(1,)))
    assert frame.schema["share_price_perq"] == pl.Int128
    assert frame.schema["stake"] == pl.Int128
    row = frame.filter(pl.col("epoch") == 7).row(0, named=True)
    assert row["share_price_perq"] == PERQ + 10**6 + 7
    assert row["stake"] == BIG + 7 and row["shares"] == BIG // 2 and row["rewards"] == 7
    assert row["share_price"] == (PERQ + 10**6 + 7) / 1e18
    assert frame.filter(pl.col("epoch") == 0)["rewards"].to_list() == [None]
    assert frame["epoch"].to_list() == list(range(50))


def test_requests_select_operators_and_epochs(engine, small):
    def epochs(request):
        frame = queries.series_v2(engine, request)
        return {(o, e) for o, e in frame.select("operator_id", "epoch").iter_rows()}

    assert epochs(queries.SeriesRequest(operators=(0, 3), epoch_from=45)) == {
        (o, e) for o in (0, 3) for e in range(45, 50)
    }
    assert epochs(queries.SeriesRequest(last_epochs=3)) == {
        (o, e) for o in (0, 1, 2, 3) for e in (47, 48, 49)
    }
    assert epochs(queries.SeriesRequest(epoch_to=0)) == {(0, 0), (1, 0), (2, 0)}
    assert epochs(queries.SeriesRequest(operators=(99,))) == set()
    assert len(epochs(queries.SeriesRequest())) == 160


def test_request_validation():
    for bad in (
        {"epoch_from": -1},
        {"epoch_from": 5, "epoch_to": 4},
        {"last_epochs": 0},
        {"max_points": 3},
        {"operators": (-1,)},
        {"epoch_to": "5"},
    ):
        with pytest.raises(queries.RequestError):
            queries.SeriesRequest(**bad)
    assert queries.SeriesRequest(operators=(3, 1, 3)).operators == (1, 3)
    assert hash(queries.SeriesRequest(operators=(1, 3))) == hash(
        queries.SeriesRequest(operators=(3, 1))
    )


def test_band_is_percentile_disc_of_every_operator(engine, small):
    band = queries.band_v2(engine, queries.SeriesRequest())
    assert band["epoch"].to_list() == list(range(50))
    at_45 = band.filter(pl.col("epoch") == 45).row(0, named=True)
    prices = sorted([PERQ + o * 10**6 + 45 for o in (0, 1, 2)] + [PERQ + 5 * 45])
    assert at_45["operators"] == 4
    # percentile_disc: the value at 1-based position ceil(f * n) of the sorted prices
    assert [at_45[c] for c in queries.BAND_COLUMNS] == [
        prices[0],
        prices[0],
        prices[1],
        prices[2],
        prices[3],
    ]
    assert at_45["p50_price"] == prices[1] / 1e18
    windowed = queries.band_v2(engine, queries.SeriesRequest(last_epochs=5, operators=(0,)))
    assert windowed["epoch"].to_list() == [45, 46, 47, 48, 49]
    assert windowed["operators"].to_list() == [4] * 5  # the band ignores the operator choice


def test_percentile_disc_matches_postgres(engine):
    values = [7, 1, 9, 3, 3, 10**30, 2]
    with engine.connect() as conn:
        for fraction in (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0):
            expected = conn.execute(
                sa.text(
                    "SELECT percentile_disc(CAST(:f AS float8)) WITHIN GROUP (ORDER BY v) "
                    "FROM unnest(CAST(:vs AS numeric[])) v"
                ),
                {"f": fraction, "vs": values},
            ).scalar_one()
            assert queries.percentile_disc(sorted(values), fraction) == int(expected)


def test_operators_list(engine, small):
    ops = queries.operators(engine).sort("operator_id")
    assert ops["operator_id"].to_list() == [0, 1, 2, 3]
    three = ops.row(3, named=True)
    assert three["latest_epoch"] == 49 and three["first_seen_epoch"] == 40
    assert three["share_price_perq"] == PERQ + 5 * 49 and three["is_active"] is True
    assert ops.row(0, named=True)["stake"] == BIG + 49


def test_hostile_operator_names_are_data(engine):
    names = {
        0: "'); DROP TABLE operator_share_prices; --",
        1: 'quote " comma , tab \t newline \n backslash \\ done',
        2: "Robert'); DELETE FROM operators_metadata; --",
    }
    load(engine, [Row(o, e, PERQ + e) for o in names for e in range(3)], names=names)
    ops = queries.operators(engine).sort("operator_id")
    assert ops["name"].to_list() == [names[0], names[1], names[2]]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM operator_share_prices").scalar_one() == 9
        assert conn.exec_driver_sql("SELECT count(*) FROM operators_metadata").scalar_one() == 3


def test_data_version_moves_with_writes(engine, small):
    before = queries.data_version(engine)
    assert before >= 1
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT nextval('data_version_seq')")
    assert queries.data_version(engine) == before + 1
    assert queries.summary(engine).data_version == before + 1


def test_trace_records_every_query(engine, small):
    with queries.trace() as trace:
        queries.series_v2(engine, queries.SeriesRequest(last_epochs=5))
    assert [t.name for t in trace.timings] == ["latest_epoch", "series_v2"]
    assert trace.timings[1].rows == 20 and trace.total_ms > 0


def test_statement_timeout_applies(engine, small, monkeypatch):
    with pytest.raises(Exception, match="statement timeout"):
        with queries.connect(engine, timeout_ms=1) as conn:
            conn.execute("SELECT pg_sleep(0.2)")


def test_perq_to_decimal():
    assert queries.perq_to_decimal(1_000_036_353_676_459_997) == "1.000036353676459997"
    assert queries.perq_to_decimal(5) == "0.000000000000000005"
    assert queries.perq_to_decimal(None) is None


# --- v1 (raw documents parsed in Python) == v2 (normalized tables) ---------------------------

V1_V2_REQUESTS = [
    queries.SeriesRequest(),
    queries.SeriesRequest(operators=(0, 3, 9)),  # slashed (0) and deregistered (9) included
    queries.SeriesRequest(last_epochs=10),
    queries.SeriesRequest(epoch_from=20, epoch_to=45, operators=(1, 2, 11)),
    queries.SeriesRequest(max_points=12),
    queries.SeriesRequest(operators=(0, 9), max_points=6),
    queries.SeriesRequest(last_epochs=30, max_points=18),
    queries.SeriesRequest(operators=(12345,)),
]


@pytest.mark.parametrize("request_", V1_V2_REQUESTS, ids=repr)
def test_v1_equals_v2_on_generated_data(normalized_small_url, request_):
    from shareprice.store import db

    engine = db.get_engine(normalized_small_url)
    v1 = queries.series_v1(engine, request_)
    v2 = queries.series_v2(engine, request_)
    assert v1.schema == v2.schema and v1.schema["share_price_perq"] == pl.Int128
    assert queries.frames_equal(v1, v2), (v1, v2)
    if request_.operators != (12345,):
        assert v2.height > 0
    band_v1 = queries.band_v1(engine, request_)
    band_v2 = queries.band_v2(engine, request_)
    assert band_v2.height > 0 and queries.frames_equal(band_v1, band_v2)


def test_generated_data_covers_every_operator_and_epoch(normalized_small_url, raw_small_summary):
    from shareprice.store import db

    engine = db.get_engine(normalized_small_url)
    v2 = queries.series_v2(engine, queries.SeriesRequest())
    assert v2.height == raw_small_summary.operator_states
    assert v2["operator_id"].n_unique() == raw_small_summary.operators
    ops = queries.operators(engine)
    statuses = dict(zip(ops["operator_id"].to_list(), ops["status"].to_list(), strict=True))
    for slashed in raw_small_summary.slashed:
        assert statuses[slashed] == "slashed"


def test_v1_equals_v2_on_the_real_samples(engine, shared_data):
    """Both real formats: import, backfill, then every read path agrees to the last digit."""
    from shareprice import backfill
    from shareprice.ingest import importer

    imported = importer.import_paths(engine, sorted(shared_data.glob("*.json")))
    assert imported is not None
    result = backfill.run_backfill(engine, backfill.Options(workers=1))
    assert result.status == "succeeded" and result.epochs_failed == 0, result
    for request_ in (
        queries.SeriesRequest(),
        queries.SeriesRequest(operators=(1,)),
        queries.SeriesRequest(last_epochs=5),
        queries.SeriesRequest(max_points=30),
        queries.SeriesRequest(epoch_from=2600),
    ):
        v1 = queries.series_v1(engine, request_)
        v2 = queries.series_v2(engine, request_)
        assert v2.height > 0 and queries.frames_equal(v1, v2), request_
        assert queries.frames_equal(
            queries.band_v1(engine, request_), queries.band_v2(engine, request_)
        )
    # the value DOMAIN.md checked by hand: stake per share of the storage dump at epoch 2647
    latest = queries.series_v2(engine, queries.SeriesRequest(epoch_from=2647, epoch_to=2647))
    assert 1_000_036_353_676_459_997 in latest["share_price_perq"].to_list()
    # flat export: prices as given, exact
    flat = queries.series_v2(engine, queries.SeriesRequest(epoch_from=2619, epoch_to=2619))
    assert set(flat["share_price_perq"].to_list()) == {1000036298698756895, 1000041900676102714}
    # epochs per day from the samples' end blocks, and yields that use it
    rate = queries.epoch_rate(engine)
    assert rate.source == "end_blocks" and 119 < rate.epochs_per_day < 121
    ops = queries.operators(engine, rate)
    assert ops.height == 2 and ops["latest_epoch"].to_list() == [2647, 2647]


# --- the stored band (sql/020) -----------------------------------------------------------------


def _stored_bands(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM epoch_price_bands").scalar_one()


def test_stored_band_is_kept_by_the_backfill(normalized_small_url):
    from shareprice.store import db

    engine = db.get_engine(normalized_small_url)
    with engine.connect() as conn:
        epochs_with_prices = conn.exec_driver_sql(
            "SELECT count(DISTINCT epoch) FROM operator_share_prices"
        ).scalar_one()
    assert _stored_bands(engine) == epochs_with_prices
    for request_ in (queries.SeriesRequest(), queries.SeriesRequest(max_points=12)):
        with queries.trace() as trace:
            stored = queries.band_v2(engine, request_)
        assert queries.frames_equal(stored, queries.band_live(engine, request_))
        assert trace.timings[-1].name == "band_v2"


def test_stale_or_missing_band_rows_are_computed_live(engine, small):
    expected = queries.band_live(engine, queries.SeriesRequest())
    assert _stored_bands(engine) == 50
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM epoch_price_bands WHERE epoch IN (3, 44)")
        conn.exec_driver_sql(
            "UPDATE epoch_price_bands SET operators = 99, p50 = 1 WHERE epoch = 45"
        )
    assert queries.frames_equal(queries.band_v2(engine, queries.SeriesRequest()), expected)


def test_band_follows_price_writes(engine, small):
    with engine.begin() as conn:
        # what a re-normalization does: delete the epoch's rows, write them again, re-mark it
        conn.exec_driver_sql("DELETE FROM operator_share_prices WHERE epoch = 45")
        conn.exec_driver_sql(
            "INSERT INTO operator_share_prices SELECT o, 45, 2000000000000000000::numeric + o, 'storage_dump' "
            "FROM generate_series(0, 2) o"
        )
        conn.exec_driver_sql(
            "UPDATE epoch_normalizations SET operator_count = 3, revision = 2 WHERE epoch = 45"
        )
        stored = conn.exec_driver_sql(
            "SELECT operators, p50 FROM epoch_price_bands WHERE epoch = 45"
        ).one()
        assert tuple(stored) == (3, 2 * 10**18 + 1)
        # a price changed in place (not the backfill's way): recomputed from the table
        conn.exec_driver_sql(
            "UPDATE operator_share_prices SET share_price_perq = 3000000000000000000 WHERE epoch = 44 "
            "AND operator_id = 0"
        )
        # an epoch that failed: its rows deleted, its mark removed
        conn.exec_driver_sql("DELETE FROM operator_share_prices WHERE epoch = 46")
        conn.exec_driver_sql("DELETE FROM epoch_normalizations WHERE epoch = 46")
    band = queries.band_v2(engine, queries.SeriesRequest())
    assert 46 not in band["epoch"].to_list()
    assert band.filter(pl.col("epoch") == 45)["p50"].to_list() == [2 * 10**18 + 1]
    assert band.filter(pl.col("epoch") == 44)["p95"].to_list() == [3 * 10**18]
    assert queries.frames_equal(band, queries.band_live(engine, queries.SeriesRequest()))
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE operator_share_prices CASCADE")
    assert _stored_bands(engine) == 0


# --- the CLI over the query module ------------------------------------------------------------


def test_bench_queries_json_on_generated_data(normalized_small_url):
    import json

    from click.testing import CliRunner

    from shareprice.cli import main

    url = normalized_small_url.render_as_string(hide_password=False)
    result = CliRunner().invoke(
        main, ["bench", "queries", "--json", "--url", url, "--runs", "2", "--v1-runs", "1"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    shapes = {s["name"]: s for s in report["shapes"]}
    assert list(shapes) == [
        "all_epochs_4_operators",
        "all_epochs_all_operators",
        "last_100_epochs",
        "one_operator",
    ]
    for shape in shapes.values():
        assert shape["equal"] is True, shape
        assert shape["rows"] > 0 and shape["v2_ms"] > 0 and shape["floor_ms"] > 0
        assert shape["v1_over_v2"] == pytest.approx(shape["v1_ms"] / shape["v2_ms"], rel=0.01)
    # the 4 operators with the longest history span (nearly) every epoch of the data
    assert shapes["all_epochs_4_operators"]["rows"] > 3 * 70


def test_series_and_operators_commands_print_exact_integers(normalized_small_url):
    from click.testing import CliRunner

    from shareprice.cli import main

    url = normalized_small_url.render_as_string(hide_password=False)
    runner = CliRunner()
    series = runner.invoke(
        main, ["series", "--url", url, "--operators", "1", "--last", "3", "--format", "csv"]
    )
    assert series.exit_code == 0, series.output
    lines = [line for line in series.stdout.splitlines() if line and line[0].isdigit()]
    assert len(lines) == 3
    price = int(lines[0].split(",")[2])
    assert price > 10**18  # an exact perq integer, not "1.0000..e18"
    ops = runner.invoke(main, ["operators", "--url", url, "--format", "json", "--limit", "3"])
    assert ops.exit_code == 0, ops.output
    bad = runner.invoke(main, ["series", "--url", url, "--max-points", "2"])
    assert bad.exit_code != 0 and "max_points" in bad.output


def test_band_without_the_stored_table_is_computed_live(engine, small):
    expected = queries.band_v2(engine, queries.SeriesRequest(max_points=12))
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE epoch_price_bands CASCADE")
        conn.exec_driver_sql(
            "DROP TRIGGER epoch_price_bands_insert ON operator_share_prices;"
            "DROP TRIGGER epoch_price_bands_delete ON operator_share_prices;"
            "DROP TRIGGER epoch_price_bands_update ON operator_share_prices;"
            "DROP TRIGGER epoch_price_bands_truncate ON operator_share_prices"
        )
    assert queries.frames_equal(
        queries.band_v2(engine, queries.SeriesRequest(max_points=12)), expected
    )


def test_an_epoch_written_in_two_statements_is_repaired_when_marked(engine, small):
    with engine.begin() as conn:
        for lo, hi in ((0, 1), (2, 3)):  # one epoch's rows in two INSERT statements
            conn.exec_driver_sql(
                "INSERT INTO operator_share_prices SELECT o, 50, 1000000000000000000::numeric"
                " + 7 * o, 'storage_dump' FROM generate_series(%s::int, %s::int) o",
                (lo, hi),
            )
        partial = conn.exec_driver_sql(
            "SELECT operators FROM epoch_price_bands WHERE epoch = 50"
        ).scalar_one()
        assert partial == 2  # the second statement's rows only
        conn.exec_driver_sql(
            "INSERT INTO epoch_normalizations (epoch, revision, operator_count) VALUES (50, 1, 4)"
        )
        repaired = conn.exec_driver_sql(
            "SELECT operators, p95 FROM epoch_price_bands WHERE epoch = 50"
        ).one()
    assert tuple(repaired) == (4, 10**18 + 21)
    band = queries.band_v2(engine, queries.SeriesRequest(epoch_from=50))
    assert band["operators"].to_list() == [4]
    assert queries.frames_equal(
        band, queries.band_live(engine, queries.SeriesRequest(epoch_from=50))
    )
