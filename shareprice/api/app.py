"""The API app: its routes table, /api/docs and /api/openapi.json, 404/405/500 as JSON, CORS.

The handlers live in `legacy` (the old system's endpoints) and `v1` (the versioned API); what
they share (engine under a timeout, JSON errors, the data-version ETag and cache) in
`responses`. CORS is closed unless SHAREPRICE_API_CORS names origins.
"""

from __future__ import annotations

import html
import logging
import os
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from shareprice.api.legacy import epochs, epochs_v2, raw_epochs, summary
from shareprice.api.responses import API_REVISION, CORS_VAR, error, json_response
from shareprice.api.v1 import (
    v1_band,
    v1_checks_latest,
    v1_health,
    v1_nominator,
    v1_operator_nominators,
    v1_operators,
    v1_progress,
    v1_series,
)

log = logging.getLogger("shareprice.api")


# --- documentation ------------------------------------------------------------------------------

#: path -> (summary, parameters: name -> description). The one list /api/docs and
#: /api/openapi.json are made from.
ENDPOINTS: dict[str, tuple[str, dict[str, str]]] = {
    "/api/epochs": (
        "Old-frontend epoch rows, ascending by epoch, from the normalized tables.",
        {
            "limit": "positive integer up to 5000, or all (default all): the newest N epochs",
            "sample": "positive integer up to 20000: evenly spaced rows, always the newest",
            "operators": "comma-separated operator ids to narrow the maps to (default: all "
            "when at most 64, else the 64 largest by latest stake; header x-operators)",
            "health": "1: {sample, rewardsAvailable, normalizedDataAvailable} instead",
        },
    ),
    "/api/epochs-v2": ("Same as /api/epochs, with header x-api-version: 2.0.", {}),
    "/api/summary": ("The latest normalized epoch: totals and every operator's price.", {}),
    "/api/raw-epochs": (
        "The newest stored raw documents, newest first, unchanged.",
        {"limit": "1-100, default 1"},
    ),
    "/api/v1/operators": ("Every operator with metadata, latest state and yields.", {}),
    "/api/v1/series": (
        "Share-price series, downsampled in SQL, exact.",
        {
            "operators": "comma-separated ids, at most 64 (default: the 8 largest)",
            "from": "first epoch (inclusive)",
            "to": "last epoch (inclusive)",
            "last": "the last N epochs (wins over from/to)",
            "max_points": "points per operator, 6-20000 (default 1200)",
            "format": "json (default), csv or parquet (Int128 columns)",
        },
    ),
    "/api/v1/band": (
        "Percentiles of every operator's price per epoch.",
        {"from": "first epoch", "to": "last epoch", "last": "last N epochs",
         "max_points": "epochs kept, 6-20000"},
    ),
    "/api/v1/progress": ("Backfill progress (as `shareprice progress --json`).", {}),
    "/api/v1/checks/latest": ("The latest stored integrity-check run.", {}),
    "/api/v1/health": ("Database reachable, latest epoch, normalized share, replica lag.", {}),
    "/api/v1/nominators/{address}": (
        "One nominator's positions at the latest positions epoch (address: SS58 or 0x-hex; "
        "shares = effective shares, value in Shannons); 404 when no position is stored.",
        {"history": "1: add per operator the value per epoch and deposit/withdrawal events"},
    ),
    "/api/v1/operators/{id}/nominators": (
        "One operator's nominators at the latest positions epoch, largest first, with count "
        "and top-10 share.",
        {"limit": "1-1000, default 50"},
    ),
}  # fmt: skip


def openapi_document() -> dict[str, Any]:
    paths = {}
    for path, (text, parameters) in ENDPOINTS.items():
        paths[path] = {
            "get": {
                "summary": text,
                "parameters": [
                    {"name": n, "in": "query", "required": False, "description": d,
                     "schema": {"type": "string"}}
                    for n, d in parameters.items()
                ],
                "responses": {
                    "200": {"description": "OK"},
                    "304": {"description": "Not modified (If-None-Match matched the ETag)"},
                    "400": {"description": '{"error": "<parameter>: <what is wrong>"}'},
                    "503": {"description": "Database unavailable (masked message)"},
                },
            }
        }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "shareprice API", "version": API_REVISION},
        "paths": paths,
    }


async def openapi(request: Request) -> Response:
    return json_response(openapi_document())


async def docs(request: Request) -> Response:
    items = []
    for path, (text, parameters) in ENDPOINTS.items():
        rows = "".join(
            f"<li><code>{html.escape(n)}</code>: {html.escape(d)}</li>"
            for n, d in parameters.items()
        )
        items.append(
            f"<h2><code>GET {html.escape(path)}</code></h2><p>{html.escape(text)}</p>"
            + (f"<ul>{rows}</ul>" if rows else "")
        )
    page = (
        "<!doctype html><meta charset=utf-8><title>shareprice API</title>"
        "<h1>shareprice API</h1><p>Exact integers are decimal strings; errors are "
        '<code>{"error": "..."}</code>. Machine-readable: <a href="/api/openapi.json">'
        "/api/openapi.json</a>.</p>" + "".join(items)
    )
    return HTMLResponse(page)


async def not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    if status == 405:
        return error(405, "only GET is served")
    return error(status, f"no such endpoint: {request.url.path} (see /api/docs)")


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("API request failed", exc_info=exc)
    return error(500, "internal error (the server log has the details)")


def cors_middleware() -> list[Middleware]:
    """CORS only when SHAREPRICE_API_CORS names origins (comma-separated, or *): closed by
    default, so no other site's page can read the API through a visitor's browser."""
    origins = [o.strip() for o in os.environ.get(CORS_VAR, "").split(",") if o.strip()]
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET"],
            allow_headers=["If-None-Match"],
            expose_headers=["ETag", "x-api-version", "x-operators"],
        )
    ]


def create_app() -> Starlette:
    routes = [
        Route("/epochs", epochs),
        Route("/epochs-v2", epochs_v2),
        Route("/summary", summary),
        Route("/raw-epochs", raw_epochs),
        Route("/v1/operators", v1_operators),
        Route("/v1/series", v1_series),
        Route("/v1/band", v1_band),
        Route("/v1/progress", v1_progress),
        Route("/v1/checks/latest", v1_checks_latest),
        Route("/v1/health", v1_health),
        Route("/v1/nominators/{address}", v1_nominator),
        Route("/v1/operators/{operator_id}/nominators", v1_operator_nominators),
        Route("/openapi.json", openapi),
        Route("/docs", docs),
    ]
    return Starlette(
        routes=routes,
        middleware=cors_middleware(),
        exception_handlers={HTTPException: not_found, Exception: server_error},
    )
