"""The dqlite driver (``dqlitedbapi``, the extra ``litegate[dqlite]``, Python >= 3.13) as the
engine's sessions: its asyncio connection, awaited on the caller's loop
(:class:`DriverAsyncSession`, for :mod:`._loop_readers`) or run on a private loop by the
thread that owns it (:class:`DriverSession`, for :class:`~._link.Link`).

Why the asyncio connection for threads too: the driver's own sync API runs every call on a
loop thread of its own; measured here (3 loopback nodes, 2 cores), a statement inside a
transaction took 0.66-0.92 ms that way and 0.44-0.53 ms on a private loop run by the calling
thread (``run_until_complete``): one call, no thread hop. A caller on a thread whose event
loop is running (a sync ``Database`` call made on an event loop: it blocks that loop anyway)
has the call run on a helper thread.

Nothing here runs without the driver: the tests' stand-in (tests/cluster/fake_driver.py)
plugs in at the session protocols instead, and tests/dqlite/ runs these on a real cluster.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ._link import AsyncSession, OpenAsyncSession, OpenSession, Outcome, Session

__all__ = ("DriverAsyncSession", "DriverSession", "dial", "load_driver")

T = TypeVar("T")

_OFF_LOOP = ThreadPoolExecutor(1, thread_name_prefix="litegate-dqlite-call")


def load_driver() -> tuple[OpenSession, OpenAsyncSession]:  # pragma: no cover  (see module)
    """Sessions of the dqlite driver for threads and for event loops, or an ImportError that
    says how to get it."""
    try:
        import dqlitedbapi  # type: ignore[import-not-found,unused-ignore]
        import dqlitedbapi.aio  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ImportError(
            "a dqlite:// database needs the dqlite client: pip install 'litegate[dqlite]' "
            "(Python >= 3.13; dqlite-dbapi supports no older version)"
        ) from exc

    def open_async(
        seed: str,
        name: str,
        *,
        timeout: float,
        busy_timeout: float,
        row_factory: Callable[..., Any] | None,
    ) -> DriverAsyncSession:
        if row_factory is sqlite3.Row:  # (that one takes sqlite3 cursors only: the driver's)
            row_factory = dqlitedbapi.Row
        return DriverAsyncSession(
            dqlitedbapi.aio,
            seed,
            name,
            timeout=timeout,
            busy_timeout=busy_timeout,
            row_factory=row_factory,
        )

    def open_sync(seed: str, name: str, **settings: Any) -> Session:
        return DriverSession(open_async, seed, name, settings)

    return open_sync, open_async


async def dial(  # pragma: no cover  (see the module docstring)
    address: str,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection with Nagle off. (The driver's own dialer passes
    ``happy_eyeballs_delay``, which uvloop refuses, fails under the eager task factory on
    CPython 3.13.0, and left sockets unclosed in 2 of 3 test runs here.)"""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


class DriverAsyncSession:  # pragma: no cover  (see the module docstring)
    """The driver's asyncio connection, on the loop that opened it."""

    def __init__(
        self,
        aio: Any,
        seed: str,
        name: str,
        *,
        timeout: float,
        busy_timeout: float,
        row_factory: Callable[..., Any] | None,
    ) -> None:
        self._conn = aio.connect(
            seed, database=name, timeout=timeout, busy_timeout=busy_timeout, dial_func=dial
        )
        if row_factory is not None:
            self._conn.row_factory = row_factory

    @property
    def closed(self) -> bool:
        return bool(self._conn.closed)

    @property
    def in_transaction(self) -> bool:
        return bool(self._conn.in_transaction)

    async def connect(self) -> None:
        await self._conn.connect()

    async def run(self, sql: str, params: Any, many: bool) -> Outcome:
        cur = self._conn.cursor()
        try:
            if many:
                await cur.executemany(sql, params)
            else:
                await cur.execute(sql, params)
            rows = await cur.fetchall() if cur.description is not None else []
            return Outcome(cur.description, rows, cur.rowcount, cur.lastrowid)
        finally:
            cur.close()

    async def close(self) -> None:
        await self._conn.close()

    def force_close(self) -> None:
        try:
            self._conn.force_close_transport()
        except Exception:  # (it is being discarded)
            pass


class DriverSession:  # pragma: no cover  (see the module docstring)
    """A :class:`DriverAsyncSession` on a private event loop, run by whichever thread owns
    the link at the moment (see the module docstring)."""

    def __init__(
        self, open_async: Callable[..., DriverAsyncSession], seed: str, name: str, settings: Any
    ) -> None:
        self._loop = asyncio.SelectorEventLoop()  # (the stdlib's: see dial)
        self._async: AsyncSession = open_async(seed, name, **settings)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._loop.run_until_complete(coro)
        return _OFF_LOOP.submit(self._loop.run_until_complete, coro).result()

    @property
    def closed(self) -> bool:
        return self._async.closed

    @property
    def in_transaction(self) -> bool:
        return bool(getattr(self._async, "in_transaction", False))

    def connect(self) -> None:
        self._run(self._async.connect())

    def run(self, sql: str, params: Any, many: bool) -> Outcome:
        return self._run(self._async.run(sql, params, many))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._async.close())
        finally:
            self._loop.close()

    def force_close(self) -> None:
        if self._loop.is_closed():
            return
        try:  # (on its loop: the driver then drops the socket at once, not in a callback
            # scheduled on a loop that would never run again -- an unclosed socket)
            self._run(self._drop())
        except Exception:  # (it is being discarded)
            pass
        finally:
            self._loop.close()

    async def _drop(self) -> None:
        self._async.force_close()
