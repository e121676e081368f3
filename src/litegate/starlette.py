"""Starlette integration: a lifespan that owns the database, request access, a stats endpoint.

Install with ``pip install 'litegate[starlette]'``::

    from starlette.applications import Starlette
    from starlette.routing import Route
    import litegate.starlette as lgs

    async def add(request):
        db = lgs.get_db(request)                      # AsyncDatabase
        await db.execute("INSERT INTO t(x) VALUES (?)", (1,))
        ...

    def report(request):                              # a sync route runs on a worker thread
        db = lgs.get_sync_db(request)                 # Database on the same engine
        ...

    app = Starlette(
        routes=[Route("/add", add, methods=["POST"]), *lgs.stats_routes()],
        lifespan=lgs.lifespan("app.db", migrations=[...]),
    )

The lifespan opens the database at startup (applying migrations on the write lane, safe when
several worker processes start at once) and closes it at shutdown, draining queued writes, so
nothing acknowledged is lost on a graceful stop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Unpack

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ._config import ConnectOptions
from ._database import AsyncDatabase, Database, connect_async
from ._errors import Busy, Closed, Timeout
from ._migrations import Migration
from ._stats import Stats

__all__ = (
    "exception_handlers",
    "get_db",
    "get_sync_db",
    "lifespan",
    "prometheus_name",
    "prometheus_text",
    "stats_routes",
)

_APP_STATE_KEY = "litegate_db"


def lifespan(
    path: str | os.PathLike[str],
    *,
    migrations: Sequence[Migration] | None = None,
    state_key: str = "db",
    close_timeout: float | None = None,
    **options: Unpack[ConnectOptions],
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A Starlette ``lifespan=``: opens the database at startup, closes it at shutdown.

    The database is in the lifespan state (``request.state.<state_key>``) and on
    ``app.state``. ``options`` are :func:`litegate.connect`'s.

    :param migrations: applied at startup, all or nothing (``PRAGMA user_version``)
    :param close_timeout: seconds shutdown may spend draining writes (default: the database's)
    """

    @asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        adb = await connect_async(path, **options)
        try:
            if migrations:
                await adb.migrate(migrations)
            app.state.litegate_db = adb
            yield {state_key: adb}
        finally:
            await adb.close(close_timeout)

    return _lifespan


def get_db(request: Request, state_key: str = "db") -> AsyncDatabase:
    """The :class:`AsyncDatabase` opened by :func:`lifespan`, for ``async def`` routes."""
    db = getattr(request.state, state_key, None)
    if db is None:
        db = getattr(request.app.state, _APP_STATE_KEY, None)
    if not isinstance(db, AsyncDatabase):
        raise RuntimeError(
            "no litegate database on this app: pass lifespan=litegate.starlette.lifespan(...) "
            "to Starlette (and run it with a server or TestClient as a context manager)"
        )
    return db


def get_sync_db(request: Request, state_key: str = "db") -> Database:
    """A sync :class:`Database` on the same engine, for ``def`` routes (they run on threads)."""
    return get_db(request, state_key).as_sync()


_HELP = {
    "queue_depth": ("gauge", "Write jobs waiting for the lane"),
    "queue_capacity": ("gauge", "Most write jobs that may wait"),
    "batches": ("counter", "Group commits"),
    "jobs_ok": ("counter", "Write jobs committed"),
    "jobs_failed": ("counter", "Write jobs that failed"),
    "max_batch_size": ("gauge", "Largest group commit"),
    "mean_batch_size": ("gauge", "Mean group commit size (recent)"),
    "reads": ("counter", "Reads served"),
    "transactions": ("counter", "Interactive transactions"),
    "long_holds": ("counter", "Transactions that held the lane past hold_warn"),
    "pool_size": ("gauge", "Reader pool size"),
    "pool_open": ("gauge", "Reader connections open"),
    "pool_in_use": ("gauge", "Reader connections in use"),
    "pool_waiting": ("gauge", "Callers waiting for a reader"),
    "pool_waits": ("counter", "Waits for a reader"),
    "pool_timeouts": ("counter", "Reader waits that timed out"),
    "busy_retries": ("counter", "BEGIN IMMEDIATE retries while another process wrote"),
    "busy_timeouts": ("counter", "Writes that gave up on another process's lock"),
    "checkpoints": ("counter", "WAL checkpoints run by the lane"),
    "wal_bytes": ("gauge", "Size of the -wal file"),
    "wal_warnings": ("counter", "Times the WAL was over wal_warn_bytes"),
}


