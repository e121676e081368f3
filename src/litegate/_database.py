"""The two public facades and how they are opened.

:class:`Database` (threads) and :class:`AsyncDatabase` (asyncio) get their methods from
:mod:`._sync` and :mod:`._async`; they live together here because each can hand out the other
on the same engine (``as_async`` / ``as_sync``), and this way neither of those modules imports
the other.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Generator
from typing import Any, Unpack

from ._async import AsyncMethods
from ._config import ConnectOptions, Options, make_options
from ._engine import Engine
from ._engine import open_engine as open_local
from ._sync import SyncMethods
from ._types import ExcType, Tb

__all__ = ("AsyncDatabase", "Connector", "Database", "connect", "connect_async")


class Database(SyncMethods):
    """One SQLite database shared by every thread of the program.

    Writes go through the write lane (group commit, durable when the call returns); reads use
    the read pool in the calling thread. Every method is thread-safe. Blocking bounds: waiting
    for a reader, for queue space or for the lane is limited by ``timeout`` (default: the
    database's, 5 s; ``None`` = no bound) and raises :class:`PoolTimeout`/:class:`WriteTimeout`;
    a statement's run time is limited by ``time_limit`` (default: none) and raises
    :class:`QueryTimeout`. sqlite3's own errors pass through unchanged. After :meth:`close`,
    every call raises :class:`Closed`.
    """

    def as_async(self) -> AsyncDatabase:
        """An :class:`AsyncDatabase` on the same engine: one write lane for ``def`` and
        ``async def`` code alike. Closing stays this object's job."""
        return AsyncDatabase(self._engine, owner=False)


class AsyncDatabase(AsyncMethods):
    """The asyncio facade. Same methods as :class:`Database`, as coroutines; never blocks the
    event loop. Usable from several event loops (in different threads) at once, and together
    with a sync :class:`Database` on the same engine (:meth:`Database.as_async`)."""

    def as_sync(self) -> Database:
        """A sync :class:`Database` on the same engine (closing it is the owner's job)."""
        return Database(self._engine, owner=False)


def connect(path: str | os.PathLike[str], **options: Unpack[ConnectOptions]) -> Database:
    """Open a database for the whole program: threads may share the returned object.

    :param path: file path, ``":memory:"`` (one connection; reads go through the lane), or a
        dqlite cluster, ``"dqlite://host:port[,host:port…]/name"`` (docs/cluster.md)
    :param readers: reader connections: ``N`` (default ``min(32, CPUs + 4)``, the threads of
        Python's default thread pool; opened as needed), ``"per-thread"`` or ``0``
    :param synchronous: ``"FULL"`` (default, durable) or ``"NORMAL"``
    :param timeout: default wait bound in seconds for readers and the write lane (default 5)
    :param busy_timeout: seconds to keep retrying while another process holds the write lock
    :param time_limit: default statement time limit in seconds (``None``: no limit)
    :param options: the other fields of :class:`litegate.Options`
    :raises ValueError: an invalid option
    :raises TypeError: an unknown option
    :raises sqlite3.Error: the file cannot be opened

    Blocks while the writer connection is opened (at most ``busy_timeout`` when another process
    is initialising the file).
    """
    return Database(open_engine(make_options(path, options)))


def open_engine(opts: Options) -> Engine:
    """The engine for ``opts``: a local one for a file, or for a ``dqlite://`` URL the cluster
    engine (:mod:`litegate._cluster`, imported only then: it needs the ``dqlite`` extra).

    :raises litegate.Unavailable: no leader of the cluster answered within ``timeout``
    """
    if isinstance(opts.path, str) and opts.path.startswith("dqlite://"):
        from ._cluster import ClusterEngine

        return ClusterEngine(opts)
    return open_local(opts)


class Connector(Awaitable[AsyncDatabase]):
    """``await litegate.connect_async(...)`` or ``async with litegate.connect_async(...)``."""

    def __init__(self, opts: Options) -> None:
        self._opts = opts
        self._db: AsyncDatabase | None = None

    async def _open(self) -> AsyncDatabase:
        engine: Engine = await asyncio.to_thread(open_engine, self._opts)  # never blocks the loop
        return AsyncDatabase(engine)

    def __await__(self) -> Generator[Any, None, AsyncDatabase]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncDatabase:
        self._db = await self._open()
        return self._db

    async def __aexit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        if self._db is not None:
            await self._db.close()


def connect_async(path: str | os.PathLike[str], **options: Unpack[ConnectOptions]) -> Connector:
    """Open a database for asyncio code: ``adb = await litegate.connect_async("app.db")`` or
    ``async with litegate.connect_async("app.db") as adb:``. Same options as :func:`connect`.
    The files are opened in a worker thread, so the event loop is never blocked."""
    return Connector(make_options(path, options))
