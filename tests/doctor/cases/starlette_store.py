"""A Starlette app whose store is built in the lifespan and called via asyncio.to_thread.

The store's connection is made on the event loop's thread (in the lifespan) and used from
worker threads: sqlite3 raises ProgrammingError on the first request.
"""

import asyncio
import contextlib
import sqlite3

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


class Store:
    def __init__(self, path):
        self._conn = sqlite3.connect(path)
        self._conn.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")

    def add(self, name):
        self._insert(name)
        self._conn.commit()  # expect: LG101

    def _insert(self, name):
        self._conn.execute("INSERT INTO items (name) VALUES (?)", (name,))  # expect: LG101

    def count(self):
        return self._conn.execute("SELECT count(*) FROM items").fetchone()[0]  # expect: LG101

    def close(self):
        self._conn.close()


@contextlib.asynccontextmanager
async def lifespan(app):
    app.state.store = Store("store.db")
    yield
    app.state.store.close()


async def add_item(request):
    body = await request.json()
    await asyncio.to_thread(request.app.state.store.add, body["name"])
    return JSONResponse({"ok": True})


async def status(request):
    store = request.app.state.store
    count = await asyncio.to_thread(store.count)
    return JSONResponse({"count": count})


app = Starlette(
    routes=[Route("/items", add_item, methods=["POST"]), Route("/status", status)],
    lifespan=lifespan,
)
