"""The document store served by Starlette, on litegate.

Run it (several worker processes share the one file; ``pip install 'litegate[starlette]'``)::

    STORE_DB=/tmp/store.db uvicorn litegate._demo.store_app.app:app --workers 2

Routes:

=========================================  ===================================================
``POST /api/documents``                    add ``{"title", "body"}``: 201 ``{"id"}`` (write)
``GET /api/documents/{id}``                one document with its status, or 404 (read)
``GET /api/documents?q=&limit=``           list/search by title (a ``def`` route: a thread)
``POST /api/documents/{id}/retrieved``     count a retrieval (read-modify-write transaction)
``GET /api/retrieval/status``              counts by status (``asyncio.to_thread``)
``GET /_litegate``, ``GET /_litegate/ui``  engine stats (JSON, Prometheus), a live page
=========================================  ===================================================
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

import litegate.starlette as lgs

from .routes import api_routes
from .store import MIGRATIONS, Store

__all__ = ("app", "db_path")


def db_path() -> str:
    """The database file: ``$STORE_DB`` (default ``store.db`` in the working directory)."""
    return os.environ.get("STORE_DB", "store.db")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    # litegate's lifespan opens the database and migrates it (safe with several workers
    # starting at once); the store is built once on top of it and shared by every request.
    async with lgs.lifespan(db_path(), migrations=MIGRATIONS)(app) as state:
        yield {**state, "store": Store(state["db"])}


def _store(request: Request) -> Store:
    store: Store = request.state.store
    return store


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def _id(request: Request) -> int:
    doc_id: int = request.path_params["doc_id"]
    return doc_id


async def add_document(request: Request) -> JSONResponse:
    try:
        data = await request.json()
    except ValueError:
        return _bad("body must be JSON")
    if not isinstance(data, dict):
        return _bad("body must be a JSON object")
    title, body = data.get("title"), data.get("body", "")
    if not isinstance(title, str) or not title or not isinstance(body, str):
        return _bad("title (a non-empty string) and body (a string) are required")
    doc_id = await _store(request).add(title, body)
    return JSONResponse({"id": doc_id}, status_code=201)


async def get_document(request: Request) -> JSONResponse:
    doc = await _store(request).get(_id(request))
    if doc is None:
        return JSONResponse({"error": "no such document"}, status_code=404)
    return JSONResponse(doc)


def list_documents(request: Request) -> JSONResponse:
    # A `def` route: Starlette runs it on a worker thread; the store's sync path serves it.
    q = request.query_params.get("q", "")
    try:
        limit = min(max(int(request.query_params.get("limit", "20")), 1), 100)
    except ValueError:
        return _bad("limit must be an integer")
    return JSONResponse(_store(request).search_sync(q, limit))


async def mark_retrieved(request: Request) -> JSONResponse:
    result = await _store(request).mark_retrieved(_id(request))
    if result is None:
        return JSONResponse({"error": "no such document"}, status_code=404)
    return JSONResponse(result)


async def retrieval_status(request: Request) -> JSONResponse:
    # The call that fails with a plain sqlite3 connection made at startup.
    counts = await asyncio.to_thread(_store(request).retrieval_status_sync)
    return JSONResponse({**counts, "pid": os.getpid()})


app = Starlette(
    routes=[
        *api_routes(add_document, list_documents, get_document, mark_retrieved, retrieval_status),
        *lgs.stats_routes(),
    ],
    # 503 + Retry-After (not 500) while shutting down or when a wait times out
    exception_handlers=lgs.exception_handlers,
    lifespan=lifespan,
)
