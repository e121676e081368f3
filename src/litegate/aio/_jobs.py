"""What a ``litegate.aio`` connection runs on the engine's connections: a statement as the
connection would run it on one of its own (:func:`_run_job`), the statements
``litegate.sqlite3``'s rules run (:func:`_by_dropin_rules`: PRAGMA settings, ``VACUUM`` and the
like), and ``iterdump``."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any, Protocol, cast

from .._engine import AsyncReadLease, Engine
from ..sqlite3 import _sql
from ..sqlite3._pragmas import on_writer, outside, set_pragma
from ..sqlite3._session import Session as DropinSession
from ..sqlite3._shared import Settings, install_settings, remove_settings
from ._cursor import Outcome
from ._session import _Session

__all__ = ("dump",)


class _Owner(Protocol):
    """The connection a job runs for: it records the engine connection running the job
    (``interrupt()`` interrupts those)."""

    def _started_on(self, conn: sqlite3.Connection) -> None: ...

    def _ended_on(self, conn: sqlite3.Connection) -> None: ...


class _ThroughLoop:
    """An async lease seen from a worker thread as ``litegate.sqlite3``'s rules use a lease:
    ``run`` sends the job to the lease on its loop and waits for it (the loop is free: the
    task that holds the lease awaits the thread)."""

    def __init__(self, lease: AsyncReadLease, loop: asyncio.AbstractEventLoop) -> None:
        self.lease = lease
        self.loop = loop

    def run(self, fn: Callable[..., Any], args: Any, sql: str | None, limit: Any) -> Any:
        done = asyncio.run_coroutine_threadsafe(self.lease.run(fn, args, sql, limit), self.loop)
        return done.result()


async def _by_dropin_rules(
    engine: Engine,
    s: _Session,
    kind: int,
    sql: str,
    params: Any,
    many: bool,
    timeout: float,
    owner: _Owner,
) -> Any:
    """PRAGMA settings, ``PRAGMA foreign_keys``, ``VACUUM`` and the like: by
    ``litegate.sqlite3``'s rules for them (:mod:`litegate.sqlite3._pragmas`), on the
    connection's engine, in a thread (they take the lane, or a side connection). Inside the
    task's transaction they run in it: the thread sends them to its lease on the loop."""
    held = s.lease
    loop = asyncio.get_running_loop()
    stand_in = DropinSession()
    stand_in.reading = s.reading
    if held is not None:
        stand_in.lease = cast(Any, _ThroughLoop(held, loop))
    job = (sql, params, many, None, None, None, owner)

    def run() -> Any:
        if kind == _sql.SET_PRAGMA:
            return set_pragma(engine, timeout, stand_in, sql)
        side = outside if kind == _sql.NO_TRANSACTION else on_writer
        return side(engine, timeout, stand_in, _run_job, job)

    return await asyncio.to_thread(run)


def dump(conn: sqlite3.Connection) -> list[str]:
    return list(conn.iterdump())


def _run_job(
    conn: sqlite3.Connection,
    sql: str,
    params: Any,
    many: bool,
    rf: Any,
    prepare: Any,
    settings: Settings | None,
    owner: _Owner,
) -> Outcome:
    """A statement on an engine connection the caller owns now, as the connection would run
    it on one of its own: its functions, hooks, text and row factories."""
    if prepare is not None:
        prepare(conn)
    owner._started_on(conn)
    if settings is not None:
        install_settings(conn, settings)
    try:
        cur = conn.cursor()
        before = conn.total_changes
        try:
            cur.row_factory = rf
            if many:
                cur.executemany(sql, params)
            else:
                cur.execute(sql, params)
            description = cur.description
            rows = cur.fetchall() if description is not None else []
            # (the writer's last inserted row is this statement's only if it changed rows)
            lastrowid = cur.lastrowid if conn.total_changes != before else None
            return Outcome(rows, description, cur.rowcount, lastrowid)
        finally:
            cur.close()
    finally:
        owner._ended_on(conn)
        if settings is not None:
            remove_settings(conn, settings)
