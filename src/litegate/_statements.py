"""What each statement method does on a connection: the functions the facades hand to the engine
as jobs (``fn(conn, *args)``), and :class:`Result`.

Nothing here takes locks or knows threads: these run on whichever thread holds the connection
(the writer thread, a reader's borrower, a transaction's caller).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ._types import Params

__all__ = (
    "Described",
    "Result",
    "close_cursor",
    "close_cursors",
    "exec_sql",
    "fetch",
    "fetch_page",
    "first_value",
    "open_cursor",
    "prepare",
    "rollback_to_savepoint",
    "run_execute",
    "run_executemany",
    "run_described",
    "run_query",
    "run_script",
    "split_script",
)


@dataclass(frozen=True, slots=True)
class Result:
    """What a write statement did.

    :ivar rowcount: rows changed (``-1`` where sqlite3 does not know)
    :ivar lastrowid: rowid of the last inserted row (``None`` if none)
    :ivar rows: rows returned by a ``RETURNING`` clause (empty otherwise)
    """

    rowcount: int
    lastrowid: int | None
    rows: list[Any]


# Result's slots set directly: a frozen dataclass's __init__ goes through object.__setattr__
# for each field (~1 us, on every write; this is ~0.4 us).
_new_object = object.__new__
_set_rowcount = vars(Result)["rowcount"].__set__
_set_lastrowid = vars(Result)["lastrowid"].__set__
_set_rows = vars(Result)["rows"].__set__


def run_execute(conn: sqlite3.Connection, sql: str, params: Params = ()) -> Result:
    cur = conn.execute(sql, params)
    try:
        result: Result = _new_object(Result)
        _set_rows(result, cur.fetchall())
        _set_rowcount(result, cur.rowcount)
        _set_lastrowid(result, cur.lastrowid)
        return result
    finally:
        cur.close()


def run_executemany(conn: sqlite3.Connection, sql: str, seq: Iterable[Params]) -> Result:
    cur = conn.executemany(sql, seq)
    try:
        return Result(cur.rowcount, cur.lastrowid, [])
    finally:
        cur.close()


def fetch(conn: sqlite3.Connection, sql: str, params: Params, first: bool) -> Any:
    """The rows of a query, or (``first``) its first row or None."""
    cur = conn.execute(sql, params)
    try:
        return cur.fetchone() if first else cur.fetchall()
    finally:
        cur.close()


class Described:
    """What one read statement gave, as a DB-API cursor tells it: its rows (made by the
    ``row_factory`` it ran with), ``description``, ``rowcount`` and ``lastrowid``."""

    __slots__ = ("description", "lastrowid", "rowcount", "rows")

    def __init__(self, rows: list[Any], description: Any, rowcount: int, lastrowid: Any) -> None:
        self.rows = rows
        self.description = description
        self.rowcount = rowcount
        self.lastrowid = lastrowid


def run_described(
    conn: sqlite3.Connection,
    sql: str,
    params: Params,
    row_factory: Any,
    prepare: Any,
) -> Described:
    """A read statement's :class:`Described`: :func:`run_query` for a DB-API facade
    (``litegate.aio``), which needs the cursor's ``description`` and its own row factory (run
    here, on the engine's cursor: ``sqlite3.Row`` and factories that read
    ``cursor.description`` need the real one). ``prepare(conn)``, if given, runs first (the
    drop-in's registered functions brought up to date on ``conn``). A read: the engine runs it
    inline on the loop where :func:`run_query` would be (``_async_lease._reads``)."""
    if prepare is not None:
        prepare(conn)
    cur = conn.cursor()
    try:
        cur.row_factory = row_factory
        cur.execute(sql, params)
        return Described(cur.fetchall(), cur.description, cur.rowcount, cur.lastrowid)
    finally:
        cur.close()


def run_query(conn: sqlite3.Connection, sql: str, params: Params = ()) -> list[Any]:
    cur = conn.execute(sql, params)  # (not fetch(): one frame less on every query)
    try:
        return cur.fetchall()
    finally:
        cur.close()


def first_value(rows: list[Any]) -> Any:
    """The first column of the first row, or ``None``."""
    return rows[0][0] if rows else None


def open_cursor(conn: sqlite3.Connection, sql: str, params: Params) -> sqlite3.Cursor:
    return conn.execute(sql, params)


def fetch_page(conn: sqlite3.Connection, cursor: sqlite3.Cursor, n: int) -> list[Any]:
    return cursor.fetchmany(n)


def close_cursor(conn: sqlite3.Connection, cursor: sqlite3.Cursor) -> None:
    cursor.close()


def close_cursors(conn: sqlite3.Connection | None, cursors: Iterable[sqlite3.Cursor]) -> None:
    """Close cursors an iteration left open (never raises: it runs at a block's end). An open
    cursor keeps its statement's read snapshot alive even after a ROLLBACK, so a connection
    given back with one would serve stale reads (and, on the writer, fail to begin)."""
    for cursor in cursors:
        try:
            cursor.close()
        except sqlite3.Error:  # its connection is gone: nothing left to close
            pass


def exec_sql(conn: sqlite3.Connection, sql: str) -> None:
    conn.execute(sql).close()


def prepare(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], object]) -> None:
    """``fn(conn)``: a facade's quick setup of a connection it holds (the drop-ins' registered
    functions brought up to date on the writer before their statements). Quick by contract:
    the engine runs it inline on the loop inside an async transaction (``_async_lease._cheap``)."""
    fn(conn)


def rollback_to_savepoint(conn: sqlite3.Connection, name: str) -> None:
    """Undo a savepoint and end it (nothing, if SQLite already ended the transaction)."""
    if conn.in_transaction:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")


def split_script(script: str) -> Iterator[str]:
    """Split an SQL script into complete statements (string literals and triggers respected).

    ``sqlite3.Connection.executescript`` commits any open transaction first, which would break
    group commit, so scripts are run statement by statement inside the lane's transaction.
    """
    start = 0
    i = script.find(";")
    while i != -1:
        chunk = script[start : i + 1]
        if sqlite3.complete_statement(chunk):
            if chunk.strip(" \t\r\n;"):
                yield chunk
            start = i + 1
        i = script.find(";", i + 1)
    rest = script[start:]
    if rest.strip() and _has_code(rest):
        yield rest


def _has_code(text: str) -> bool:
    """True if text holds anything but whitespace and comments."""
    lines = [ln.split("--", 1)[0] for ln in text.splitlines()]
    stripped = "\n".join(lines)
    while "/*" in stripped:
        a = stripped.index("/*")
        b = stripped.find("*/", a + 2)
        stripped = stripped[:a] + (stripped[b + 2 :] if b != -1 else "")
    return bool(stripped.strip())


def run_script(conn: sqlite3.Connection, script: str) -> None:
    for statement in split_script(script):
        conn.execute(statement).close()
