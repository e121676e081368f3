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

A ``SELECT`` -- or inside a transaction an ``INSERT``, ``UPDATE``, ``DELETE`` or ``REPLACE`` --
whose text already ran once through the driver's DB-API cursor (which checked it and its number
of parameters) is sent through the layer below it (:class:`Direct`): the cursor's checks, its
SQL scanning and its busy-retry wrapper cost ~80 of a round trip's ~240 us of Python here (one
task, point SELECTs in a transaction: 241 -> 162 us each). A statement in an open write
transaction has no busy to retry; a read outside one that meets SQLITE_BUSY is run again the
cursor's way, which retries it (a read takes effect nowhere). Parameters, values, ``description``, ``rowcount``,
``lastrowid``, errors and the row factory come out as the cursor gives them (its own helpers
do the work); where the driver lacks what this uses, everything goes through the cursor.

Nothing here runs without the driver: the tests' stand-in (tests/cluster/fake_driver.py)
plugs in at the session protocols instead, and tests/dqlite/ runs these on a real cluster.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ._link import AsyncSession, OpenAsyncSession, OpenSession, Outcome, Session

__all__ = ("Direct", "DriverAsyncSession", "DriverSession", "dial", "load_driver")

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
    direct = Direct.load(dqlitedbapi)

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
            direct=direct if row_factory in (None, dqlitedbapi.Row) else None,
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


_DIRECT = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE)\b", re.I)
_RETURNING = re.compile(r"\bRETURNING\b", re.I)  # (rows from a write: the cursor's way)
_WRITE_TX = re.compile(r"\s*BEGIN\s+(?:IMMEDIATE|EXCLUSIVE)\b", re.I)
_SAVEPOINTS = re.compile(r"\s*(?:SAVEPOINT|RELEASE|ROLLBACK\s+(?:TRANSACTION\s+)?TO)\s", re.I)
_KINDS = {"SELECT": 0, "INSERT": 1, "REPLACE": 1, "UPDATE": 2, "DELETE": 2}
_SELECT, _INSERT, _DML, _CONTROL = 0, 1, 2, 3  # (what a proven text is: how its outcome reads)
_PROVEN_MAX = 512  # statement texts remembered per session
_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


class _Described:
    """What a row factory is given as its cursor: the statement's ``description``."""

    __slots__ = ("description",)

    def __init__(self, description: Any) -> None:
        self.description = description


