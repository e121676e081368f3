"""The thread-side contenders: ways of sharing one SQLite file between threads, written
plainly and correctly.

One small interface, :class:`Contender` (called from worker threads): ``open``, ``read``,
``write``, ``scan``, ``transfer``, ``worker_exit`` and ``close``. The task-side flavour is in
:mod:`.acontenders`; its ``ToThread`` turns any contender here into an async one behind
``asyncio.to_thread``.

* ``sqlite3 per-thread``: one connection per thread (``threading.local``), ``timeout=5``;
  transfers retried on ``database is locked`` (counted);
* ``sqlite3 queue pool``: a ``queue.Queue`` of N connections (``check_same_thread=False``),
  transfers retried likewise;
* ``sqlite3 + Lock``: one connection behind a ``threading.Lock``;
* ``ceiling: bare group commit``: the leanest group commit Python allows, no guarantees
  (writes through a writer thread; transfers taking turns on one connection);
* ``litegate``: ``db.query_one``/``db.query`` for reads, ``db.execute`` for writes (group
  commit), ``with db.transaction() as tx`` for transfers.

Each remedy write is its own ``BEGIN IMMEDIATE`` ... ``COMMIT`` (:mod:`.plain`); an error
(``database is locked`` included) propagates to the runner, which counts it. Every connection
runs in WAL mode at the case's ``synchronous`` level.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from _thread import allocate_lock
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import litegate

from .._config import Readers, Synchronous
from .plain import (
    open_plain,
    plain_read,
    plain_scan,
    plain_transfer,
    plain_write,
    retrying,
    transfer_body,
)
from .workloads import BUSY_TIMEOUT, SQL_BALANCE, SQL_CREDIT, SQL_DEBIT, SQL_READ, SQL_SCAN, Case

__all__ = (
    "ALL_SHAPES",
    "BareGroupCommit",
    "Contender",
    "DEFAULT_POOL_SIZE",
    "Litegate",
    "Locked",
    "PerThread",
    "QueuePool",
    "Raw",
    "litegate_figures",
)

DEFAULT_POOL_SIZE = 4
# The bare ceiling's transfers: a joining one's savepoint, and its largest group (litegate's
# default max_batch).
_BARE_SAVEPOINT = "SAVEPOINT bare"
_BARE_ROLLBACK_TO = "ROLLBACK TO bare"
_BARE_RELEASE = "RELEASE bare"
_BARE_MAX_GROUP = 512
ALL_SHAPES = frozenset({"point", "scan", "transfer", "slow"})


def litegate_figures(stats: litegate.Stats) -> dict[str, Any]:
    """What the report shows of litegate's own stats after a run."""
    return {
        "batches": stats.batches,
        "mean_batch_size": stats.mean_batch_size,
        "max_batch_size": stats.max_batch_size,
        "jobs_failed": stats.jobs_failed,
        "busy_retries": stats.busy_retries,
    }


