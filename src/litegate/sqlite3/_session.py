"""One thread's transaction on a drop-in connection, and running one statement on an engine
connection with the drop-in connection's settings.

A :class:`Session` belongs to one thread (it lives in the connection's ``threading.local``):
only that thread reads or writes its fields, so they need no lock. If the thread ends with its
transaction open, the session is collected with it and the engine, which holds it as the
lease's ``holder``, rolls the transaction back and gives the lane back.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from .._engine import WriteLease
from .._errors import Busy, Closed, Error, Misuse, RolledBack, Timeout

if TYPE_CHECKING:
    from ._connection import Connection
    from ._cursor import Cursor

__all__ = ("EMPTY", "Outcome", "Session", "run_statement", "translate")


class Session:
    """The calling thread's transaction on one connection."""

    __slots__ = ("__weakref__", "blobs", "lastrowid", "lease", "savepoints")

    def __init__(self) -> None:
        self.lease: WriteLease | None = None  # the lane, held while a transaction is open
        # The savepoints of a transaction that a SAVEPOINT statement opened (its outermost
        # RELEASE commits it, as in SQLite); None for one opened otherwise.
        self.savepoints: list[str] | None = None
        self.lastrowid: int | None = None
        self.blobs: list[sqlite3.Blob] | None = None  # closed when the transaction ends

    def close_blobs(self) -> None:
        blobs, self.blobs = self.blobs, None
        for blob in blobs or ():
            try:
                blob.close()
            except sqlite3.Error:
                pass


class Outcome:
    """What a statement left for its cursor (all of it fetched: a cursor pins nothing)."""

    __slots__ = ("description", "lastrowid", "rowcount", "rows")

    def __init__(
        self, rows: list[Any], description: Any, rowcount: int, lastrowid: int | None
    ) -> None:
        self.rows = rows
        self.description = description
        self.rowcount = rowcount
        self.lastrowid = lastrowid  # None unless an INSERT/REPLACE ran through execute()


EMPTY = Outcome([], None, -1, None)


def run_statement(
    conn: sqlite3.Connection,
    cx: Connection,
    cur: Cursor,
    sql: str,
    params: Any,
    many: bool,
) -> Outcome:
    """Run ``sql`` on ``conn`` (an engine connection the caller owns now) as ``cx`` would on a
    connection of its own: its functions, text factory, hooks and ``cur``'s row factory."""
    settings = cx._settings_for(conn)
    before = conn.total_changes
    raw = conn.cursor()
    try:
        if many:
            raw.executemany(sql, params)
        else:
            raw.execute(sql, params)
        description = raw.description
        rows: list[Any] = raw.fetchall() if description is not None else []
        factory = cur.row_factory
        if factory is not None and rows:
            if isinstance(factory, type) and issubclass(factory, sqlite3.Row):
                rows = [factory(raw, row) for row in rows]
            else:
                cur.description = description
                rows = [factory(cur, row) for row in rows]
        return Outcome(rows, description, raw.rowcount, raw.lastrowid)
    finally:
        raw.close()
        if settings:
            cx._settings_done(conn)
        cx._count_changes(conn.total_changes - before)


def translate(exc: BaseException) -> BaseException:
    """litegate's own condition as the standard module's exception class (drop-in users catch
    those): a wait past ``timeout`` is ``OperationalError('database is locked ...')``, as a
    busy SQLite connection would say; use after close is ``ProgrammingError``."""
    if not isinstance(exc, Error) or isinstance(exc, sqlite3.Error):
        return exc
    cls: type[sqlite3.Error]
    if isinstance(exc, Closed):
        cls, text = sqlite3.ProgrammingError, f"Cannot operate on a closed database. ({exc})"
    elif isinstance(exc, Timeout | Busy):
        cls, text = sqlite3.OperationalError, f"database is locked: {exc}"
    elif isinstance(exc, RolledBack):
        cls, text = sqlite3.OperationalError, str(exc)
    elif isinstance(exc, Misuse):  # (this thread holds the lane through another connection)
        cls, text = sqlite3.OperationalError, f"database is locked: {exc}"
    else:
        cls, text = sqlite3.OperationalError, str(exc)
    err = cls(text)
    err.__cause__ = exc
    return err
