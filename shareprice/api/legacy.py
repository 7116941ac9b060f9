"""The old system's endpoints, compatible: `/api/epochs`, `/api/epochs-v2`, `/api/summary` and
`/api/raw-epochs`, same paths, parameters and row shape, exact (decimal strings, null where the
data has nothing: never the old filler values).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from shareprice import queries
from shareprice.api.params import Params
from shareprice.api.responses import (
    MAX_RAW_BYTES,
    MAX_RAW_LIMIT,
    endpoint,
    engine,
    error,
    from_cache,
    json_response,
    not_modified,
    raw_json_response,
    timeout_ms,
)

# --- the old API --------------------------------------------------------------------------------

_EPOCHS_PARAMS = ("limit", "sample", "health", "operators")


def _epochs(request: Request, version_header: bool) -> Response:
    # The old frontend adds cache-busting parameters of its own: unknown ones are ignored here.
    p = Params(request.query_params, _EPOCHS_PARAMS, strict=False)
    extra = {"x-api-version": "2.0"} if version_header else {}
    limit = p.limit_or_all("limit", maximum=queries.EPOCH_ROWS_MAX_LIMIT)
    sample = p.integer("sample", minimum=1, maximum=queries.EPOCH_ROWS_MAX_SAMPLE)
    operators = p.operator_ids("operators", maximum_count=queries.EPOCH_ROWS_MAX_OPERATORS)
    if p.flag("health"):
        return json_response(queries.epochs_health(engine(), timeout_ms()), headers=extra)
    cached, headers = not_modified(request)
    headers.update(extra)
    if cached is not None:
        cached.headers.update(extra)
        return cached
    return from_cache(request, headers, lambda: _epoch_rows(headers, limit, sample, operators))


def _epoch_rows(
    headers: dict[str, str],
    limit: int | None,
    sample: int | None,
    operators: tuple[int, ...] | None,
) -> Response:
    headers = dict(headers)
    result = queries.epoch_rows(
        engine(), limit=limit, sample=sample, operators=operators, timeout_ms=timeout_ms()
    )
    if result.operators is None:
        headers["x-operators"] = f"all {result.operators_known}"
    elif result.capped:
        headers["x-operators"] = (
            f"largest {len(result.operators)} of {result.operators_known} by latest stake "
            "(operators= names others)"
        )
    else:
        headers["x-operators"] = ",".join(str(o) for o in result.operators)
    return raw_json_response("[" + ",".join(result.rows) + "]", headers=headers)


@endpoint
def epochs(request: Request) -> Response:
    """The old /api/epochs rows (normalized tables)."""
    return _epochs(request, version_header=False)


@endpoint
def epochs_v2(request: Request) -> Response:
    """The old /api/epochs-v2: the same rows, with x-api-version: 2.0."""
    return _epochs(request, version_header=True)


@endpoint
def summary(request: Request) -> Response:
    """The latest normalized epoch: totals, rewards and every operator's price, exact."""
    Params(request.query_params, (), strict=False)
    cached, headers = not_modified(request)
    if cached is not None:
        return cached

    def compute() -> Response:
        text = queries.latest_epoch_summary(engine(), timeout_ms())
        if text is None:
            return error(404, "no epoch is normalized yet (run `shareprice backfill`)")
        return raw_json_response(text, headers=headers)

    return from_cache(request, headers, compute)


@endpoint
def raw_epochs(request: Request) -> Response:
    """The newest stored raw documents, newest first, unchanged."""
    p = Params(request.query_params, ("limit",), strict=False)
    limit = p.integer("limit", minimum=1, maximum=MAX_RAW_LIMIT, default=1)
    assert limit is not None
    documents = queries.raw_epochs(engine(), limit, MAX_RAW_BYTES, timeout_ms())
    parts = [f'{{"epoch":{epoch},"data":{text}}}' for epoch, text in documents]
    return raw_json_response("[" + ",".join(parts) + "]", headers={"Cache-Control": "no-store"})
