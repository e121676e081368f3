"""A small Starlette app for the browser test, served by uvicorn in a subprocess.

The database path comes from ``LITEGATE_UI_DB`` (the test sets it to a temporary file).
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import litegate.starlette as lgs

MIGRATIONS = ["CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL)"]


async def add(request: Request) -> JSONResponse:
    """Insert ``n`` rows (query parameter, default 1), one write job each."""
    db = lgs.get_db(request)
    n = int(request.query_params.get("n", "1"))
    for i in range(n):
        await db.execute("INSERT INTO notes(body) VALUES (?)", (f"note {i}",))
    return JSONResponse({"added": n})


async def burst(request: Request) -> JSONResponse:
    """Insert ``n`` rows concurrently (they share group commits)."""
    db = lgs.get_db(request)
    n = int(request.query_params.get("n", "1"))
    await asyncio.gather(
        *(db.execute("INSERT INTO notes(body) VALUES (?)", (f"burst {i}",)) for i in range(n))
    )
    return JSONResponse({"added": n})


def count(request: Request) -> JSONResponse:
    db = lgs.get_sync_db(request)
    return JSONResponse({"notes": db.query_value("SELECT count(*) FROM notes")})


app = Starlette(
    routes=[
        Route("/add", add, methods=["POST"]),
        Route("/burst", burst, methods=["POST"]),
        Route("/count", count, methods=["GET"]),
        *lgs.stats_routes(),
    ],
    lifespan=lgs.lifespan(os.environ.get("LITEGATE_UI_DB", "ui_app.db"), migrations=MIGRATIONS),
)
