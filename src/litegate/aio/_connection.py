"""``litegate.aio.Connection``: aiosqlite's connection on the shared engine (its state and
where each statement runs: :mod:`._core`)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import warnings
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from typing import Any, Self, cast

from .._errors import Error
from .._types import ExcType, Tb
from ..sqlite3 import _sql
from ..sqlite3._session import translate
from ..sqlite3._shared import detach, detach_unless_last
from ._core import ConnectionCore
from ._cursor import Cursor, Result, result
from ._jobs import dump

__all__ = ("Connection", "connect")


class Connection(ConnectionCore):
    """An aiosqlite connection on litegate's shared engine (see :mod:`._core`)."""

    def __await__(self) -> Generator[Any, None, Self]:
        return self._connect().__await__()

    async def __aenter__(self) -> Self:
        return await self

    async def __aexit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        await self.close()

    async def close(self) -> None:
        """Roll back the transactions still open on it (every task's), then detach from the
        engine (the last connection to the file closes it, in a thread). Idempotent."""
        shared = self._take_down()
        try:
            if shared is not None and not detach_unless_last(shared):  # (the last: it closes
                # the engine, in a thread; shielded: a cancelled close still lets it go)
                await asyncio.shield(asyncio.to_thread(detach, shared, self._timeout))
        finally:
            self._done = True

    def stop(self) -> asyncio.Future[None] | None:
        """Close without waiting (aiosqlite's ``stop``): open transactions are rolled back and
        the engine, if this was its last connection, starts closing. Returns a finished future
        when called on a running loop, else ``None`` (aiosqlite asks for the thread's current
        loop, which warns on Python 3.12+ when none is set)."""
        shared = self._take_down()
        if shared is not None:
            detach(shared, self._timeout, wait=False)
        self._done = True
        try:  # (the running loop only: asking for "the current" one with none is deprecated)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        except RuntimeError:
            return None
        fut.set_result(None)
        return fut

    def __del__(self) -> None:
        if self._shared is not None and not self._closed:
            warnings.warn(
                f"{self!r} was deleted before being closed. Please use 'async with' or "
                "'.close()' to close the connection properly.",
                ResourceWarning,
                stacklevel=1,
            )
            self.stop()

    # ---- the calling task's session ----------------------------------------------------------

    @result
    async def cursor(self) -> Cursor:
        self._live()
        return Cursor(self)

    def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> Result[Cursor]:
        return Result(self._execute(sql, () if parameters is None else parameters))

    async def _execute(self, sql: str, params: Any) -> Cursor:
        return Cursor(self, await self.run_statement(sql, params))  # (it checks we are open)

    @result
    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> Cursor:
        self._live()
        cur = Cursor(self)
        await cur.executemany(sql, parameters)
        return cur

    @result
    async def executescript(self, sql_script: str) -> Cursor:
        self._live()
        cur = Cursor(self)
        await cur.executescript(sql_script)
        return cur

    @result
    async def execute_insert(self, sql: str, parameters: Iterable[Any] | None = None) -> Any:
        """The statement, then its row id as a one-column row (aiosqlite's
        ``SELECT last_insert_rowid()``, kept per task here: another task's insert on the
        shared writer does not change it)."""
        self._live()
        cur = Cursor(self)
        await cur.execute(sql, parameters)
        if self.row_factory is None:
            return (cur.lastrowid,)
        rows = await self.execute_fetchall("SELECT ? AS 'last_insert_rowid()'", (cur.lastrowid,))
        return rows[0]

    @result
    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] | None = None) -> Any:
        out = await self.run_statement(sql, () if parameters is None else parameters)
        return out.rows

    async def commit(self) -> None:
        """Commit the calling task's transaction (no other task's; a task started inside a
        transaction is part of it, as ``asyncio.shield`` and ``wait_for`` make them)."""
        self._live()
        s = self._session()
        await self._end(s, commit=True)

    async def rollback(self) -> None:
        """Roll back the calling task's transaction (no other task's; see :meth:`commit`)."""
        self._live()
        s = self._session()
        await self._end(s, commit=False)

    @property
    def in_transaction(self) -> bool:
        """Whether the calling task has a transaction open."""
        self._live()
        return self._session().lease is not None

    @property
    def isolation_level(self) -> str | None:
        self._live()
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._live()
        self._isolation_level = _sql.check_level(value)

    @property
    def read_only(self) -> bool:
        """litegate's extension, for the calling task: its next transactions are read-only
        snapshots on a reader (the SQLAlchemy dialect's ``litegate_read_only``)."""
        return self._session().read_only

    @read_only.setter
    def read_only(self, value: bool) -> None:
        self._session().read_only = bool(value)

    @property
    def total_changes(self) -> int:
        """Rows changed through this connection (every task's)."""
        self._live()
        with self._lock:
            return self._changes

    async def create_function(
        self, name: str, num_params: int, func: Callable[..., Any], deterministic: bool = False
    ) -> None:
        """Register a function on every connection of the shared engine."""
        self._register("create_function", name, num_params, func, deterministic=deterministic)

    async def set_trace_callback(self, handler: Callable[[str], object] | None) -> None:
        self._live()
        self._trace = handler
        self._recustom()

    async def set_progress_handler(self, handler: Callable[[], object] | None, n: int) -> None:
        self._live()
        self._progress = None if handler is None else (handler, n)
        self._recustom()

    async def set_authorizer(self, authorizer_callback: Callable[..., int] | None) -> None:
        self._live()
        self._authorizer = authorizer_callback
        self._recustom()

    async def enable_load_extension(self, value: bool) -> None:
        self._live()
        if not hasattr(sqlite3.Connection, "enable_load_extension"):
            raise AttributeError("'sqlite3.Connection' object has no attribute 'load_extension'")
        raise sqlite3.NotSupportedError(
            "extensions are not loaded into litegate's shared engine from one connection: load "
            "them on every engine connection with litegate={'on_connect': ...}"
        )

    async def load_extension(self, path: str) -> None:
        await self.enable_load_extension(True)

    async def iterdump(self) -> AsyncIterator[str]:
        """The database as SQL text (inside the calling task's transaction if it has one)."""
        engine = self._live()
        s = self._session()
        if s.lease is not None:
            lines = await s.lease.run(dump, (), None, None)
        else:
            lines = await engine.read_async(dump, (), self._timeout, None, None)
        for line in lines:
            yield line

    async def backup(
        self,
        target: Connection | sqlite3.Connection,
        *,
        pages: int = 0,
        progress: Callable[[int, int, int], object] | None = None,
        name: str = "main",
        sleep: float = 0.250,
    ) -> None:
        """Copy the database into ``target`` (another ``litegate.aio`` connection: on its
        write lane; or a ``sqlite3`` connection), from a reader (off the loop)."""
        engine = self._live()
        into = target.engine if isinstance(target, Connection) else None
        timeout, pages = self._timeout, pages or -1  # (0: aiosqlite's "all", as -1 is)

        def copy(src: sqlite3.Connection) -> None:
            def to(dst: sqlite3.Connection) -> None:
                src.backup(dst, pages=pages, progress=progress, name=name, sleep=sleep)

            if into is None:
                to(cast(sqlite3.Connection, target))
                return
            lease = into.lease(timeout, "the backup")
            try:
                lease.run(to, (), None, None)
            finally:
                lease.release()

        try:
            await engine.read_async(copy, (), None, None, None)
        except Error as exc:
            raise translate(exc) from exc

    @property
    def _conn(self) -> _Factories:
        """aiosqlite's private ``sqlite3.Connection``, as far as ORMs reach for it: Tortoise
        sets ``_connection._conn.row_factory``. Only the factories (the connection's own);
        the engine's connections are shared and not handed out."""
        return _Factories(self)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<litegate.aio.Connection {state} at {id(self):#x}>"


class _Factories:
    """What :attr:`Connection._conn` gives: the connection's row and text factories."""

    __slots__ = ("_of",)

    def __init__(self, of: Connection) -> None:
        self._of = of

    @property
    def row_factory(self) -> Any:
        return self._of.row_factory

    @row_factory.setter
    def row_factory(self, value: Any) -> None:
        self._of.row_factory = value

    @property
    def text_factory(self) -> Any:
        return self._of.text_factory

    @text_factory.setter
    def text_factory(self, value: Any) -> None:
        self._of.text_factory = value


def connect(
    database: str | bytes | os.PathLike[str] | Any,
    *,
    iter_chunk_size: int = 64,
    loop: asyncio.AbstractEventLoop | None = None,
    **kwargs: Any,
) -> Connection:
    """aiosqlite's ``connect``: a connection to ``await`` (or ``async with``). ``kwargs`` are
    ``sqlite3.connect``'s (``litegate=...``: the engine's options, as ``litegate.sqlite3``)."""
    if loop is not None:
        warnings.warn(
            "aiosqlite.connect() no longer uses the `loop` parameter",
            DeprecationWarning,
            stacklevel=2,
        )
    if callable(database) and not isinstance(database, os.PathLike):
        raise TypeError("connect() takes a path")
    return Connection(database, iter_chunk_size, **kwargs)
