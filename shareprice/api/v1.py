"""The versioned API for new clients, `/api/v1/...`: operators with yields, the explorer's series
(JSON, CSV or Parquet with Int128), the band, backfill progress, the latest integrity run,
health (with replay lag on a hot standby), and nominator positions (one nominator's, with value
history; one operator's holders).
"""

from __future__ import annotations

import io
from typing import Any

from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import Response

from shareprice import queries
from shareprice.api.params import ParamError, Params, known_or_error, parse_integer
from shareprice.api.responses import (
    SERIES_DEFAULT_OPERATORS,
    SERIES_MAX_OPERATORS,
    SERIES_MAX_POINTS,
    SERIES_MAX_ROWS,
    endpoint,
    engine,
    error,
    exact_rows,
    from_cache,
    json_response,
    not_modified,
)
from shareprice.backfill import status as backfill_status
from shareprice.store import analytics_view, config, db

# --- the versioned API --------------------------------------------------------------------------


@endpoint
def v1_operators(request: Request) -> Response:
    """Every operator: metadata, latest price, stake and 1/7/30-day yields."""
    Params(request.query_params, (), strict=True)
    cached, headers = not_modified(request)
    if cached is not None:
        return cached
    return from_cache(
        request,
        headers,
        lambda: json_response(exact_rows(queries.operators(engine())), headers=headers),
    )


def _series_request(p: Params, operators: tuple[int, ...] | None) -> queries.SeriesRequest:
    epoch_from = p.integer("from", minimum=0, maximum=2**31 - 1)
    epoch_to = p.integer("to", minimum=0, maximum=2**31 - 1)
    if epoch_from is not None and epoch_to is not None and epoch_from > epoch_to:
        raise ParamError(f"from: epoch {epoch_from} is after to={epoch_to}")
    return queries.SeriesRequest(
        operators=operators,
        epoch_from=epoch_from,
        epoch_to=epoch_to,
        last_epochs=p.integer("last", minimum=1, maximum=2**31 - 1),
        max_points=p.integer(
            "max_points",
            minimum=6,
            maximum=SERIES_MAX_POINTS,
            default=queries.DEFAULT_MAX_POINTS,
        ),
    )


_SERIES_COLUMNS = ("operator_id", "epoch", "share_price_perq", "stake", "shares", "rewards")


@endpoint
def v1_series(request: Request) -> Response:
    """Share-price series of some operators (the explorer's request), exact, downsampled."""
    p = Params(
        request.query_params,
        ("operators", "from", "to", "last", "max_points", "format"),
        strict=True,
    )
    wanted = p.operator_ids("operators", maximum_count=SERIES_MAX_OPERATORS)
    fmt = p.choice("format", ("json", "csv", "parquet"), "json")
    series_request = _series_request(p, wanted)
    max_points = series_request.max_points
    assert max_points is not None
    cached, headers = not_modified(request)
    if cached is not None:
        return cached
    return from_cache(
        request, headers, lambda: _series_response(p, wanted, fmt, series_request, headers)
    )


def _series_response(
    p: Params,
    wanted: tuple[int, ...] | None,
    fmt: str,
    series_request: queries.SeriesRequest,
    headers: dict[str, str],
) -> Response:
    headers = dict(headers)
    max_points = series_request.max_points
    assert max_points is not None
    table = queries.operators(engine())
    if wanted is None:
        wanted = queries.largest_operators(table, SERIES_DEFAULT_OPERATORS)
        series_request = _series_request(p, wanted)
    else:
        known_or_error("operators", wanted, set(table["operator_id"].to_list()))
    if len(wanted) * max_points > SERIES_MAX_ROWS:
        raise ParamError(
            f"max_points: {len(wanted)} operators x {max_points} points is over "
            f"the {SERIES_MAX_ROWS:,} rows one response may hold"
        )
    headers["x-operators"] = ",".join(str(o) for o in wanted)
    frame = queries.series_v2(engine(), series_request).select(_SERIES_COLUMNS)
    if fmt == "csv":
        return Response(frame.write_csv(), media_type="text/csv", headers=headers)
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.write_parquet(buffer)  # Int128 columns stay exact 128-bit integers
        return Response(
            buffer.getvalue(), media_type="application/vnd.apache.parquet", headers=headers
        )
    return json_response(exact_rows(frame), headers=headers)


