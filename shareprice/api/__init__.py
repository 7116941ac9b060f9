"""The HTTP API, served by the dashboard's own Streamlit server under /api.

Owns the routes (`app`): the old system's endpoints, compatible (`/api/epochs`, `/api/epochs-v2`,
`/api/summary`, `/api/raw-epochs`), and a versioned API for new clients (`/api/v1/...`), with
parameter validation (`params`), JSON errors, ETags and CORS. Routes are thin: every answer comes
from shareprice.queries (plus the backfill's progress summary, the integrity history and the
analytics-view state, read through their packages' public names).

Plain Starlette, not FastAPI: Streamlit already runs on Starlette, so the API adds no dependency;
FastAPI's /docs loads Swagger UI from a CDN (blank on a closed network), its validation answers
422 with its own body where the old API's clients expect 400 `{"error": ...}`, and pydantic
models would duplicate the exact-integer rules the query layer already keeps. /api/docs and
/api/openapi.json are made here from one table of the endpoints.

May import: shareprice.queries, shareprice.store, shareprice.errors, shareprice.backfill.status,
shareprice.checks, starlette, polars. Never: streamlit, shareprice.ui, shareprice.cli,
shareprice.bench.
"""

from starlette.routing import BaseRoute, Mount

from shareprice.api.app import create_app
from shareprice.api.serving import lifespan


def routes() -> list[BaseRoute]:
    """What `st.App(..., routes=...)` mounts: the API app under /api."""
    return [Mount("/api", app=create_app())]


__all__ = ["create_app", "lifespan", "routes"]
