"""The drop-in's cursor: the standard ``sqlite3.Cursor`` API over a statement's fetched rows.

A cursor holds its statement's rows, never a connection: each ``execute`` runs the statement
to its end on an engine connection (a reader, or the write lane) and gives that connection back
at once, so an abandoned or half-read cursor pins nothing. (The cost: a query's whole result
is in memory; page a huge one with ``LIMIT``/``OFFSET`` or a keyset.)

A cursor is meant for one thread at a time, as a ``sqlite3.Cursor`` is; its fields are guarded
by that use (the connection's state it reaches is the calling thread's own session).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Self

from ._session import EMPTY, Outcome

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ("Cursor",)


class Cursor:
    """A ``sqlite3.Cursor`` of a :class:`~litegate.sqlite3.Connection`."""

    def __init__(self, connection: Connection, /) -> None:
        from ._connection import Connection

        if not isinstance(connection, Connection):
            raise TypeError(
                "Cursor() argument must be a litegate.sqlite3.Connection, not "
                f"{type(connection).__name__}"
            )
        self._connection = connection
        self.arraysize = 1
        self.row_factory: Any = connection.row_factory
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []
        self._at = 0
        self._closed = False
        self._ready = True

    def _check(self) -> Connection:
        if not getattr(self, "_ready", False):
            raise sqlite3.ProgrammingError("Base Cursor.__init__ not called.")
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed cursor.")
        cx = self._connection
        cx._check()
        return cx

    @property
    def connection(self) -> Connection:
        return self._connection

    def _take(self, out: Outcome) -> None:
        self.description = out.description
        self._rows = out.rows
        self._at = 0
        self.rowcount = out.rowcount

    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        """Run one statement (see :meth:`Connection.execute` for where it runs)."""
        cx = self._check()
        self._take(EMPTY)
        out = cx._run(self, sql, parameters, False)
        self._take(out)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> Self:
        """Run one DML statement once for each parameter set."""
        cx = self._check()
        self._take(EMPTY)
        out = cx._run(self, sql, seq_of_parameters, True)
        self._take(out)
        return self

    def executescript(self, sql_script: str, /) -> Self:
        """Run a script, statement by statement (transaction control statements included)."""
        cx = self._check()
        self._take(EMPTY)
        cx._script(self, sql_script)
        return self

    def fetchone(self) -> Any:
        self._check()
        at = self._at
        rows = self._rows
        if at >= len(rows):
            return None
        self._at = at + 1
        return rows[at]

    def fetchmany(self, size: int | None = None) -> list[Any]:
        self._check()
        n = self.arraysize if size is None else size
        if not isinstance(n, int):
            raise TypeError(f"fetchmany() size must be an int, not {type(n).__name__}")
        at = self._at
        if n < 0:
            n = len(self._rows) - at
        out = self._rows[at : at + n]
        self._at = at + len(out)
        return out

    def fetchall(self) -> list[Any]:
        self._check()
        at = self._at
        out = self._rows[at:] if at else list(self._rows)
        self._at = len(self._rows)
        return out

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        self._check()
        at = self._at
        rows = self._rows
        if at >= len(rows):
            raise StopIteration
        self._at = at + 1
        return rows[at]

    def close(self) -> None:
        """Close the cursor (it holds no connection; its rows are dropped)."""
        if not getattr(self, "_ready", False):
            raise sqlite3.ProgrammingError("Base Cursor.__init__ not called.")
        self._closed = True
        self._rows = []

    def setinputsizes(self, sizes: object, /) -> None:
        """Does nothing (DB-API)."""

    def setoutputsize(self, size: object, column: object = None, /) -> None:
        """Does nothing (DB-API)."""
