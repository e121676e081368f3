"""Interactive transactions, savepoints and read snapshots (synchronous).

A :class:`Transaction` holds a lease of the write lane: the caller's own thread runs every
statement on the writer connection (no thread hop). A :class:`Snapshot` holds one reader (with
``readers=0``: the lane) inside a read transaction so that several queries see one state. Both
belong to the thread that entered them.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Callable, Generator
from typing import Any, NoReturn, Self, TypeVar

from . import _statements as stmt
from ._args import (
    check_arraysize,
    check_callable,
    check_param_sets,
    check_sql,
    limit_arg,
    not_a_str,
)
from ._engine import Engine, ReadLease, WriteLease
from ._errors import Misuse, RolledBack
from ._statements import Result
from ._types import DEFAULT, Bound, ExcType, Limit, Params, ParamSeq, Tb

__all__ = ("OpenCursors", "Savepoint", "Snapshot", "Transaction", "TransactionBase")

logger = logging.getLogger("litegate")
_savepoint_ids = itertools.count(1)
T = TypeVar("T")
# The statement functions whose first argument is the caller's SQL text (checked lazily).
_SQL_FIRST = (stmt.run_query, stmt.fetch, stmt.run_execute)


class OpenCursors:
    """The cursors of a block's iterations still open (the block's user's alone), closed when
    the block ends, before it gives its connection back.

    An iteration left early (``break``, an exception, a cancellation) is finalized later --
    after the block, when its connection belongs to someone else -- and an open cursor keeps
    its statement's snapshot alive even after the block's ROLLBACK: the next borrower of that
    reader would read stale data, and the writer would stay in a read transaction.
    """

    _cursors: set[Any] | None  # None until the first iteration (set by each __init__: an
    # instance attribute is the cheaper read in every block's exit)

    def _track(self, cursor: Any) -> set[Any]:
        cursors = self._cursors
        if cursors is None:
            cursors = self._cursors = set()
        cursors.add(cursor)
        return cursors

    def _open_cursors(self) -> list[Any]:
        """The block is ending: the cursors its iterations left open (forgotten here). (Call
        it only if ``_cursors``: a block that never iterated pays one attribute read.)"""
        cursors = self._cursors
        if not cursors:
            return []
        left = list(cursors)
        cursors.clear()
        return left


class _Reads(OpenCursors):
    """Query methods shared by transactions and snapshots, over a lease."""

    _time_limit: float | None

    def _lease(self) -> ReadLease:
        """The live lease. :raises Misuse: outside the block"""
        raise NotImplementedError

    def _call(self, time_limit: Limit, sql: str | None, fn: Any, *args: Any) -> Any:
        lease = self._lease()
        limit = self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)
        try:
            return lease.run(fn, args, sql, limit)
        except BaseException as exc:
            self._statement_failed(exc, args[0] if fn in _SQL_FIRST else "")

    def _query(self, time_limit: Limit, sql: str, params: Params) -> list[Any]:
        """The rows of a query: ``_call`` of ``run_query``, through the lease's flattened
        :meth:`~litegate._engine.ReadLease.query` (one frame less on every read)."""
        lease = self._lease()
        limit = self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)
        try:
            return lease.query(sql, params, limit)
        except BaseException as exc:
            self._statement_failed(exc, sql)

    def _statement_failed(self, exc: BaseException, sql: object) -> NoReturn:
        """A statement raised ``exc``: note it (:meth:`_after_error`), then raise it -- as the
        caller's bad SQL text if that is what the ``TypeError`` was about (checked here, not
        up front: free on the hot path)."""
        self._after_error()
        if isinstance(exc, TypeError) and not isinstance(sql, str):
            raise not_a_str(sql) from None
        raise exc

    def _after_error(self) -> None:
        """Hook: a statement failed (transactions check whether SQLite ended them)."""

    def query(self, sql: str, params: Params = (), *, time_limit: Limit = DEFAULT) -> list[Any]:
        """All rows of a query, as a list."""
        return self._query(time_limit, sql, params)

    def query_one(self, sql: str, params: Params = (), *, time_limit: Limit = DEFAULT) -> Any:
        """The first row, or ``None``."""
        return self._call(time_limit, sql, stmt.fetch, sql, params, True)

    def query_value(self, sql: str, params: Params = (), *, time_limit: Limit = DEFAULT) -> Any:
        """The first column of the first row, or ``None`` when there is no row."""
        # (query and first_value inlined: two frames of a transaction, benchmarks/hot_paths.py)
        rows = self._query(time_limit, sql, params)
        return rows[0][0] if rows else None

    def iterate(
        self, sql: str, params: Params = (), *, arraysize: int = 256
    ) -> Generator[Any, None, None]:
        """Stream rows (fetched ``arraysize`` at a time) while the transaction/snapshot is open.
        Bad arguments raise here, not at the first row."""
        check_sql(sql)
        check_arraysize(arraysize)
        return self._iterate(sql, params, arraysize)

    def _iterate(self, sql: str, params: Params, arraysize: int) -> Generator[Any, None, None]:
        cur = self._lease().run(stmt.open_cursor, (sql, params), sql, None)
        cursors = self._track(cur)
        try:
            while True:
                self._lease()  # checked before every page: never read after the block ended
                rows = cur.fetchmany(arraysize)
                if not rows:
                    return
                yield from rows
        finally:
            if cur in cursors:  # else the block has ended and closed it
                cursors.discard(cur)
                cur.close()


def _release(lease: WriteLease) -> None:
    """``lease.release()``, completed even if an interrupt (Ctrl-C) cuts it short -- a lane
    left held would block every writer -- and the interrupt raised afterwards."""
    interrupted: BaseException | None = None
    for _ in range(3):  # (release is idempotent: a second call finishes what the first began)
        try:
            lease.release()
            break
        except (KeyboardInterrupt, SystemExit) as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


class TransactionBase:
    """What a sync and an async transaction are given: the engine and their bounds."""

    def __init__(
        self, engine: Engine, timeout: Bound, time_limit: Bound, busy_timeout: float | None = None
    ) -> None:
        self._engine = engine
        self._timeout = timeout
        self._time_limit = time_limit
        self._busy_timeout = busy_timeout  # None: the database's
        self._entered = False
        self._active = False
        self._cursors: set[Any] | None = None  # (see OpenCursors)


class Transaction(TransactionBase, _Reads):
    """``with db.transaction() as tx:`` -- ``BEGIN IMMEDIATE`` on the write lane.

    Commits when the block ends normally, rolls back when it raises. Reads through ``tx`` see
    the transaction's own writes. Nest with :meth:`savepoint`. While the block runs, every other
    writer waits (report: ``hold_warn``), so keep it short. If SQLite rolls the transaction
    back (an interrupted or failed statement), later statements and the block's end raise
    :class:`RolledBack`: nothing of it commits.
    """

    _write_lease: WriteLease | None = None  # (class defaults: no __init__ of its own)
    _aborted: str | None = None

    def __enter__(self) -> Self:
        if self._entered:
            raise Misuse("a Transaction can be entered only once")
        engine = self._engine
        lease: WriteLease | None = None
        try:
            lease = engine.lease(self._timeout, "the transaction", self)
            self._entered = True  # (not before: a timed-out enter may be retried)
            lease.begin(self._busy_timeout)
            self._write_lease = lease
            self._active = True
        except BaseException:  # (an interrupt included: the lane is never left held)
            self._active = False
            if lease is not None:
                _release(lease)
            engine.recover(self)  # (interrupted before ``lease`` was stored)
            raise
        return self

    def __exit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        lease = self._write_lease
        assert lease is not None
        try:
            if self._cursors:  # (this thread holds the lane)
                stmt.close_cursors(None, self._open_cursors())
            try:
                open_txn = self._active and lease.in_transaction
            except sqlite3.ProgrammingError:  # (its connection was closed under it)
                open_txn = False
            if open_txn:
                if exc_type is None:
                    lease.commit()
                else:
                    lease.rollback()  # never mask the original exception
            elif exc_type is None and self._active:
                # It began a transaction that is gone without a COMMIT: never report success.
                raise RolledBack(
                    "the transaction did not commit: "
                    + (
                        self._aborted
                        or "it was rolled back before its COMMIT (the database was closed, "
                        "or its write lane stopped)"
                    )
                )
        finally:
            self._active = False
            try:
                lease.release()
            except (KeyboardInterrupt, SystemExit):
                _release(lease)  # (finish what the interrupt cut short, then raise it)
                raise

    def _call(self, time_limit: Limit, sql: str | None, fn: Any, *args: Any) -> Any:
        # _Reads._call with _lease inlined: every statement of a transaction runs it
        # (benchmarks/hot_paths.py). Keep the two in step.
        lease = self._write_lease
        if not self._active or lease is None or self._aborted:
            lease = self._lease()  # (raises, saying why)
        limit = self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)
        try:
            return lease.run(fn, args, sql, limit)
        except BaseException as exc:
            self._statement_failed(exc, args[0] if fn in _SQL_FIRST else "")

    def query_value(self, sql: str, params: Params = (), *, time_limit: Limit = DEFAULT) -> Any:
        """The first column of the first row, or ``None`` when there is no row."""
        # (_query inlined: two frames of every read of a transaction, hot_paths.py tx)
        lease = self._write_lease
        if not self._active or lease is None or self._aborted:
            lease = self._lease()  # (raises, saying why)
        limit = self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)
        try:
            rows = lease.query(sql, params, limit)
        except BaseException as exc:
            self._statement_failed(exc, sql)
        return rows[0][0] if rows else None

    def _query(self, time_limit: Limit, sql: str, params: Params) -> list[Any]:
        # _Reads._query with _lease inlined, as _call. Keep the four in step.
        lease = self._write_lease
        if not self._active or lease is None or self._aborted:
            lease = self._lease()  # (raises, saying why)
        limit = self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)
        try:
            return lease.query(sql, params, limit)
        except BaseException as exc:
            self._statement_failed(exc, sql)

    def _lease(self) -> WriteLease:
        lease = self._write_lease
        if not self._active or lease is None:
            raise Misuse("the transaction is not active (use it inside its `with` block)")
        if self._aborted:
            raise RolledBack(f"the transaction was already rolled back: {self._aborted}")
        return lease

    def _in_transaction(self) -> bool:
        lease = self._write_lease
        return self._active and lease is not None and lease.in_transaction

    def _after_error(self) -> None:
        if self._active and not self._in_transaction():
            self._aborted = (
                "SQLite rolled the whole transaction back after a failed statement "
                "(an interrupt, an I/O error or an ON CONFLICT ROLLBACK); leave the block "
                "and start again"
            )

    def execute(self, sql: str, params: Params = (), *, time_limit: Limit = DEFAULT) -> Result:
        """Run one statement in the transaction."""
        # (_call inlined: every write of every transaction runs it, benchmarks/hot_paths.py)
        lease = self._write_lease
        if not self._active or lease is None or self._aborted:
            lease = self._lease()  # (raises, saying why)
        limit = self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)
        try:
            result: Result = lease.run(stmt.run_execute, (sql, params), sql, limit)
            return result
        except BaseException as exc:
            self._statement_failed(exc, sql)

    def executemany(self, sql: str, seq: ParamSeq, *, time_limit: Limit = DEFAULT) -> Result:
        """Run one statement for every parameter set in ``seq`` (streamed: an iterator is not
        loaded first)."""
        check_sql(sql)
        check_param_sets(seq)
        result: Result = self._call(time_limit, sql, stmt.run_executemany, sql, seq)
        return result

    def executescript(self, script: str, *, time_limit: Limit = DEFAULT) -> None:
        """Run several statements (inside this transaction, unlike sqlite3's executescript)."""
        check_sql(script, "script")
        self._call(time_limit, None, stmt.run_script, script)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(conn, *args)`` on the writer connection, inside this transaction."""
        check_callable(fn)
        result: T = self._call(DEFAULT, None, fn, *args)
        return result

    def savepoint(self) -> Savepoint:
        """A nested block: rolled back alone if it raises, kept (until COMMIT) if it does not."""
        self._lease()
        return Savepoint(self)


class Savepoint:
    """``with tx.savepoint():`` -- ``SAVEPOINT``/``RELEASE``, ``ROLLBACK TO`` on error."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self._name = f"litegate_sp_{next(_savepoint_ids)}"

    def __enter__(self) -> Self:
        self._tx.run(stmt.exec_sql, f"SAVEPOINT {self._name}")
        return self

    def __exit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        tx = self._tx
        if not tx._in_transaction():
            tx._after_error()
            return
        if exc_type is None:
            tx.run(stmt.exec_sql, f"RELEASE {self._name}")
            return
        try:
            tx.run(stmt.rollback_to_savepoint, self._name)
        except Exception:  # never mask the original exception
            logger.exception("litegate: rolling back savepoint %s failed", self._name)


class Snapshot(_Reads):
    """``with db.snapshot() as snap:`` -- every query sees the same committed state.

    Holds one reader inside a read transaction (with ``readers=0``: the write lane) until the
    block ends. A long snapshot keeps the WAL from being reset; keep it short.
    """

    def __init__(self, engine: Engine, timeout: Bound, time_limit: Bound) -> None:
        self._engine = engine
        self._timeout = timeout
        self._time_limit = time_limit
        self._read_lease: ReadLease | None = None
        self._cursors = None

    def __enter__(self) -> Self:
        lease = self._engine.borrow(self._timeout, "the snapshot")
        try:
            lease.begin_snapshot()
        except BaseException:
            lease.release()
            raise
        self._read_lease = lease
        return self

    def __exit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        lease, self._read_lease = self._read_lease, None
        if lease is not None:
            if self._cursors:  # (this thread holds it)
                stmt.close_cursors(None, self._open_cursors())
            lease.release()  # its check-in (or the lane's release) ends the read transaction

    def _lease(self) -> ReadLease:
        lease = self._read_lease
        if lease is None:
            raise Misuse("the snapshot is not active (use it inside its `with` block)")
        return lease
