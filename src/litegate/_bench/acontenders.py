"""The task-side contenders: ways of using one SQLite file from asyncio tasks.

:class:`AsyncContender` is :class:`.contenders.Contender`'s interface, awaited: ``open``,
``read``, ``write``, ``scan``, ``transfer``, ``worker_exit`` and ``close``.

* ``litegate async``: ``litegate.connect_async`` (inline point reads, group-committed writes,
  ``async with adb.transaction() as tx`` for transfers);
* ``aiosqlite``: one connection (its own thread), ``isolation_level=None``; every write and
  every transfer under an ``asyncio.Lock`` so that tasks sharing the connection do not
  interleave their transactions;
* :class:`ToThread`: any thread-side contender behind ``asyncio.to_thread`` (the default
  executor): a locked connection, a connection per executor thread, or litegate's sync
  ``Database`` built at startup (the store app's pattern).

Threads: every method runs on the event loop's thread; ``ToThread`` hops to executor threads.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

import litegate

from .._config import Synchronous
from .contenders import Contender, litegate_figures
from .workloads import (
    BUSY_TIMEOUT,
    SQL_BALANCE,
    SQL_CREDIT,
    SQL_DEBIT,
    SQL_READ,
    SQL_SCAN,
    Case,
)

if TYPE_CHECKING:
    import aiosqlite

__all__ = (
    "Aiosqlite",
    "AsyncContender",
    "LITEGATE_READERS",
    "LitegateAsync",
    "ToThread",
    "aiosqlite_version",
)

LITEGATE_READERS = 4
"""Read connections of the litegate contenders of the async suite."""


class AsyncContender:
    """One way of using the database from asyncio: :class:`.contenders.Contender`'s
    interface, awaited. Every method runs on the event loop. ``kind`` is ``litegate``,
    ``peer`` or ``reference``."""

    name = "?"
    kind = "peer"

    async def open(self, path: str, case: Case) -> None:
        raise NotImplementedError

    async def read(self, key: int) -> Any:
        raise NotImplementedError

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        raise NotImplementedError

    async def scan(self, low: int) -> list[Any]:
        raise NotImplementedError

    async def transfer(self, src: int, dst: int, amount: int) -> bool:
        raise NotImplementedError

    async def worker_exit(self) -> None:
        """Release what this worker task opened."""

    async def close(self) -> dict[str, Any]:
        """Close everything; returns extra figures for the report."""
        return {}


class LitegateAsync(AsyncContender):
    """litegate's asyncio facade: inline point reads, group-committed writes, interactive
    transactions on the write lane."""

    kind = "litegate"
    name = "litegate async"

    async def open(self, path: str, case: Case) -> None:
        self._db = await litegate.connect_async(
            path, readers=LITEGATE_READERS, synchronous=cast(Synchronous, case.synchronous)
        )

    async def read(self, key: int) -> Any:
        return await self._db.query_one(SQL_READ, (key,))

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        await self._db.execute(sql, params)

    async def scan(self, low: int) -> list[Any]:
        return await self._db.query(SQL_SCAN, (low, low))

    async def transfer(self, src: int, dst: int, amount: int) -> bool:
        async with self._db.transaction() as tx:
            balance = await tx.query_value(SQL_BALANCE, (src,))
            await tx.query_value(SQL_BALANCE, (dst,))
            if balance < amount:
                return False
            await tx.execute(SQL_DEBIT, (amount, src))
            await tx.execute(SQL_CREDIT, (amount, dst))
            return True

    async def close(self) -> dict[str, Any]:
        s = await self._db.stats()
        await self._db.close()
        return litegate_figures(s)


def aiosqlite_version() -> str | None:
    """The installed aiosqlite version, or ``None`` when it cannot be imported."""
    try:
        import aiosqlite
    except ImportError:
        return None
    return str(getattr(aiosqlite, "__version__", "?"))


class Aiosqlite(AsyncContender):
    """One aiosqlite connection (its own thread), WAL, the case's ``synchronous``,
    ``isolation_level=None`` (explicit transactions). Reads: ``execute_fetchall`` (one round
    trip). A one-row write is one autocommitted statement (one round trip: its own
    transaction); a transfer is ``BEGIN IMMEDIATE`` ... ``COMMIT``. Both hold an
    ``asyncio.Lock`` so that no task's statement lands inside another task's transaction on
    the shared connection."""

    name = "aiosqlite"

    async def open(self, path: str, case: Case) -> None:
        import aiosqlite

        self._lock = asyncio.Lock()
        conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA synchronous={case.synchronous}")
        except BaseException:
            await conn.close()
            raise
        self._conn: aiosqlite.Connection = conn

    async def read(self, key: int) -> Any:
        rows = await self._conn.execute_fetchall(SQL_READ, (key,))
        return next(iter(rows), None)

    async def scan(self, low: int) -> list[Any]:
        return list(await self._conn.execute_fetchall(SQL_SCAN, (low, low)))

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        async with self._lock:
            await self._conn.execute(sql, params)

    async def transfer(self, src: int, dst: int, amount: int) -> bool:
        conn = self._conn
        async with self._lock:
            try:
                await conn.execute("BEGIN IMMEDIATE")
                rows = await conn.execute_fetchall(SQL_BALANCE, (src,))
                await conn.execute_fetchall(SQL_BALANCE, (dst,))
                moved: bool = next(iter(rows))[0] >= amount
                if moved:
                    await conn.execute(SQL_DEBIT, (amount, src))
                    await conn.execute(SQL_CREDIT, (amount, dst))
                await conn.execute("COMMIT")
                return moved
            except BaseException:
                if conn.in_transaction:
                    await conn.rollback()
                raise

    async def close(self) -> dict[str, Any]:
        await self._conn.close()
        return {"connections": 1}


class ToThread(AsyncContender):
    """A thread-side contender behind ``asyncio.to_thread``: each call runs on the loop's
    default executor. ``worker_exit`` does nothing (executor threads outlive the tasks), so an
    inner contender that opens something per thread releases it in its own ``close``."""

    def __init__(self, inner: Contender, name: str, kind: str = "peer") -> None:
        self.inner = inner
        self.name = name
        self.kind = kind

    async def open(self, path: str, case: Case) -> None:
        await asyncio.to_thread(self.inner.open, path, case)

    async def read(self, key: int) -> Any:
        return await asyncio.to_thread(self.inner.read, key)

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        await asyncio.to_thread(self.inner.write, sql, params)

    async def scan(self, low: int) -> list[Any]:
        return await asyncio.to_thread(self.inner.scan, low)

    async def transfer(self, src: int, dst: int, amount: int) -> bool:
        return await asyncio.to_thread(self.inner.transfer, src, dst, amount)

    async def close(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.inner.close)
