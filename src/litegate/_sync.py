"""The synchronous facade's methods (:class:`~litegate.Database` adds ``as_async``).

Every method is a thin call through the engine interface; it blocks its calling thread for
at most the stated bound and never blocks any other thread for longer than its own statement.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Self, TypeVar, TypeVarTuple, Unpack

from . import _args
from ._facade import Facade
from ._migrations import MIGRATION_BUSY_TIMEOUT, Migration, apply_migrations
from ._statements import Result, open_cursor, run_execute, run_executemany, run_script
from ._stats import Stats
from ._transaction import Snapshot, Transaction
from ._types import DEFAULT, ExcType, Limit, Params, ParamSeq, Tb, Wait

__all__ = ("SyncMethods",)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class SyncMethods(Facade):
    """The methods of :class:`~litegate.Database` (its docstring says what they promise)."""

    _close_hint = "call db.close() or use `with litegate.connect(...) as db:`"

    # ---- writes ---------------------------------------------------------------------------
    def execute(
        self, sql: str, params: Params = (), *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> Result:
        """Run one write statement in its own transaction; returns once it is committed.

        :raises WriteTimeout: the lane was not had within ``timeout`` (the write never ran)
        :raises QueryTimeout: it ran past ``time_limit`` (rolled back)
        :raises Busy: another process held the write lock past ``busy_timeout``
        :raises RolledBack: SQLite rolled the write's transaction back
        :raises TypeError, ValueError: a bad argument (README "Bad input"), before anything runs
        """
        if type(sql) is not str:
            _args.check_sql(sql)
        return self._engine.write(
            run_execute,
            (sql, params),
            self._timeout if timeout is DEFAULT else _args.timeout_arg(timeout),
            self._time_limit if time_limit is DEFAULT else _args.limit_arg(time_limit),
            sql,
        )

    def executemany(
        self, sql: str, seq: ParamSeq, *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> Result:
        """Run one statement for every parameter set, all in one transaction."""
        _args.check_sql(sql)
        wait, limit = self._t(timeout), self._l(time_limit)  # (checked before seq is consumed)
        return self._engine.write(run_executemany, (sql, _args.param_sets(seq)), wait, limit, sql)

    def executescript(
        self, script: str, *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> None:
        """Run several statements in one transaction (all or nothing)."""
        _args.check_sql(script, "script")
        self._engine.write(run_script, (script,), self._t(timeout), self._l(time_limit), None)

    def run_write(
        self,
        fn: Callable[[Any, Unpack[Ts]], T],
        *args: *Ts,
        timeout: Wait = DEFAULT,
        time_limit: Limit = DEFAULT,
    ) -> T:
        """Call ``fn(conn, *args)`` on the writer inside a transaction; returns its result.

        ``fn`` runs on the writer thread, in the caller's contextvars context, grouped with
        other writes (a failure rolls back only its own work). It must not BEGIN/COMMIT itself
        (refused with :class:`~litegate.Refused`, as are ATTACH and PRAGMAs that change the
        connection's state). If SQLite aborts the shared transaction, ``fn`` may be called
        again, so keep it free of outside side effects.
        """
        _args.check_callable(fn)
        return self._engine.write(fn, tuple(args), self._t(timeout), self._l(time_limit), None)

    def transaction(self, *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT) -> Transaction:
        """``with db.transaction() as tx:`` -- an interactive ``BEGIN IMMEDIATE`` transaction.

        Entering waits up to ``timeout`` for the lane (:class:`WriteTimeout`); the block then
        runs its statements on the calling thread. Commits at the end of the block, rolls back
        if it raises. Other writers wait meanwhile.
        """
        return Transaction(  # (_t and _l inlined: benchmarks/hot_paths.py)
            self._engine,
            self._timeout if timeout is DEFAULT else _args.timeout_arg(timeout),
            self._time_limit if time_limit is DEFAULT else _args.limit_arg(time_limit),
        )

    def migrate(
        self,
        migrations: Sequence[Migration],
        *,
        timeout: Wait = DEFAULT,
        busy_timeout: float = MIGRATION_BUSY_TIMEOUT,
    ) -> int:
        """Apply migrations past ``PRAGMA user_version`` in one transaction; returns the version.

        All or nothing. Safe when several processes start at once: they serialise on the
        write lock (each waits up to ``busy_timeout`` seconds, default 60, for the one that
        applies them) and find the work done. :raises MigrationError: a step failed
        """
        _args.check_migrations(migrations)
        busy = _args.check_seconds(busy_timeout, "busy_timeout")
        with Transaction(self._engine, self._t(timeout), None, busy) as tx:
            _, after = tx.run(apply_migrations, migrations)
        return after

    # ---- reads ----------------------------------------------------------------------------
    def query(
        self, sql: str, params: Params = (), *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> list[Any]:
        """All rows of a read-only query, from a reader connection.

        :raises PoolTimeout: no reader became free within ``timeout``
        :raises TypeError, ValueError: a bad argument (README "Bad input")
        """
        # query and query_one are hand-inlined copies (benchmarks/hot_paths.py: a shared
        # helper costs a frame per read). A non-str sql is explained after sqlite3 refused it,
        # not checked up front: free on the hot path, and nothing ran.
        try:
            rows: list[Any] = self._engine.query(
                sql,
                params,
                self._timeout if timeout is DEFAULT else _args.timeout_arg(timeout),
                self._time_limit if time_limit is DEFAULT else _args.limit_arg(time_limit),
                False,
            )
        except TypeError:
            if not isinstance(sql, str):
                raise _args.not_a_str(sql) from None
            raise
        return rows

    def query_one(
        self, sql: str, params: Params = (), *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> Any:
        """The first row, or ``None``."""
        try:
            return self._engine.query(
                sql,
                params,
                self._timeout if timeout is DEFAULT else _args.timeout_arg(timeout),
                self._time_limit if time_limit is DEFAULT else _args.limit_arg(time_limit),
                True,
            )
        except TypeError:
            if not isinstance(sql, str):
                raise _args.not_a_str(sql) from None
            raise

    def query_value(
        self, sql: str, params: Params = (), *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> Any:
        """The first column of the first row, or ``None`` when there is no row."""
        row = self.query_one(sql, params, timeout=timeout, time_limit=time_limit)
        return None if row is None else row[0]

    def iterate(
        self, sql: str, params: Params = (), *, timeout: Wait = DEFAULT, arraysize: int = 256
    ) -> Generator[Any, None, None]:
        """Stream rows without loading them all. Holds a reader (with ``readers=0``: the lane)
        from the first row until the iteration ends or the generator is closed; close it early
        with ``contextlib.closing`` when you stop before the end. Bad arguments raise here,
        not at the first row."""
        _args.check_sql(sql)
        _args.check_arraysize(arraysize)
        return self._iterate(sql, params, self._t(timeout), arraysize)

    def _iterate(
        self, sql: str, params: Params, timeout: float | None, arraysize: int
    ) -> Generator[Any, None, None]:
        lease = self._engine.borrow(timeout, "the iteration")
        try:
            cur = lease.run(open_cursor, (sql, params), sql, None)
            try:
                while rows := cur.fetchmany(arraysize):
                    yield from rows
            finally:
                cur.close()
        finally:
            lease.release()

    def snapshot(self, *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT) -> Snapshot:
        """``with db.snapshot() as snap:`` -- several queries that see one committed state."""
        return Snapshot(self._engine, self._t(timeout), self._l(time_limit))

    def run_read(
        self,
        fn: Callable[[Any, Unpack[Ts]], T],
        *args: *Ts,
        timeout: Wait = DEFAULT,
        time_limit: Limit = DEFAULT,
    ) -> T:
        """Call ``fn(conn, *args)`` with a read-only connection, in the calling thread
        (with ``readers=0``: on the writer thread, outside any transaction)."""
        _args.check_callable(fn)
        return self._engine.read(fn, tuple(args), self._t(timeout), self._l(time_limit), None)

    # ---- the rest -------------------------------------------------------------------------
    def stats(self) -> Stats:
        """A snapshot of queue, batch, pool, latency, busy and WAL figures. Never blocks."""
        return self._engine.stats()

    def close(self, timeout: float | None = None) -> None:
        """Drain queued writes, checkpoint the WAL, close every connection. Idempotent.

        Blocks up to ``timeout`` seconds (default max(timeout option, 5 s)); writes still queued
        after that fail with :class:`Closed`. :raises TypeError, ValueError: a bad ``timeout``
        (checked first: the database stays open)
        """
        self._engine.close(_args.check_close_timeout(timeout))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<litegate.{type(self).__name__} {self.path!r} {state}>"