def prometheus_name(field: str, *, prefix: str = "litegate_") -> tuple[str, str, float]:
    """(metric name, type, scale) for a :class:`Stats` field, in Prometheus conventions:
    counters end in ``_total``; millisecond figures are exported in seconds (``_seconds``)."""
    kind, _ = _HELP.get(field, ("gauge", ""))
    if field.endswith("_ms"):
        return prefix + field[:-3] + "_seconds", "gauge", 0.001
    if kind == "counter":
        return prefix + field + "_total", kind, 1.0
    return prefix + field, kind, 1.0


def prometheus_text(stats: Stats, *, prefix: str = "litegate_") -> str:
    """Render a :class:`Stats` in the Prometheus text exposition format (0.0.4).

    Latency percentiles cover the engine's recent window and are exported as gauges."""
    lines: list[str] = []
    for name, value in stats.as_dict().items():
        if isinstance(value, str):
            continue
        metric, kind, scale = prometheus_name(name, prefix=prefix)
        _, help_text = _HELP.get(name, ("gauge", name.replace("_", " ")))
        if name.endswith("_ms"):
            help_text = f"{name[:-3].replace('_', ' ')} in seconds (recent window)"
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} {kind}")
        lines.append(f"{metric} {value * scale if scale != 1.0 else value}")
    return "\n".join(lines) + "\n"


def _wants_prometheus(request: Request) -> bool:
    if request.query_params.get("format") == "prometheus":
        return True
    accept = request.headers.get("accept", "")
    return "text/plain" in accept and "application/json" not in accept


def stats_routes(prefix: str = "/_litegate", *, state_key: str = "db") -> list[Route]:
    """Routes for ``GET {prefix}`` (JSON; Prometheus text on ``Accept: text/plain`` or
    ``?format=prometheus``) and ``GET {prefix}/ui`` (a live page that refreshes itself)."""

    async def stats_endpoint(request: Request) -> Response:
        stats = await get_db(request, state_key).stats()
        if _wants_prometheus(request):
            return PlainTextResponse(
                prometheus_text(stats), media_type="text/plain; version=0.0.4; charset=utf-8"
            )
        return JSONResponse(stats.as_dict(), headers={"cache-control": "no-store"})

    async def ui_endpoint(request: Request) -> Response:
        get_db(request, state_key)  # a clear error if the lifespan is missing
        return HTMLResponse(_ui_page(prefix))

    return [
        Route(prefix, stats_endpoint, methods=["GET"], name="litegate_stats"),
        Route(prefix + "/ui", ui_endpoint, methods=["GET"], name="litegate_ui"),
    ]


def _ui_page(prefix: str) -> str:
    from ._ui import PAGE

    return PAGE.replace("__STATS_URL__", prefix)


async def _unavailable(request: Request, exc: Exception) -> Response:
    """Closed (shutting down), a timeout or another process's lock: try again, not a bug."""
    retry = "5" if isinstance(exc, Closed) else "1"
    return JSONResponse(
        {"error": type(exc).__name__, "detail": str(exc)},
        status_code=503,
        headers={"retry-after": retry},
    )


exception_handlers: dict[Any, Callable[[Request, Exception], Any]] = {
    Closed: _unavailable,
    Timeout: _unavailable,
    Busy: _unavailable,
}
"""``Starlette(..., exception_handlers=litegate.starlette.exception_handlers)``: answer
``503 Service Unavailable`` with ``Retry-After`` (not 500) when the database is closing (a graceful
shutdown), a wait timed out, or another process held the write lock too long."""
