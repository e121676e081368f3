"""Interactive transactions, savepoints and read snapshots (synchronous).

A :class:`Transaction` holds the write lane: the writer thread is parked and the caller's own
thread runs every statement on the writer connection (no thread hop). A :class:`Snapshot` holds
one reader inside ``BEGIN`` so that several queries see one consistent state.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ._config import DEFAULT
from ._connection import (
    BEGIN_READ,
    COMMIT,
    ROLLBACK,
    Params,
    Result,
    begin_immediate,
    end_transaction,
    run_execute,
    run_executemany,
    run_limited,
    run_query,
    run_script,
)
from ._errors import Error, Misuse

if TYPE_CHECKING:
    from ._engine import Engine
    from ._jobs import LaneHold

__all__ = ("Savepoint", "Snapshot", "Transaction")

logger = logging.getLogger("litegate")
_savepoint_ids = itertools.count(1)


def _first_value(rows: list[Any]) -> Any:
    return rows[0][0] if rows else None


class _Reads:
    """Query methods shared by transactions and snapshots."""

    _conn: sqlite3.Connection
    _time_limit: float | None

    def _check(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _limit(self, time_limit: float | None) -> float | None:
        return self._time_limit if time_limit is DEFAULT else time_limit

    def _call(self, time_limit: float | None, sql: str | None, fn: Any, *args: Any) -> Any:
        conn = self._check()
        try:
            return run_limited(conn, self._limit(time_limit), sql, fn, *args)
        except BaseException:
            self._after_error()
            raise

    def _after_error(self) -> None:
        """Hook: a statement failed (transactions check whether SQLite ended them)."""

    def query(
        self, sql: str, params: Params = (), *, time_limit: float | None = DEFAULT
    ) -> list[Any]:
        """All rows of a query, as a list."""
        rows: list[Any] = self._call(time_limit, sql, run_query, sql, params)
        return rows

    def query_one(
        self, sql: str, params: Params = (), *, time_limit: float | None = DEFAULT
    ) -> Any:
        """The first row, or ``None``."""
        rows = self.query(sql, params, time_limit=time_limit)
        return rows[0] if rows else None

    def query_value(
        self, sql: str, params: Params = (), *, time_limit: float | None = DEFAULT
    ) -> Any:
        """The first column of the first row, or ``None`` when there is no row."""
        return _first_value(self.query(sql, params, time_limit=time_limit))

    def iterate(self, sql: str, params: Params = (), *, arraysize: int = 256) -> Iterator[Any]:
        """Stream rows (fetched ``arraysize`` at a time) while the transaction/snapshot is open."""
        cur = self._check().execute(sql, params)
        try:
            while rows := cur.fetchmany(arraysize):
                yield from rows
        finally:
            cur.close()


class Transaction(_Reads):
    """``with db.transaction() as tx:`` -- ``BEGIN IMMEDIATE`` on the write lane.

    Commits when the block ends normally, rolls back when it raises. Reads through ``tx`` see
    the transaction's own writes. Nest with :meth:`savepoint`. While the block runs, every other
    writer waits (report: ``hold_warn``), so keep it short.
    """

    def __init__(
        self,
        engine: Engine,
        timeout: float | None,
        time_limit: float | None,
        busy_timeout: float | None = None,
    ) -> None:
        self._engine = engine
        self._timeout = timeout
        self._time_limit = time_limit
        self._busy_timeout = engine.opts.busy_timeout if busy_timeout is None else busy_timeout
        self._hold: LaneHold | None = None
        self._active = False
        self._aborted: str | None = None

    def __enter__(self) -> Self:
        if self._hold is not None:
            raise Misuse("a Transaction object can be entered only once")
        engine = self._engine
        self._hold = engine.hold_lane(self._timeout, "the transaction")
        try:
            lane = engine.lane
            self._conn = lane.conn
            begin_immediate(self._conn, lane.guard, self._busy_timeout, engine.counters)
        except BaseException:
            engine.release_lane(self._hold)
            raise
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        engine = self._engine
        guard = engine.lane.guard
        assert self._hold is not None
        try:
            if self._active and self._conn.in_transaction:
                if exc_type is None:
                    try:
                        end_transaction(self._conn, guard, COMMIT)
                    except BaseException:
                        self._rollback_quietly()
                        raise
                else:
                    self._rollback_quietly()  # never mask the original exception
            elif exc_type is None and self._aborted:
                raise Error(f"the transaction did not commit: {self._aborted}")
        finally:
            self._active = False
            engine.counters.transactions += 1
            engine.release_lane(self._hold)

    def _rollback_quietly(self) -> None:
        try:
            end_transaction(self._conn, self._engine.lane.guard, ROLLBACK)
        except Exception:
            logger.exception("litegate: rollback failed")

    def _check(self) -> sqlite3.Connection:
        if not self._active:
            raise Misuse("the transaction is not active (use it inside its `with` block)")
        if self._aborted:
            raise Misuse(f"the transaction was already rolled back: {self._aborted}")
        return self._conn

    def _after_error(self) -> None:
        if self._active and not self._conn.in_transaction:
            self._aborted = (
                "SQLite rolled the whole transaction back after a failed statement "
                "(an interrupt, an I/O error or an ON CONFLICT ROLLBACK); leave the block "
                "and start again"
            )

    def execute(
        self, sql: str, params: Params = (), *, time_limit: float | None = DEFAULT
    ) -> Result:
        """Run one statement in the transaction."""
        result: Result = self._call(time_limit, sql, run_execute, sql, params)
        return result

    def executemany(
        self, sql: str, seq: Iterable[Params], *, time_limit: float | None = DEFAULT
    ) -> Result:
        """Run one statement for every parameter set in ``seq``."""
        result: Result = self._call(time_limit, sql, run_executemany, sql, seq)
        return result

    def executescript(self, script: str, *, time_limit: float | None = DEFAULT) -> None:
        """Run several statements (inside this transaction, unlike sqlite3's executescript)."""
        self._call(time_limit, None, run_script, script)

    def savepoint(self) -> Savepoint:
        """A nested block: rolled back alone if it raises, kept (until COMMIT) if it does not."""
        self._check()
        return Savepoint(self)


class Savepoint:
    """``with tx.savepoint():`` -- ``SAVEPOINT``/``RELEASE``, ``ROLLBACK TO`` on error."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self._name = f"litegate_sp_{next(_savepoint_ids)}"

    def __enter__(self) -> Self:
        self._tx._check().execute(f"SAVEPOINT {self._name}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._tx._conn
        if not conn.in_transaction:
            self._tx._after_error()
            return
        if exc_type is None:
            conn.execute(f"RELEASE {self._name}")
            return
        try:
            conn.execute(f"ROLLBACK TO {self._name}")
            conn.execute(f"RELEASE {self._name}")
        except Exception:  # never mask the original exception
            logger.exception("litegate: rolling back savepoint %s failed", self._name)


class Snapshot(_Reads):
    """``with db.snapshot() as snap:`` -- every query sees the same committed state.

    Holds one reader inside a read transaction (with ``readers=0``: the write lane) until the
    block ends. A long snapshot keeps the WAL from being reset; keep it short.
    """

    def __init__(self, engine: Engine, timeout: float | None, time_limit: float | None) -> None:
        self._engine = engine
        self._timeout = timeout
        self._time_limit = time_limit
        self._hold: LaneHold | None = None
        self._active = False

    def __enter__(self) -> Self:
        engine = self._engine
        engine.check()
        pool = engine.pool
        if pool is None:
            if engine.owns_lane():
                raise Misuse(
                    "db.snapshot() inside a transaction with readers=0 would wait for the "
                    "transaction; read through the transaction object instead"
                )
            self._hold = engine.hold_lane(self._timeout, "the snapshot")
            self._conn = engine.lane.conn
        else:
            self._conn = pool.acquire(engine._deadline(self._timeout))
        try:
            if pool is None:  # on the writer: its guard lets only this thread begin
                guard = engine.lane.guard
                guard.permit()
                try:
                    self._conn.execute(BEGIN_READ)
                finally:
                    guard.revoke()
            else:  # a reader has no guard; the lane's is none of its business
                self._conn.execute(BEGIN_READ)
            self._conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # pin it now
        except BaseException:
            self._give_back()
            raise
        self._active = True
        return self

    def _give_back(self) -> None:
        engine = self._engine
        try:
            if self._hold is not None:
                end_transaction(self._conn, engine.lane.guard, ROLLBACK)
        finally:
            if self._hold is not None:
                engine.release_lane(self._hold)
            elif engine.pool is not None:
                engine.pool.release(self._conn)  # check-in rolls the read transaction back

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active = False
        self._give_back()

    def _check(self) -> sqlite3.Connection:
        if not self._active:
            raise Misuse("the snapshot is not active (use it inside its `with` block)")
        return self._conn