@endpoint
def v1_band(request: Request) -> Response:
    """Percentiles (5/25/50/75/95) of every operator's price per epoch, exact."""
    p = Params(request.query_params, ("from", "to", "last", "max_points"), strict=True)
    band_request = _series_request(p, None)
    cached, headers = not_modified(request)
    if cached is not None:
        return cached

    def compute() -> Response:
        frame = queries.band_v2(engine(), band_request).select(
            ["epoch", "operators", *queries.BAND_COLUMNS]
        )
        return json_response(exact_rows(frame), headers=headers)

    return from_cache(request, headers, compute)


@endpoint
def v1_progress(request: Request) -> Response:
    """How far the backfill has got (the progress page's summary)."""
    Params(request.query_params, (), strict=True)
    body = backfill_status.summarize(engine()).to_json()
    body["analytics_view"] = analytics_view.state(engine()).version
    return json_response(body, headers={"Cache-Control": "no-store"})


@endpoint
def v1_checks_latest(request: Request) -> Response:
    """The latest stored integrity-check run with its results."""
    Params(request.query_params, (), strict=True)
    from shareprice import checks

    loaded = checks.load_results(engine())
    if loaded is None:
        return error(404, "no integrity check has run yet (run `shareprice check`)")
    run, results = loaded
    body = {
        "run_id": run.run_id,
        "started_at": run.started_at.isoformat(),
        "seconds": run.seconds,
        "status": run.status,
        "sample_size": run.sample_size,
        "source": run.source,
        "results": [r.to_json() for r in results],
    }
    return json_response(body, headers={"Cache-Control": "no-store"})


@endpoint
def v1_health(request: Request) -> Response:
    """Database reachable, latest epoch, normalized share, data version, replica lag."""
    Params(request.query_params, (), strict=True)
    eng = engine()
    facts = queries.summary(eng)
    body: dict[str, Any] = {
        "database": "ok",
        "latest_epoch": facts.last_epoch,
        "raw_epochs": facts.raw_epochs,
        "normalized_epochs": facts.normalized_epochs,
        "normalized_share": (
            None if facts.raw_epochs == 0 else facts.normalized_epochs / facts.raw_epochs
        ),
        "data_version": facts.data_version,
        "analytics_view": analytics_view.state(eng).version,
        "replica": False,
    }
    primary = _primary_engine()
    replica = queries.replica_status(eng, primary)
    if replica is not None:
        body["replica"] = True
        body["replay_lag_s"] = replica.replay_lag_s
        body["epochs_behind"] = replica.epochs_behind
    return json_response(body, headers={"Cache-Control": "no-store"})


def _primary_engine() -> Engine | None:
    """The main database when the API reads a separate read-only URL (maybe a standby)."""
    readonly, main = config.readonly_url(), config.configured_url()
    if readonly is None or main is None or readonly == main:
        return None
    return db.get_engine(main)


# --- nominator positions (issue 14) -------------------------------------------------------------


@endpoint
def v1_nominator(request: Request) -> Response:
    """One nominator's positions at the latest positions epoch (SS58 or 0x-hex address);
    ?history=1 adds per operator the value per epoch and the deposit/withdrawal events."""
    p = Params(request.query_params, ("history",), strict=True)
    with_history = p.flag("history")
    account = queries.resolve_address(request.path_params["address"])  # 400 when malformed
    cached, headers = not_modified(request)
    if cached is not None:
        return cached

    def compute() -> Response:
        body = queries.nominator_document(engine(), account, history=with_history)
        if body is None:
            return error(404, f"address: no positions of {account.ss58} are stored")
        return json_response(body, headers=headers)

    return from_cache(request, headers, compute)


@endpoint
def v1_operator_nominators(request: Request) -> Response:
    """One operator's nominators at the latest positions epoch, largest first, with their
    count and the top-10 share of effective shares."""
    p = Params(request.query_params, ("limit",), strict=True)
    limit = p.integer("limit", minimum=1, maximum=queries.HOLDERS_MAX_LIMIT, default=50)
    operator_id = parse_integer(
        "id", request.path_params["operator_id"], minimum=0, maximum=2**63 - 1
    )
    cached, headers = not_modified(request)
    if cached is not None:
        return cached

    def compute() -> Response:
        body = queries.operator_nominators_document(engine(), operator_id, limit)
        if body is None:
            return error(404, f"id: unknown operator id {operator_id}")
        return json_response(body, headers=headers)

    return from_cache(request, headers, compute)
