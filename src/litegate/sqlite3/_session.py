"""One thread's transaction on a drop-in connection, a statement's outcome, and the errors
drop-in users catch.

A :class:`Session` belongs to one thread (it lives in the connection's ``threading.local``):
only that thread reads or writes its fields, so they need no lock. If the thread ends with its
transaction open, the session is collected with it and the engine, which holds it as the
lease's ``holder``, rolls the transaction back and gives the lane back.
"""

from __future__ import annotations

import sqlite3
import weakref
from typing import Any, cast

from .._engine import Engine, ReadLease, WriteLease
from .._errors import Busy, Closed, Error, Misuse, RolledBack, Timeout

__all__ = ("EMPTY", "Outcome", "Session", "begin_read", "begin_write", "end", "translate")


class Session:
    """The calling thread's transaction on one connection."""

    __slots__ = (
        "__weakref__",
        "blobs",
        "explicit",
        "lastrowid",
        "lease",
        "read_only",
        "reader",
        "reading",
        "running",
        "savepoints",
    )

    def __init__(self) -> None:
        # the lane, held while a transaction is open (a reader's lease if ``reading``)
        self.lease: WriteLease | None = None
        self.reading = False
        self.explicit = False  # the transaction was opened by a BEGIN/SAVEPOINT statement
        self.read_only = False  # this thread's next transactions are snapshots on a reader
        # [the read lease held, or None]: what a finalizer gives back if the thread dies with
        # it (one finalizer per session, made at its first read-only transaction)
        self.reader: list[ReadLease | None] | None = None
        # The engine connection a statement of this thread runs on now (read by interrupt()
        # from any thread: a reference, read whole)
        self.running: sqlite3.Connection | None = None
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


def begin_write(engine: Engine, timeout: float, s: Session) -> WriteLease:
    """Open the thread's write transaction: the lane, held, and ``BEGIN IMMEDIATE`` (or a
    place in the open group)."""
    lease = engine.lease(timeout, "the transaction", s)
    try:
        lease.begin()
    except BaseException:
        lease.release()
        raise
    s.lease = lease
    return lease


def begin_read(engine: Engine, timeout: float, s: Session) -> WriteLease:
    """Open the thread's read-only transaction: a snapshot on a reader. (With ``readers=0``
    the "reader" is the lane: writes in it are refused by the caller, ``Connection._run``.)
    If the thread dies inside it, a finalizer gives the reader back."""
    lease = engine.borrow(timeout, "the read-only transaction")
    try:
        lease.begin_snapshot()
    except BaseException:
        lease.release()
        raise
    s.lease = cast(WriteLease, lease)  # (only run, in_transaction, conn and release are used)
    s.reading = True
    if s.reader is None:
        s.reader = []
        weakref.finalize(s, _release_quietly, s.reader)
    s.reader[:] = [lease]
    return s.lease


def _release_quietly(box: list[ReadLease | None]) -> None:
    for lease in box:
        try:
            if lease is not None:
                lease.release()  # (idempotent)
        except Exception:  # (a finalizer: nothing to tell)
            pass


def end(s: Session, commit: bool) -> None:
    """End the thread's transaction (if any) and give its connection back: commit or roll
    back a write transaction, close a snapshot."""
    lease = s.lease
    if lease is None:
        return
    reading = s.reading
    if reading and s.reader:
        s.reader[:] = []
    s.lease = None
    s.savepoints = None
    s.reading = s.explicit = False
    try:
        if s.blobs:
            s.close_blobs()
        if not reading and lease.in_transaction:
            if commit:
                lease.commit()
            else:
                lease.rollback()
    finally:
        lease.release()


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
