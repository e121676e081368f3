"""A document store with a retrieval status table, on litegate.

Built once at startup (the app's lifespan opens the database and applies :data:`MIGRATIONS`),
then shared by every request: ``async def`` routes await its async methods, ``def`` routes and
``asyncio.to_thread`` call its ``*_sync`` methods from worker threads. Both kinds of caller use
one litegate engine, so there is one writer, one read pool and no ``check_same_thread`` trouble.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import litegate

__all__ = ("MIGRATIONS", "STATUSES", "Store")

STATUSES = ("pending", "retrieved")

MIGRATIONS: list[litegate.Migration] = [
    # 1: documents and their retrieval status (one row each)
    """
    CREATE TABLE documents(
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE retrieval(
        doc_id INTEGER PRIMARY KEY REFERENCES documents(id),
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'retrieved')),
        retrievals INTEGER NOT NULL DEFAULT 0,
        last_retrieved_at REAL
    );
    """,
    # 2: the status page and the search filter by these
    """
    CREATE INDEX retrieval_status ON retrieval(status);
    CREATE INDEX documents_title ON documents(title);
    """,
]

_DOC = """
SELECT d.id, d.title, d.body, d.created_at, r.status, r.retrievals, r.last_retrieved_at
FROM documents d JOIN retrieval r ON r.doc_id = d.id
"""


def _doc(row: sqlite3.Row | None) -> dict[str, Any] | None:
    return None if row is None else dict(row)


def _insert(conn: sqlite3.Connection, title: str, body: str) -> int:
    """Both rows of a new document, in the caller's (group-committed) write transaction."""
    cur = conn.execute(
        "INSERT INTO documents(title, body, created_at) VALUES (?, ?, ?)",
        (title, body, time.time()),
    )
    doc_id = cur.lastrowid
    assert doc_id is not None
    conn.execute("INSERT INTO retrieval(doc_id) VALUES (?)", (doc_id,))
    return doc_id


class Store:
    """Documents and their retrieval status. One instance per process, made at startup."""

    def __init__(self, db: litegate.AsyncDatabase) -> None:
        self.db = db
        self.sync_db: litegate.Database = db.as_sync()  # same engine, for threads

    # ---- async (event loop) ----------------------------------------------------------------
    async def add(self, title: str, body: str) -> int:
        """Store a document (pending); returns its id once committed."""
        return await self.db.run_write(_insert, title, body)

    async def get(self, doc_id: int) -> dict[str, Any] | None:
        return _doc(await self.db.query_one(_DOC + "WHERE d.id = ?", (doc_id,)))

    async def search(self, q: str = "", limit: int = 20) -> list[dict[str, Any]]:
        rows = await self.db.query(
            _DOC + "WHERE d.title LIKE ? ORDER BY d.id DESC LIMIT ?", (f"%{q}%", limit)
        )
        return [dict(r) for r in rows]

    async def mark_retrieved(self, doc_id: int) -> dict[str, Any] | None:
        """Read-modify-write in one transaction: count one more retrieval. None if unknown."""
        async with self.db.transaction() as tx:
            n = await tx.query_value("SELECT retrievals FROM retrieval WHERE doc_id = ?", (doc_id,))
            if n is None:
                return None
            now = time.time()
            await tx.execute(
                "UPDATE retrieval SET status = 'retrieved', retrievals = ?, last_retrieved_at = ? "
                "WHERE doc_id = ?",
                (n + 1, now, doc_id),
            )
        return {"id": doc_id, "status": "retrieved", "retrievals": n + 1}

    # ---- sync (worker threads: `def` routes, asyncio.to_thread) ---------------------------
    def search_sync(self, q: str = "", limit: int = 20) -> list[dict[str, Any]]:
        rows = self.sync_db.query(
            _DOC + "WHERE d.title LIKE ? ORDER BY d.id DESC LIMIT ?", (f"%{q}%", limit)
        )
        return [dict(r) for r in rows]

    def retrieval_status_sync(self) -> dict[str, int]:
        """Counts by status, the number of documents and of retrievals, in one snapshot."""
        with self.sync_db.snapshot() as snap:
            by_status = dict(snap.query("SELECT status, count(*) FROM retrieval GROUP BY status"))
            documents = snap.query_value("SELECT count(*) FROM documents")
            retrievals = snap.query_value("SELECT coalesce(sum(retrievals), 0) FROM retrieval")
        counts = {s: int(by_status.get(s, 0)) for s in STATUSES}
        return {**counts, "documents": int(documents), "retrievals": int(retrievals)}
