"""The same store app written the naive way, for comparison. Do not copy it.

This is how the code usually looks before litegate: the store opens a ``sqlite3.Connection``
in ``__init__`` (at startup, on the event loop's thread) and runs its schema there; quick calls
are made directly from ``async def`` routes, slower ones are pushed to a thread with
``asyncio.to_thread`` (or a ``def`` route) so they "don't block the loop". Run it with::

    STORE_DB=/tmp/naive.db uvicorn litegate._demo.store_app.naive_app:app --workers 2

What goes wrong:

* every call made from another thread fails with ``sqlite3.ProgrammingError: SQLite objects
  created in a thread can only be used in that same thread`` (a 500);
* the direct calls block the event loop while SQLite works and while it waits for the other
  worker process's lock on the rollback-journal file (up to the 5 s busy timeout);
* the read-then-update of "mark retrieved" is not one transaction, so two processes can lose
  an update between them.

``NAIVE_CHECK_SAME_THREAD=0`` applies the usual next "fix" (``check_same_thread=False``), which
trades the ProgrammingError for threads interleaving on one connection and its transaction,
and ``database is locked`` under load.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from .routes import api_routes

__all__ = ("NaiveStore", "app")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents(
    id INTEGER PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS retrieval(
    doc_id INTEGER PRIMARY KEY REFERENCES documents(id),
    status TEXT NOT NULL DEFAULT 'pending', retrievals INTEGER NOT NULL DEFAULT 0,
    last_retrieved_at REAL);
CREATE INDEX IF NOT EXISTS retrieval_status ON retrieval(status);
"""

_DOC = """
SELECT d.id, d.title, d.body, d.created_at, r.status, r.retrievals, r.last_retrieved_at
FROM documents d JOIN retrieval r ON r.doc_id = d.id
"""


class NaiveStore:
    """Documents and their retrieval status on one plain sqlite3 connection."""

    def __init__(self, path: str) -> None:
        check = os.environ.get("NAIVE_CHECK_SAME_THREAD", "1") != "0"
        self.conn = sqlite3.connect(path, check_same_thread=check)
        self.conn.row_factory = sqlite3.Row
        self.conn.executescript(_SCHEMA)  # "migrations"

    def add(self, title: str, body: str) -> int:
        cur = self.conn.execute(
            "INSERT INTO documents(title, body, created_at) VALUES (?, ?, ?)",
            (title, body, time.time()),
        )
        doc_id = cur.lastrowid
        assert doc_id is not None
        self.conn.execute("INSERT INTO retrieval(doc_id) VALUES (?)", (doc_id,))
        self.conn.commit()
        return doc_id

    def get(self, doc_id: int) -> dict[str, Any] | None:
        row = self.conn.execute(_DOC + "WHERE d.id = ?", (doc_id,)).fetchone()
        return None if row is None else dict(row)

    def search(self, q: str = "", limit: int = 20) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            _DOC + "WHERE d.title LIKE ? ORDER BY d.id DESC LIMIT ?", (f"%{q}%", limit)
        ).fetchall()
        return [dict(r) for r in rows]

    def mark_retrieved(self, doc_id: int) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT retrievals FROM retrieval WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        if row is None:
            return None
        n = row[0] + 1
        self.conn.execute(
            "UPDATE retrieval SET status = 'retrieved', retrievals = ?, last_retrieved_at = ? "
            "WHERE doc_id = ?",
            (n, time.time(), doc_id),
        )
        self.conn.commit()
        return {"id": doc_id, "status": "retrieved", "retrievals": n}

    def retrieval_status(self) -> dict[str, int]:
        by_status = dict(
            self.conn.execute("SELECT status, count(*) FROM retrieval GROUP BY status").fetchall()
        )
        documents = self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        retrievals = self.conn.execute(
            "SELECT coalesce(sum(retrievals), 0) FROM retrieval"
        ).fetchone()[0]
        counts = {s: int(by_status.get(s, 0)) for s in ("pending", "retrieved")}
        return {**counts, "documents": int(documents), "retrievals": int(retrievals)}

    def close(self) -> None:
        self.conn.close()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    store = NaiveStore(os.environ.get("STORE_DB", "store.db"))
    try:
        yield {"store": store}
    finally:
        store.close()


def _store(request: Request) -> NaiveStore:
    store: NaiveStore = request.state.store
    return store


async def add_document(request: Request) -> JSONResponse:
    data = await request.json()
    doc_id = _store(request).add(data["title"], data.get("body", ""))
    return JSONResponse({"id": doc_id}, status_code=201)


async def get_document(request: Request) -> JSONResponse:
    doc = _store(request).get(request.path_params["doc_id"])
    if doc is None:
        return JSONResponse({"error": "no such document"}, status_code=404)
    return JSONResponse(doc)


def list_documents(request: Request) -> JSONResponse:  # a `def` route: runs on a thread
    q = request.query_params.get("q", "")
    limit = int(request.query_params.get("limit", "20"))
    return JSONResponse(_store(request).search(q, limit))


async def mark_retrieved(request: Request) -> JSONResponse:
    result = _store(request).mark_retrieved(request.path_params["doc_id"])
    if result is None:
        return JSONResponse({"error": "no such document"}, status_code=404)
    return JSONResponse(result)


async def retrieval_status(request: Request) -> JSONResponse:
    counts = await asyncio.to_thread(_store(request).retrieval_status)  # "don't block the loop"
    return JSONResponse({**counts, "pid": os.getpid()})


app = Starlette(
    routes=[
        *api_routes(add_document, list_documents, get_document, mark_retrieved, retrieval_status),
    ],
    lifespan=lifespan,
)
