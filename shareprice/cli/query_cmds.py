"""`shareprice operators`, `shareprice series` and `shareprice bench queries`.

Thin: parse options, call `shareprice.queries` / `shareprice.timings`, print.
"""

from __future__ import annotations

import sys

import click
import orjson
import polars as pl

from shareprice import queries, timings
from shareprice.cli.common import engine_for, friendly_errors, url_option


def _operator_ids(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of ids") from None


def _print_frame(frame: pl.DataFrame, fmt: str) -> None:
    """Exact integers are printed as integers (CSV, JSON) — never through a float."""
    if fmt == "csv":
        sys.stdout.write(frame.write_csv())
    elif fmt == "json":
        exact = frame.with_columns(
            [pl.col(n).cast(pl.String) for n, t in frame.schema.items() if t == pl.Int128]
        )
        sys.stdout.write(exact.write_ndjson())
    else:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=40):
            click.echo(frame)


_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="json = one object per line, exact integers as strings.",
)


@click.command("operators")
@url_option
@click.option("--status", help="Only operators with this status (e.g. registered).")
@click.option("--limit", type=int, default=None, help="At most this many, largest stake first.")
@_FORMAT
@friendly_errors
def operators_cmd(url: str | None, status: str | None, limit: int | None, fmt: str) -> None:
    """Every operator: metadata, latest exact price and stake, 1/7/30-day yield and APY."""
    engine = engine_for(url)
    rate = queries.epoch_rate(engine)
    frame = queries.operators(engine, rate)
    if status:
        frame = frame.filter(pl.col("status") == status)
    frame = frame.sort(["stake", "operator_id"], descending=[True, False], nulls_last=True)
    if limit is not None:
        frame = frame.head(limit)
    if fmt == "table":
        frame = frame.select(
            "operator_id",
            "name",
            "status",
            "nomination_tax",
            "latest_epoch",
            pl.col("share_price_perq")
            .map_elements(queries.perq_to_decimal, return_dtype=pl.String)
            .alias("share_price"),
            "stake_ai3",
            "yield_1d",
            "apy_1d",
            "apy_7d",
            "apy_30d",
        )
        click.echo(f"epochs per day: {rate.epochs_per_day:.3f} (from {rate.source})", err=True)
    _print_frame(frame, fmt)


@click.command("series")
@url_option
@click.option("--operators", "operator_text", help="Comma-separated ids (default: all).")
@click.option("--from", "epoch_from", type=int, help="First epoch (inclusive).")
@click.option("--to", "epoch_to", type=int, help="Last epoch (inclusive).")
@click.option("--last", "last_epochs", type=int, help="The last N epochs (wins over --from/--to).")
@click.option("--max-points", type=int, help="At most this many points per operator (>= 6).")
@click.option("--v1", "use_v1", is_flag=True, help="Parse the raw documents (the old, slow way).")
@click.option("--band", is_flag=True, help="The all-operators percentile band instead.")
@_FORMAT
@friendly_errors
def series_cmd(
    url: str | None,
    operator_text: str | None,
    epoch_from: int | None,
    epoch_to: int | None,
    last_epochs: int | None,
    max_points: int | None,
    use_v1: bool,
    band: bool,
    fmt: str,
) -> None:
    """Share price series (exact integers plus floats for drawing), as the pages read them."""
    try:
        request = queries.SeriesRequest(
            operators=_operator_ids(operator_text),
            epoch_from=epoch_from,
            epoch_to=epoch_to,
            last_epochs=last_epochs,
            max_points=max_points,
        )
    except queries.RequestError as exc:
        raise click.BadParameter(str(exc)) from None
    engine = engine_for(url)
    if band:
        func = queries.band_v1 if use_v1 else queries.band_v2
    else:
        func = queries.series_v1 if use_v1 else queries.series_v2
    with queries.trace() as trace:
        frame = func(engine, request)
    _print_frame(frame, fmt)
    click.echo(
        f"{frame.height:,} rows in {trace.total_ms:.1f} ms of queries ({func.__name__})", err=True
    )


@click.command("queries")
@url_option
@click.option("--runs", type=int, default=5, show_default=True, help="Timed runs of v2 and floor.")
@click.option(
    "--v1-runs", type=int, default=3, show_default=True, help="Timed runs of v1 (the slow one)."
)
@click.option(
    "--shape",
    "shape_names",
    multiple=True,
    type=click.Choice(list(timings.SHAPE_NAMES)),
    help="Only these shapes (repeatable; default: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly_errors
def bench_queries(
    url: str | None, runs: int, v1_runs: int, shape_names: tuple[str, ...], as_json: bool
) -> None:
    """v1 (raw JSON parsed in Python) vs v2 (normalized tables) vs a bare psycopg cursor.

    Medians of --runs runs (v1: --v1-runs) per request shape, and whether the v1 and v2 frames
    are equal. Measure on seed-scale data: `--url` of a backfilled database.
    """
    engine = engine_for(url)
    result = timings.run_benchmark(
        engine,
        names=shape_names or timings.SHAPE_NAMES,
        runs=runs,
        v1_runs=v1_runs,
        progress=None if as_json else (lambda text: click.echo(f"… {text}", err=True)),
    )
    if as_json:
        click.echo(orjson.dumps(result.to_json_dict()).decode())
        return
    click.echo(
        f"{'shape':<26} {'rows':>9} {'v1 ms':>10} {'v2 ms':>9} {'floor ms':>9} "
        f"{'v1/v2':>8} {'v2/floor':>8} equal"
    )
    for s in result.shapes:
        v1 = f"{s.v1_ms:10.1f}" if s.v1_ms is not None else f"{'-':>10}"
        ratio = f"{s.v1_over_v2:8.1f}" if s.v1_over_v2 is not None else f"{'-':>8}"
        click.echo(
            f"{s.name:<26} {s.rows:>9,} {v1} {s.v2_ms:9.1f} {s.floor_ms:9.1f} "
            f"{ratio} {s.v2_over_floor:8.2f} {s.equal}"
        )


commands: list[click.Command] = [operators_cmd, series_cmd]
bench_commands: list[click.Command] = [bench_queries]
