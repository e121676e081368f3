"""``Database``: the synchronous facade. Safe to share between any number of threads."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, TypeVarTuple, Unpack

from ._config import (
    DEFAULT,
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_READERS,
    DEFAULT_TIMEOUT,
    Options,
    Readers,
    Synchronous,
    is_memory_path,
)
from ._connection import (
    Params,
    Result,
    run_execute,
    run_executemany,
    run_script,
)
from ._engine import Engine
from ._facade import Facade
from ._migrations import MIGRATION_BUSY_TIMEOUT, Migration, apply_migrations
from ._stats import Stats
from ._transaction import Snapshot, Transaction

if TYPE_CHECKING:
    from ._async import AsyncDatabase

__all__ = ("Database", "connect")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Database(Facade):
    """One SQLite database shared by every thread of the program.

    Writes go through the write lane (group commit, durable when the call returns); reads use
    the read pool in the calling thread. Every method is thread-safe. Blocking bounds: waiting
    for a reader, for queue space or for the lane is limited by ``timeout`` (default: the
    database's, 5 s; ``None`` = no bound) and raises :class:`PoolTimeout`/:class:`WriteTimeout`;
    a statement's run time is limited by ``time_limit`` (default: none) and raises
    :class:`QueryTimeout`. sqlite3's own errors pass through unchanged. After :meth:`close`,
    every call raises :class:`Closed`.
    """

    _close_hint = "call db.close() or use `with litegate.connect(...) as db:`"

    # ---- writes ---------------------------------------------------------------------------
    def execute(
        self,
        sql: str,
        params: Params = (),
        *,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> Result:
        """Run one write statement in its own transaction; returns once it is committed.

        :raises WriteTimeout: the lane was not had within ``timeout`` (the write never ran)
        :raises QueryTimeout: it ran past ``time_limit`` (rolled back)
        :raises Busy: another process held the write lock past ``busy_timeout``
        """
        return self._engine.write(
            run_execute,
            (sql, params),
            self._timeout if timeout is DEFAULT else timeout,
            self._time_limit if time_limit is DEFAULT else time_limit,
            sql,
        )

    def executemany(
        self,
        sql: str,
        seq: Iterable[Params],
        *,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> Result:
        """Run one statement for every parameter set, all in one transaction."""
        rows = seq if isinstance(seq, list | tuple) else list(seq)
        return self._engine.write(
            run_executemany, (sql, rows), self._t(timeout), self._l(time_limit), sql
        )

    def executescript(
        self, script: str, *, timeout: float | None = DEFAULT, time_limit: float | None = DEFAULT
    ) -> None:
        """Run several statements in one transaction (all or nothing)."""
        self._engine.write(run_script, (script,), self._t(timeout), self._l(time_limit), None)

    def run_write(
        self,
        fn: Callable[[Any, Unpack[Ts]], T],
        *args: *Ts,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> T:
        """Call ``fn(conn, *args)`` on the writer inside a transaction; returns its result.

        ``fn`` runs on the writer thread, in the caller's contextvars context, grouped with
        other writes (a failure rolls back only its own work). It must not BEGIN/COMMIT itself
        (refused with ``sqlite3.DatabaseError``: not authorized). If SQLite aborts the shared
        transaction, ``fn`` may be called again, so keep it free of outside side effects.
        """
        return self._engine.write(fn, tuple(args), self._t(timeout), self._l(time_limit), None)

    def transaction(
        self, *, timeout: float | None = DEFAULT, time_limit: float | None = DEFAULT
    ) -> Transaction:
        """``with db.transaction() as tx:`` -- an interactive ``BEGIN IMMEDIATE`` transaction.

        Entering waits up to ``timeout`` for the lane (:class:`WriteTimeout`); the block then
        runs its statements on the calling thread. Commits at the end of the block, rolls back
        if it raises. Other writers wait meanwhile.
        """
        return Transaction(self._engine, self._t(timeout), self._l(time_limit))

    def migrate(
        self,
        migrations: Sequence[Migration],
        *,
        timeout: float | None = DEFAULT,
        busy_timeout: float = MIGRATION_BUSY_TIMEOUT,
    ) -> int:
        """Apply migrations past ``PRAGMA user_version`` in one transaction; returns the version.

        All or nothing. Safe when several processes start at once: they serialise on the
        write lock (each waits up to ``busy_timeout`` seconds, default 60, for the one that
        applies them) and find the work done. :raises MigrationError: a step failed
        """
        with Transaction(self._engine, self._t(timeout), None, busy_timeout) as tx:
            _, after = apply_migrations(tx._conn, migrations)
        return after

    # ---- reads ----------------------------------------------------------------------------
    def query(
        self,
        sql: str,
        params: Params = (),
        *,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> list[Any]:
        """All rows of a read-only query, from a reader connection.

        :raises PoolTimeout: no reader became free within ``timeout``
        """
        rows: list[Any] = self._engine.query(
            sql,
            params,
            self._timeout if timeout is DEFAULT else timeout,
            self._time_limit if time_limit is DEFAULT else time_limit,
            False,
        )
        return rows

    def query_one(
        self,
        sql: str,
        params: Params = (),
        *,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> Any:
        """The first row, or ``None``."""
        return self._engine.query(
            sql,
            params,
            self._timeout if timeout is DEFAULT else timeout,
            self._time_limit if time_limit is DEFAULT else time_limit,
            True,
        )

    def query_value(
        self,
        sql: str,
        params: Params = (),
        *,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> Any:
        """The first column of the first row, or ``None`` when there is no row."""
        row = self.query_one(sql, params, timeout=timeout, time_limit=time_limit)
        return None if row is None else row[0]

    def iterate(
        self,
        sql: str,
        params: Params = (),
        *,
        timeout: float | None = DEFAULT,
        arraysize: int = 256,
    ) -> Iterator[Any]:
        """Stream rows without loading them all. Holds a reader (with ``readers=0``: the lane)
        until the iteration ends or the generator is closed; close it early with
        ``contextlib.closing`` when you stop before the end."""
        engine = self._engine
        engine.check()
        pool = engine.pool
        if pool is None:
            if engine.owns_lane():
                yield from _stream(engine.lane.conn, sql, params, arraysize)
                return
            hold = engine.hold_lane(self._t(timeout), "the iteration")
            try:
                yield from _stream(engine.lane.conn, sql, params, arraysize)
            finally:
                engine.release_lane(hold)
            return
        conn = pool.acquire(engine._deadline(self._t(timeout)))
        try:
            yield from _stream(conn, sql, params, arraysize)
        finally:
            pool.release(conn)

    def snapshot(
        self, *, timeout: float | None = DEFAULT, time_limit: float | None = DEFAULT
    ) -> Snapshot:
        """``with db.snapshot() as snap:`` -- several queries that see one committed state."""
        return Snapshot(self._engine, self._t(timeout), self._l(time_limit))

    def run_read(
        self,
        fn: Callable[[Any, Unpack[Ts]], T],
        *args: *Ts,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> T:
        """Call ``fn(conn, *args)`` with a read-only connection, in the calling thread
        (with ``readers=0``: on the writer thread, outside any transaction)."""
        return self._engine.read(fn, tuple(args), self._t(timeout), self._l(time_limit), None)

    # ---- the rest -------------------------------------------------------------------------
    def stats(self) -> Stats:
        """A snapshot of queue, batch, pool, latency, busy and WAL figures. Never blocks."""
        return self._engine.stats()

    def close(self, timeout: float | None = None) -> None:
        """Drain queued writes, checkpoint the WAL, close every connection. Idempotent.

        Blocks up to ``timeout`` seconds (default max(timeout option, 5 s)); writes still queued
        after that fail with :class:`Closed`.
        """
        self._engine.close(timeout)

    def as_async(self) -> AsyncDatabase:
        """An :class:`AsyncDatabase` on the same engine: one write lane for ``def`` and
        ``async def`` code alike. Closing stays this object's job."""
        from ._async import AsyncDatabase

        return AsyncDatabase(self._engine, owner=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<litegate.Database {self.path!r} {state}>"


def _stream(conn: Any, sql: str, params: Params, arraysize: int) -> Iterator[Any]:
    cur = conn.execute(sql, params)
    try:
        while rows := cur.fetchmany(arraysize):
            yield from rows
    finally:
        cur.close()


def _options(
    path: str | os.PathLike[str],
    *,
    readers: Readers | None = None,
    synchronous: Synchronous = "FULL",
    timeout: float | None = DEFAULT_TIMEOUT,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    time_limit: float | None = None,
    **options: Any,
) -> Options:
    path = os.fspath(path)
    uri = bool(options.get("uri", False))
    if readers is None:
        readers = 0 if is_memory_path(path, uri) else DEFAULT_READERS
    return Options(
        path=path,
        readers=readers,
        synchronous=synchronous,
        timeout=timeout,
        busy_timeout=busy_timeout,
        time_limit=time_limit,
        **options,
    )


def connect(
    path: str | os.PathLike[str],
    *,
    readers: Readers | None = None,
    synchronous: Synchronous = "FULL",
    timeout: float | None = DEFAULT_TIMEOUT,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    time_limit: float | None = None,
    **options: Any,
) -> Database:
    """Open a database for the whole program: threads may share the returned object.

    :param path: file path, or ``":memory:"`` (one connection; reads go through the lane)
    :param readers: reader connections: ``N`` (default 4), ``"per-thread"`` or ``0``
    :param synchronous: ``"FULL"`` (default, durable) or ``"NORMAL"``
    :param timeout: default wait bound in seconds for readers and the write lane
    :param busy_timeout: seconds to keep retrying while another process holds the write lock
    :param time_limit: default statement time limit in seconds (``None``: no limit)
    :param options: the other fields of :class:`litegate.Options`
    :raises ValueError: an invalid option
    :raises sqlite3.Error: the file cannot be opened

    Blocks while the writer connection is opened (at most ``busy_timeout`` when another process
    is initialising the file).
    """
    opts = _options(
        path,
        readers=readers,
        synchronous=synchronous,
        timeout=timeout,
        busy_timeout=busy_timeout,
        time_limit=time_limit,
        **options,
    )
    return Database(Engine(opts))