class _Retries:
    """A count of ``database is locked`` retries, bumped from any worker thread (guard:
    ``_lock``; read by the main thread after the workers ended)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.n = 0

    def bump(self) -> None:
        with self._lock:
            self.n += 1


# ---- the interface ----------------------------------------------------------------------------
class Contender:
    """One way of sharing the database between threads. ``read``/``write``/``scan``/
    ``transfer`` are called from worker threads, ``worker_exit`` from each worker before it
    ends, ``open``/``close`` from the harness's main thread. ``kind`` is ``remedy``,
    ``ceiling``, ``litegate`` or ``reference``; ``shapes`` are the workload shapes it can run
    (:class:`.workloads.Workload`)."""

    name = "?"
    kind = "remedy"
    shapes = ALL_SHAPES

    def open(self, path: str, case: Case) -> None:
        raise NotImplementedError

    def read(self, key: int) -> Any:
        raise NotImplementedError

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def scan(self, low: int) -> list[Any]:
        raise NotImplementedError

    def transfer(self, src: int, dst: int, amount: int) -> bool:
        raise NotImplementedError

    def worker_exit(self) -> None:
        """Release what this worker thread opened."""

    def close(self) -> dict[str, Any]:
        """Close everything; returns extra figures for the report."""
        return {}


class Raw(Contender):
    """The reference: one plain connection, no sharing and no lock (one worker only)."""

    name = "raw sqlite3"
    kind = "reference"

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name

    def open(self, path: str, case: Case) -> None:
        # opened here, used by a worker thread
        self._conn = open_plain(path, case.synchronous, check_same_thread=False)

    def read(self, key: int) -> Any:
        return plain_read(self._conn, key)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        plain_write(self._conn, sql, params)

    def scan(self, low: int) -> list[Any]:
        return plain_scan(self._conn, low)

    def transfer(self, src: int, dst: int, amount: int) -> bool:
        return plain_transfer(self._conn, src, dst, amount)

    def close(self) -> dict[str, Any]:
        self._conn.close()
        return {"connections": 1}


class Locked(Raw):
    """Remedy (c): one connection behind a ``threading.Lock``."""

    name = "sqlite3 + Lock"
    kind = "remedy"

    def open(self, path: str, case: Case) -> None:
        super().open(path, case)
        self._lock = threading.Lock()

    def read(self, key: int) -> Any:
        with self._lock:
            return super().read(key)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            super().write(sql, params)

    def scan(self, low: int) -> list[Any]:
        with self._lock:
            return super().scan(low)

    def transfer(self, src: int, dst: int, amount: int) -> bool:
        with self._lock:
            return super().transfer(src, dst, amount)


class PerThread(Contender):
    """Remedy (a): a connection per thread, in a ``threading.local``. Works for worker
    threads (each closes its own in ``worker_exit``) and for executor threads behind
    ``asyncio.to_thread`` (``close`` closes what they left open). Transfers are retried on
    ``database is locked`` and the retries counted."""

    name = "sqlite3 per-thread"

    def open(self, path: str, case: Case) -> None:
        self._path, self._sync = path, case.synchronous
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[sqlite3.Connection] = set()  # guard: _lock
        self._opened = 0  # guard: _lock
        self._retries = _Retries()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so that close() may close what an executor
            # thread left open; each connection is used by its own thread alone
            conn = self._local.conn = open_plain(self._path, self._sync, check_same_thread=False)
            with self._lock:
                self._opened += 1
                self._open.add(conn)
        return conn

    def read(self, key: int) -> Any:
        return plain_read(self._conn(), key)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        plain_write(self._conn(), sql, params)

    def scan(self, low: int) -> list[Any]:
        return plain_scan(self._conn(), low)

    def transfer(self, src: int, dst: int, amount: int) -> bool:
        conn = self._conn()
        return retrying(lambda: plain_transfer(conn, src, dst, amount), self._retries.bump)

    def worker_exit(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def close(self) -> dict[str, Any]:
        with self._lock:
            left, self._open = self._open, set()
        for conn in left:
            conn.close()
        return {"connections": self._opened, "retries": self._retries.n}


class QueuePool(Contender):
    """Remedy (b): a ``queue.Queue`` of N shared connections; transfers are retried on
    ``database is locked`` and the retries counted."""

    def __init__(self, size: int = DEFAULT_POOL_SIZE) -> None:
        self.size = size
        self.name = f"sqlite3 queue pool({size})"

    def open(self, path: str, case: Case) -> None:
        self._all = [
            open_plain(path, case.synchronous, check_same_thread=False) for _ in range(self.size)
        ]
        self._q: queue.Queue[sqlite3.Connection] = queue.Queue()
        for conn in self._all:
            self._q.put(conn)
        self._retries = _Retries()

    @contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._q.get(timeout=BUSY_TIMEOUT)
        except queue.Empty:
            raise TimeoutError(f"no pooled connection within {BUSY_TIMEOUT}s") from None
        try:
            yield conn
        finally:
            self._q.put(conn)

    def read(self, key: int) -> Any:
        with self._borrow() as conn:
            return plain_read(conn, key)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._borrow() as conn:
            plain_write(conn, sql, params)

    def scan(self, low: int) -> list[Any]:
        with self._borrow() as conn:
            return plain_scan(conn, low)

    def transfer(self, src: int, dst: int, amount: int) -> bool:
        with self._borrow() as conn:
            return retrying(lambda: plain_transfer(conn, src, dst, amount), self._retries.bump)

    def close(self) -> dict[str, Any]:
        for conn in self._all:
            conn.close()
        return {"connections": self.size, "retries": self._retries.n}


class Litegate(Contender):
    """litegate's ``Database``: ``db.query_one``/``db.query`` for reads, ``db.execute`` for
    writes (group commit), ``with db.transaction() as tx`` for transfers."""

    kind = "litegate"

    def __init__(self, readers: Readers = 4, name: str | None = None) -> None:
        self.readers = readers
        self.name = name or f"litegate readers={readers}"

    def open(self, path: str, case: Case) -> None:
        self._db = litegate.connect(
            path, readers=self.readers, synchronous=cast(Synchronous, case.synchronous)
        )

    def read(self, key: int) -> Any:
        return self._db.query_one(SQL_READ, (key,))

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        self._db.execute(sql, params)

    def scan(self, low: int) -> list[Any]:
        return self._db.query(SQL_SCAN, (low, low))

    def transfer(self, src: int, dst: int, amount: int) -> bool:
        with self._db.transaction() as tx:
            balance = tx.query_value(SQL_BALANCE, (src,))
            tx.query_value(SQL_BALANCE, (dst,))
            if balance < amount:
                return False
            tx.execute(SQL_DEBIT, (amount, src))
            tx.execute(SQL_CREDIT, (amount, dst))
            return True

    def close(self) -> dict[str, Any]:
        s = self._db.stats()
        self._db.close()
        return litegate_figures(s) | {"pool_waits": s.pool_waits}


class BareGroupCommit(PerThread):
    """Not a remedy but a ceiling: the leanest group commit Python allows, with none of
    litegate's guarantees (no per-job isolation, no bounded queue, no timeouts, no
    cancellation, no stats). What it reaches on a machine shows how far a target is from what
    any thread-acknowledging design written in Python can do there.

    * Reads use a connection per thread.
    * Writes go to a deque that one writer thread drains into ``BEGIN IMMEDIATE`` ...
      ``COMMIT`` batches, waking each caller by its own raw lock.
    * Transfers (interactive transactions) share the writer connection in turns, taken
      through one ``threading.Lock`` (the lock remedy's hand-off, the cheapest there is). The
      first of a group runs ``BEGIN IMMEDIATE``, each later one runs inside its own savepoint
      (the isolation litegate's group commit gives: one that fails undoes only itself); one
      that ends while other threads wait for the lock leaves the group open and waits for its
      COMMIT, which the group's last member runs; a failed COMMIT fails the whole group. The
      writer thread never runs a transfer.

    Guards: ``_queue`` is a deque (``append``/``popleft`` from one side each); ``_wanting``
    counts the threads between wanting the lock and taking it (guard ``_count``); the writer
    connection's transfer state (``_group_open``, ``_members``, ``_tx_commits``) belongs to
    the holder of ``_turn``, ``_write_commits`` to the writer thread (both read by ``close``
    after the workers and the writer thread ended).
    """

    name = "ceiling: bare group commit"
    kind = "ceiling"
    shapes = frozenset({"point", "transfer"})  # scans: nothing to group

    def open(self, path: str, case: Case) -> None:
        super().open(path, case)
        self._writer = open_plain(path, case.synchronous, check_same_thread=False)
        self._queue: deque[list[Any]] = deque()
        self._bell = allocate_lock()
        self._bell.acquire()
        self._sleeping = False
        self._stop = False
        self._thread = threading.Thread(target=self._drain, name="bench-bare-writer", daemon=True)
        self._thread.start()
        self._turn = threading.Lock()
        self._count = threading.Lock()
        self._wanting = 0
        self._group_open = False
        self._members: list[list[Any]] = []  # [lock, error] of each member awaiting COMMIT
        self._tx_commits = 0
        self._write_commits = 0

    def _drain(self) -> None:
        queue_, conn = self._queue, self._writer
        while not self._stop:
            if not queue_:
                self._sleeping = True
                if not queue_:
                    self._bell.acquire(timeout=0.05)
                self._sleeping = False
                continue
            jobs = []
            while queue_:
                jobs.append(queue_.popleft())
            try:
                conn.execute("BEGIN IMMEDIATE")
                for job in jobs:
                    conn.execute(job[1], job[2])
                conn.execute("COMMIT")
                self._write_commits += 1
            except BaseException as exc:  # the whole batch fails; nothing is acknowledged
                if conn.in_transaction:
                    conn.rollback()
                for job in jobs:
                    job[3] = exc
            for job in jobs:
                job[0].release()

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        done = allocate_lock()
        done.acquire()
        job: list[Any] = [done, sql, params, None]  # lock, sql, params, error
        self._queue.append(job)
        if self._sleeping:
            try:
                self._bell.release()
            except RuntimeError:  # rung already
                pass
        done.acquire()
        error: BaseException | None = job[3]
        if error is not None:
            raise error

    def transfer(self, src: int, dst: int, amount: int) -> bool:
        with self._count:
            self._wanting += 1
        self._turn.acquire()
        entry: list[Any] | None = None  # [lock, error]: a member waiting for the COMMIT
        own: Exception | None = None  # its own failure (only its savepoint was undone)
        try:
            with self._count:
                self._wanting -= 1
                others = self._wanting
            conn = self._writer
            joined = self._group_open
            if joined:
                conn.execute(_BARE_SAVEPOINT)
            else:
                conn.execute("BEGIN IMMEDIATE")
                self._group_open = True
            try:
                moved = transfer_body(conn, src, dst, amount)
            except Exception as exc:
                if not joined:
                    raise  # (it began the group: nothing of others is in it yet)
                conn.execute(_BARE_ROLLBACK_TO)  # (fails if SQLite lost it all: the group)
                conn.execute(_BARE_RELEASE)
                own = exc
            else:
                if joined:
                    conn.execute(_BARE_RELEASE)
            if others and len(self._members) < _BARE_MAX_GROUP - 1:
                # Someone is about to take the lock: it (or the last after it) commits.
                if own is None:
                    entry = [allocate_lock(), None]
                    entry[0].acquire()
                    self._members.append(entry)
            else:
                self._end_group(None)
        except BaseException as exc:
            self._end_group(exc)  # (rolls the group back: nothing of it is acknowledged)
            raise
        finally:
            self._turn.release()
        if own is not None:
            raise own
        if entry is not None:
            entry[0].acquire()
            if entry[1] is not None:
                raise entry[1]
        return moved

    def _end_group(self, failed: BaseException | None) -> None:
        """Holder of ``_turn``: COMMIT the open group (or roll it back after ``failed``) and
        wake its members with the outcome."""
        conn, members = self._writer, self._members
        self._members, self._group_open = [], False
        error = failed
        if failed is None:
            try:
                conn.execute("COMMIT")
                self._tx_commits += 1
            except BaseException as exc:
                error = exc
        if error is not None and conn.in_transaction:
            conn.rollback()
        for entry in members:
            entry[1] = error
            entry[0].release()
        if error is not None and failed is None:
            raise error

    def close(self) -> dict[str, Any]:
        self._stop = True
        self._thread.join(5.0)
        self._writer.close()
        return super().close() | {"commits": self._tx_commits + self._write_commits}
