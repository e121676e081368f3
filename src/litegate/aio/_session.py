"""A ``litegate.aio`` connection's sessions: the calling task's, and its transaction -- opened
(the write lane and ``BEGIN IMMEDIATE``, or a snapshot on a reader) and ended (commit,
rollback, the connection's close, or the task's end).

:class:`TaskSessions` is :class:`~._core.ConnectionCore`'s base: its methods use the
connection's fields, which ``ConnectionCore.__init__`` sets and :mod:`._core`'s table guards.
A session's own fields:

==================  =====================================================================
field               guard
==================  =====================================================================
a ``_Session``      written on its loop only, by the tasks that use it: its own task, tasks
                    it started inside its transaction, all of the connection's with
                    ``per_task`` off; ``beginning`` makes them open one transaction, not two;
                    ``close`` ends its lease (``end()`` never blocks)
==================  =====================================================================
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._engine import AsyncReadLease, AsyncWriteLease, Engine
from .._errors import Error
from ..sqlite3._session import translate

__all__ = ("TaskSessions",)

_Lease = AsyncWriteLease | AsyncReadLease
logger = logging.getLogger("litegate")
_current_task = asyncio.current_task


class _Session:
    """One task's transaction on one connection."""

    __slots__ = (
        "beginning",
        "lastrowid",
        "lease",
        "read_only",
        "reading",
        "savepoints",
        "synced",
        "task",
        "txn",
        "watched",
    )

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.txn = 0  # which of its transactions is open (or was last)
        self.savepoints: list[str] | None = None  # a transaction a SAVEPOINT began: its marks
        self.watched = False  # its task's end is watched (rolls back what it left open)
        self.synced = -1  # the registered functions' version brought to the writer in it
        # True while _begin opens one; a future once another task waits for that
        self.beginning: asyncio.Future[None] | bool | None = None
        self.lastrowid: int | None = None  # its last INSERT's row id (sqlite3's, per task)
        self.lease: _Lease | None = None
        self.reading = False  # the lease is a snapshot on a reader
        self.read_only = False


def _end_quietly(s: _Session) -> None:
    lease, s.lease = s.lease, None
    if lease is None:
        return
    try:
        lease.end()  # (never blocks and needs no loop: close() from any thread, stop(), __del__)
    except Exception:  # (it is being discarded; the engine logs what it could not undo)
        pass


class TaskSessions:
    """The calling task's session on a connection, and its transaction's beginning and end
    (:class:`~._core.ConnectionCore`'s base; see the module docstring)."""

    # ConnectionCore's fields, set by its __init__ (:mod:`._core`'s table says what guards each)
    _lock: threading.Lock
    _var: contextvars.ContextVar[tuple[_Session, int]]
    _open: set[_Session]
    _one: _Session | None
    _closed: bool
    _timeout: float
    _trace: Callable[[str], object] | None

    if TYPE_CHECKING:  # (ConnectionCore's methods)

        def _live(self) -> Engine: ...

        def _traced(self, text: str) -> None: ...

    def _session(self) -> _Session:
        one = self._one
        if one is not None:
            return one  # (transactions are the connection's: per_task is off)
        ticket = self._var.get(None)
        if ticket is not None:
            s, txn = ticket
            if s.lease is not None and s.txn == txn:
                return (
                    s  # (the transaction open when this task, or the one that started it, set it)
                )
            task = _current_task()
            if s.task is task:
                return s  # (its own)
        else:
            task = _current_task()
        s = _Session(task)
        self._var.set((s, 0))
        return s

    async def _begin(self, s: _Session) -> _Lease:
        """Open ``s``'s transaction: the write lane and ``BEGIN IMMEDIATE``, or (``read_only``)
        a snapshot on a reader. One at a time per session (with ``per_task`` off, or joined,
        several tasks share it): a task that finds another beginning waits for it and then
        uses its transaction."""
        while s.beginning is not None:  # (another task of the session is opening one)
            if not isinstance(s.beginning, asyncio.Future):  # (the first to wait makes it)
                s.beginning = asyncio.get_running_loop().create_future()
            await asyncio.shield(s.beginning)
            if s.lease is not None:
                return s.lease
        engine = self._live()
        s.beginning = True
        try:
            return await self._open_transaction(engine, s)
        finally:
            waited, s.beginning = s.beginning, None
            if isinstance(waited, asyncio.Future) and not waited.done():
                waited.set_result(None)

    async def _open_transaction(self, engine: Engine, s: _Session) -> _Lease:
        try:
            if s.read_only:
                lease: _Lease = await engine.borrow_async(self._timeout, "the snapshot")
                try:
                    await lease.begin_snapshot()
                except BaseException:
                    await asyncio.shield(lease.release())  # (the reader back, even if cancelled)
                    raise
                s.reading = True
            else:
                lease = await engine.lease_async(self._timeout, "the transaction")
                try:
                    await lease.begin()
                except BaseException:
                    lease.end()
                    raise
                s.reading = False
        except Error as exc:
            raise translate(exc) from exc
        with self._lock:
            closed = self._closed
            if not closed:
                s.lease = lease
                self._open.add(s)
        if closed:  # (close() ran while this waited for the lane: it is given back)
            s.lease = lease
            await self._end(s, commit=False)
            raise ValueError("no active connection")
        s.synced = -1
        s.txn += 1
        if s.task is not None:
            self._var.set((s, s.txn))  # (the tasks this one starts from now on join it)
        task = s.task
        if task is not None and not s.watched:  # (once per task: its transactions come and go)
            s.watched = True
            task.add_done_callback(lambda _t: self._task_ended(s))
        return lease

    def _task_ended(self, s: _Session) -> None:
        if s.lease is None:
            return
        self._forget(s)
        _end_quietly(s)
        logger.warning(
            "litegate.aio: %r ended with its transaction open; it was rolled back", s.task
        )
        warnings.warn(
            "a task ended with its litegate.aio transaction open: rolled back (commit() or "
            "rollback() before the task ends)",
            ResourceWarning,
            stacklevel=1,
        )

    def _forget(self, s: _Session) -> None:
        with self._lock:
            self._open.discard(s)

    async def _end(self, s: _Session, commit: bool) -> None:
        lease = s.lease
        if lease is None:
            return
        if self._trace is not None:
            self._traced("COMMIT" if commit else "ROLLBACK")
        s.lease = None
        s.savepoints = None
        with self._lock:  # (_forget, inline)
            self._open.discard(s)
        try:
            if s.reading:
                await lease.release()
                return
            writing: AsyncWriteLease = lease  # type: ignore[assignment]  # (not reading)
            if commit:
                try:
                    await writing.commit()
                finally:
                    writing.end()
            else:
                writing.end()
        except Error as exc:
            raise translate(exc) from exc

    @property
    def per_task(self) -> bool:
        """litegate's extension: whether transaction state belongs to the calling task (the
        default) or, set to ``False``, to this connection object, as in aiosqlite -- for a
        connection that one user holds at a time (a pool's checkout: SQLAlchemy's dialect
        sets it), whose statements may run in tasks of their own (``asyncio.wait_for`` on
        Python 3.11, ``shield``, ``gather``). The writes still go through the shared engine's
        lane; other connections' transactions stay apart. Set it before the first statement.

        :raises sqlite3.ProgrammingError: a transaction is open
        """
        return self._one is None

    @per_task.setter
    def per_task(self, value: bool) -> None:
        with self._lock:
            if self._open:
                raise sqlite3.ProgrammingError(
                    "per_task cannot change while a transaction of this connection is open"
                )
            if bool(value) != (self._one is None):
                self._one = None if value else _Session(None)