class Direct:  # pragma: no cover  (see the module docstring)
    """The driver's helpers the direct path uses (its DB-API cursor's own), found once."""

    def __init__(
        self,
        adapt: Callable[[Any], Any],
        converters: dict[int, Any],
        call: Any,
        null: int,
        data_error: type[Exception],
    ) -> None:
        self.adapt = adapt
        self.converters = converters
        self.call = call
        self.null = null
        self.data_error = data_error

    @classmethod
    def load(cls, dqlitedbapi: Any) -> Direct | None:
        try:
            from dqliteclient import DqliteConnection  # type: ignore[import-not-found,unused-ignore]
            from dqlitedbapi.aio.connection import (  # type: ignore[import-not-found,unused-ignore]
                AsyncConnection,
            )
            from dqlitedbapi.exceptions import (  # type: ignore[import-not-found,unused-ignore]
                DataError,
                call,
            )
            from dqlitedbapi.types import (  # type: ignore[import-not-found,unused-ignore]
                adapt_bind_param,
                datetime_from_iso8601,
                datetime_from_unixtime,
            )
            from dqlitewire import ValueType  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            return None
        if not (hasattr(AsyncConnection, "_operation") and hasattr(DqliteConnection, "_run")):
            return None  # (another version of the driver: everything through its cursor)
        converters = {
            int(ValueType.ISO8601): datetime_from_iso8601,
            int(ValueType.UNIXTIME): datetime_from_unixtime,
        }
        return cls(adapt_bind_param, converters, call, int(ValueType.NULL), DataError)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


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
        direct: Direct | None = None,
    ) -> None:
        self._conn = aio.connect(
            seed, database=name, timeout=timeout, busy_timeout=busy_timeout, dial_func=dial
        )
        if row_factory is not None:
            self._conn.row_factory = row_factory
        self._row_factory = row_factory
        self._direct = direct
        self._proven: dict[str, tuple[int, int]] = {}  # text -> (parameters, _SELECT ...)
        self._writing = False  # a BEGIN IMMEDIATE/EXCLUSIVE of ours is open: no busy to retry
        self.direct_runs = 0  # statements sent the direct way (tests/dqlite checks it is taken)

    @property
    def closed(self) -> bool:
        return bool(self._conn.closed)

    @property
    def in_transaction(self) -> bool:
        return bool(self._conn.in_transaction)

    async def connect(self) -> None:
        await self._conn.connect()

    async def run(self, sql: str, params: Any, many: bool) -> Outcome:
        if not many and self._direct is not None and type(params) in (tuple, list):
            proven = self._proven.get(sql)
            if proven is not None and proven[0] == len(params):
                if self._writing and self._conn.in_transaction:
                    return await self._run_direct(self._direct, sql, params, proven[1])
                if proven[1] == _SELECT:  # (a read in autocommit: busy retried the cursor's way)
                    try:
                        return await self._run_direct(self._direct, sql, params, _SELECT)
                    except Exception as exc:
                        if (getattr(exc, "code", None) or 0) & 0xFF not in _BUSY:
                            raise
        cur = self._conn.cursor()
        try:
            if many:
                await cur.executemany(sql, params)
            else:
                await cur.execute(sql, params)
            rows = await cur.fetchall() if cur.description is not None else []
            out = Outcome(cur.description, rows, cur.rowcount, cur.lastrowid)
        finally:
            cur.close()
        if not many and type(params) in (tuple, list):
            kind: int | None = None
            if (m := _DIRECT.match(sql)) is not None:
                if _RETURNING.search(sql) is None:
                    kind = _KINDS[m.group(1).upper()]
            else:  # (a write transaction of ours begins, or anything else ends it)
                self._writing = _WRITE_TX.match(sql) is not None or (
                    self._writing and self._conn.in_transaction
                )
                if self._writing and not params and _SAVEPOINTS.match(sql) and ";" not in sql:
                    kind = _CONTROL  # (inside our write transaction: it never ends it)
            if kind is not None:
                if len(self._proven) >= _PROVEN_MAX:
                    self._proven.clear()
                self._proven[sql] = (len(params), kind)
        return out

    async def _run_direct(self, direct: Direct, sql: str, params: Any, kind: int) -> Outcome:
        """``sql`` through the driver's client layer (see the module docstring)."""
        bound = [direct.adapt(p) for p in params]
        self.direct_runs += 1
        async with self._conn._operation() as client:
            if kind == _SELECT:
                columns, column_types, row_types, raw = await direct.call(
                    client._run(lambda p, db: p.query_sql_typed(db, sql, bound))
                )
                if not columns:
                    return Outcome(None, [], -1, None)
                description = tuple(
                    (name, self._type_code(direct, i, column_types, row_types), None, None,
                     None, None, None)
                    for i, name in enumerate(columns)
                )  # fmt: skip
                rows = [self._row(direct, r, row_types, i) for i, r in enumerate(raw)]
                factory = self._row_factory
                if factory is not None:
                    owner = _Described(description)
                    try:
                        rows = [factory(owner, r) for r in rows]
                    except TypeError as exc:  # (as the cursor says it)
                        raise direct.data_error(f"row_factory call failed: {exc}") from exc
                return Outcome(description, rows, len(raw), None)
            last_id, affected = await direct.call(
                client._run(lambda p, db: p.exec_sql(db, sql, bound))
            )
        if kind == _CONTROL:
            return Outcome(None, [], -1, None)
        return Outcome(None, [], _signed(affected), _signed(last_id) if kind == _INSERT else None)

    @staticmethod
    def _type_code(direct: Direct, i: int, column_types: Any, row_types: Any) -> Any:
        """The column's type code as the cursor's ``description`` gives it: the first
        non-NULL tag down the column (else the driver's ``UNKNOWN``: as it, via the cursor)."""
        for types in (column_types, *row_types):
            if i < len(types) and types[i] != direct.null:
                return int(types[i])
        from dqlitedbapi.types import UNKNOWN  # type: ignore[import-not-found,unused-ignore]

        return UNKNOWN

    @staticmethod
    def _row(direct: Direct, row: Any, row_types: Any, i: int) -> tuple[Any, ...]:
        types = row_types[i] if i < len(row_types) else ()
        converters = direct.converters
        if converters.keys().isdisjoint(types):
            return tuple(row)
        return tuple(
            converters[t](v) if v is not None and t in converters else v
            for v, t in zip(row, types, strict=False)
        )

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
