"""A bare ASGI app (no framework) on litegate's AsyncDatabase, for the server tests."""

from __future__ import annotations

import json
import os
from typing import Any

import litegate

_db: litegate.AsyncDatabase | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _db
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _db = await litegate.connect_async(os.environ["ASGI_TEST_DB"])
                await _db.migrate(["CREATE TABLE t(id INTEGER PRIMARY KEY, tag TEXT UNIQUE)"])
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _db is not None:
                    await _db.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert _db is not None
    path = scope["path"]
    if path == "/write":
        tag = scope["query_string"].decode().removeprefix("tag=")
        res = await _db.execute("INSERT INTO t(tag) VALUES (?)", (tag,))
        body: Any = {"id": res.lastrowid}
    elif path == "/count":
        body = {"n": await _db.query_value("SELECT count(*) FROM t")}
    else:
        body = {"error": "not found"}
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200 if "error" not in body else 404,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})
