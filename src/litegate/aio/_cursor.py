"""``litegate.aio``'s cursor and the awaitable-or-context-manager that methods return.

A statement runs to its end when it is awaited and its cursor keeps the rows (as the drop-in's
does): a cursor pins no reader and no lane, so fetching is free and an abandoned cursor holds
nothing. Fields: a cursor is its task's (as an aiosqlite cursor is its connection thread's).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable
from typing import Any, Generic, Protocol, Self, TypeVar

from .._statements import Described as Outcome
from .._types import ExcType, Tb

__all__ = ("Cursor", "Outcome", "Result", "result")

T = TypeVar("T")


class Result(Generic[T]):
    """What ``execute`` and its kin return: ``await`` it for the value, or ``async with`` it
    (a cursor is closed at the block's end), as aiosqlite's ``Result``."""

    __slots__ = ("_coro", "_value")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._value: Any = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()

    def send(self, value: Any) -> Any:  # (a Coroutine: asyncio.gather and ensure_future take it)
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    async def __aenter__(self) -> T:
        self._value = await self._coro
        value: T = self._value
        return value

    async def __aexit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        value = self._value
        if type(value) is Cursor:
            value._rows, value._closed = [], True  # (its close(), without a coroutine)
        elif isinstance(value, Cursor):  # (a subclass's close() may do more)
            await value.close()


Coroutine.register(Result)


class _Runs(Protocol):
    """What a cursor uses of its connection."""

    iter_chunk_size: int

    @property
    def closed(self) -> bool: ...

    @property
    def closing(self) -> bool: ...

    @property
    def unusable(self) -> bool: ...

    async def run_statement(
        self, sql: str, params: Any, row_factory: Any = None, *, many: bool = False
    ) -> Outcome: ...

    async def run_script(self, script: str) -> None: ...


class Cursor:
    """An aiosqlite cursor: ``execute…`` returns it; ``fetchone/fetchmany/fetchall`` and
    ``async for`` give the rows the statement returned."""

    __slots__ = (
        "_at",
        "_closed",
        "_conn",
        "_rows",
        "arraysize",
        "description",
        "iter_chunk_size",
        "lastrowid",
        "row_factory",
        "rowcount",
    )

    def __init__(self, conn: _Runs, out: Outcome | None = None) -> None:
        self._conn = conn
        self.iter_chunk_size = conn.iter_chunk_size
        self.arraysize = 1
        self.row_factory: Callable[[sqlite3.Cursor, tuple[Any, ...]], Any] | None = None
        self._at = 0
        self._closed = False
        if out is None:
            self._rows: list[Any] = []
            self.description: Any = None
            self.rowcount = -1
            self.lastrowid: int | None = None
        else:  # (what its first statement gave: take() in the constructor)
            self._rows = out.rows
            self.description = out.description
            self.rowcount = out.rowcount
            self.lastrowid = out.lastrowid

    def take(self, out: Outcome) -> None:
        """Keep what a statement run for this cursor gave."""
        self._rows, self._at = out.rows, 0
        self.description = out.description
        self.rowcount = out.rowcount
        if out.lastrowid is not None:
            self.lastrowid = out.lastrowid

    def _live(self) -> None:
        if self._closed or self._conn.unusable:
            self._dead()

    def _dead(self) -> None:
        if self._closed or self._conn.closed:
            raise ValueError("Connection closed")
        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

    @property
    def connection(self) -> Any:
        """The ``litegate.aio.Connection`` (aiosqlite gives its ``sqlite3`` connection, which
        the shared engine has no one of)."""
        return self._conn

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> Self:
        self._live()
        params = () if parameters is None else parameters
        self.take(await self._conn.run_statement(sql, params, self.row_factory))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> Self:
        self._live()
        self.take(await self._conn.run_statement(sql, parameters, self.row_factory, many=True))
        return self

    async def executescript(self, sql_script: str) -> Self:
        self._live()
        await self._conn.run_script(sql_script)
        self.take(Outcome([], None, -1, None))
        return self

    async def fetchone(self) -> Any:
        if self._closed or self._conn.unusable:  # (_live, inline: the most called)
            self._dead()
        if self._at >= len(self._rows):
            return None
        row = self._rows[self._at]
        self._at += 1
        return row

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        self._live()
        n = self.arraysize if size is None else size
        rows = self._rows[self._at : self._at + max(n, 0)]
        self._at += len(rows)
        return rows

    async def fetchall(self) -> list[Any]:
        self._live()
        rows = self._rows[self._at :]
        self._at = len(self._rows)
        return rows

    async def close(self) -> None:
        self._closed = True
        self._rows = []

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Any]:
        while True:
            rows = await self.fetchmany(self.iter_chunk_size)
            if not rows:
                return
            for row in rows:
                yield row

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        await self.close()


def result(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., Result[T]]:
    """Make an ``async def`` method return a :class:`Result`."""

    def wrapper(*args: Any, **kwargs: Any) -> Result[T]:
        return Result(fn(*args, **kwargs))

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    wrapper.__qualname__ = fn.__qualname__
    return wrapper
