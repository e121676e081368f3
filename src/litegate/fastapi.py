"""FastAPI integration: the Starlette lifespan, ``Depends`` helpers and a stats router.

Install with ``pip install 'litegate[fastapi]'``::

    from fastapi import FastAPI
    import litegate.fastapi as lgf

    app = FastAPI(lifespan=lgf.lifespan("app.db", migrations=[...]))
    app.include_router(lgf.stats_router())           # GET /_litegate, GET /_litegate/ui

    @app.post("/add")
    async def add(db: lgf.DB) -> dict[str, int]:     # AsyncDatabase
        await db.execute("INSERT INTO t(x) VALUES (?)", (1,))
        return {"ok": 1}

    @app.get("/count")
    def count(db: lgf.SyncDB) -> int:                # Database, on a worker thread
        return db.query_value("SELECT count(*) FROM t")

Both dependencies resolve to the same engine. They are ``async def``, so FastAPI resolves them
on the event loop (a sync dependency would cost a worker-thread hop per request).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from . import starlette as _starlette
from ._database import AsyncDatabase, Database
from .starlette import lifespan as lifespan
from .starlette import prometheus_text as prometheus_text

__all__ = (
    "DB",
    "SyncDB",
    "get_db",
    "get_sync_db",
    "lifespan",
    "prometheus_text",
    "stats_router",
)


async def get_db(request: Request) -> AsyncDatabase:
    """The :class:`AsyncDatabase` opened by :func:`lifespan` (a ``Depends`` target).

    :raises RuntimeError: the app has no litegate lifespan (or it has not run)
    """
    return _starlette.get_db(request)


async def get_sync_db(request: Request) -> Database:
    """A sync :class:`Database` on the same engine, for ``def`` routes (a ``Depends`` target).

    :raises RuntimeError: the app has no litegate lifespan (or it has not run)
    """
    return _starlette.get_sync_db(request)


DB = Annotated[AsyncDatabase, Depends(get_db)]
"""``async def route(db: DB)``: the app's :class:`AsyncDatabase`."""

SyncDB = Annotated[Database, Depends(get_sync_db)]
"""``def route(db: SyncDB)``: a :class:`Database` on the same engine."""


def stats_router(
    prefix: str = "/_litegate",
    *,
    state_key: str = "db",
    include_in_schema: bool = True,
    tags: list[str] | None = None,
) -> APIRouter:
    """An ``APIRouter`` with ``GET {prefix}`` (JSON stats; Prometheus text on
    ``Accept: text/plain`` or ``?format=prometheus``) and ``GET {prefix}/ui`` (the live page).

    The endpoints are :func:`litegate.starlette.stats_routes`' own.

    :param include_in_schema: list the two routes in the OpenAPI schema
    :param tags: OpenAPI tags (default ``["litegate"]``)
    """
    router = APIRouter(tags=list(tags) if tags is not None else ["litegate"])
    response_classes: dict[str, Any] = {"litegate_stats": JSONResponse, "litegate_ui": HTMLResponse}
    summaries = {
        "litegate_stats": "litegate stats (JSON, or Prometheus text)",
        "litegate_ui": "litegate live stats page",
    }
    for route in _starlette.stats_routes(prefix, state_key=state_key):
        router.add_api_route(
            route.path,
            route.endpoint,
            methods=["GET"],
            name=route.name,
            summary=summaries.get(route.name),
            response_class=response_classes.get(route.name, JSONResponse),
            include_in_schema=include_in_schema,
        )
    return router
