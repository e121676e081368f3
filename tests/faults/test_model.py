"""A hypothesis state machine of writes, transactions, savepoints and reads against a plain
dict model (issue 10).

Rules: single writes (``execute``, ``executemany``, ``executescript``, ``run_write``) that
succeed or fail on a constraint (all-or-nothing: a failing call changes nothing); an
interactive transaction kept open across steps, with statements that succeed or violate a
constraint (only that statement is undone), nested savepoints released or rolled back to,
``INSERT OR ROLLBACK`` conflicts (SQLite rolls the whole transaction back: later statements
and the commit raise ``RolledBack``), commit and rollback; reads by point, in full, by
iteration, in a snapshot, and through a snapshot held open across other steps (it keeps seeing
the state it started with).

After every step the content read through litegate equals the model: through the open
transaction its own staged state; outside it the committed state (a pooled reader never sees
uncommitted writes).

Sync ``Database`` with a pool and with ``readers=0``; ``AsyncDatabase`` with a pool, all of its
transaction's operations made by one task (a driver task on a persistent event loop).

Quick form: 60 runs of up to 40 steps per machine; ``LITEGATE_STRESS=long``: 500 x 60.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import litegate

pytestmark = pytest.mark.stress

LONG = os.environ.get("LITEGATE_STRESS", "").strip().lower() == "long"

SCHEMA = "CREATE TABLE kv(k INTEGER PRIMARY KEY, v INT NOT NULL CHECK (v >= 0));"
UPSERT = "INSERT INTO kv(k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v"
INSERT = "INSERT INTO kv(k, v) VALUES (?, ?)"  # fails on an existing key (UNIQUE)
OR_ROLLBACK = "INSERT OR ROLLBACK INTO kv(k, v) VALUES (?, ?)"
DELETE = "DELETE FROM kv WHERE k = ?"
SUBTRACT = "UPDATE kv SET v = v - ?"  # fails (CHECK) if any row would go below 0
ALL = "SELECT k, v FROM kv ORDER BY k"
ONE = "SELECT v FROM kv WHERE k = ?"

KEYS = st.integers(0, 7)
VALS = st.integers(0, 99)
PAIRS = st.lists(st.tuples(KEYS, VALS), max_size=4)

State = dict[int, int]


class Leave(Exception):
    """Leaves a transaction or savepoint block by an exception (a rollback)."""


class Boom(Exception):
    """Raised by a ``run_write`` function after it wrote: its writes must be undone."""


def _as_dict(rows: list[Any]) -> State:
    return {row[0]: row[1] for row in rows}


def _upserts(conn: Any, pairs: list[tuple[int, int]], fail: bool) -> None:
    for k, v in pairs:
        conn.execute(UPSERT, (k, v))
    if fail:
        raise Boom


# ---- the two ways of calling litegate -----------------------------------------------------------
class SyncIO:
    """Calls on a sync :class:`litegate.Database`, on this thread. Blocks (transaction,
    savepoints, snapshot) are entered and left by hand so that they stay open across steps."""

    def __init__(self, path: str, readers: int) -> None:
        self.db: Any = self._open(path, readers)
        self.tx: Any = None
        self.savepoints: list[Any] = []
        self.snapshot: Any = None

    def _open(self, path: str, readers: int) -> Any:
        return litegate.connect(path, readers=readers, synchronous="OFF")

    def call(self, target: str, name: str, *args: Any) -> Any:
        """``target.name(*args)`` (``target``: "db", "tx" or "snapshot"); an iteration is read
        to the end."""
        result = getattr(getattr(self, target), name)(*args)
        return list(result) if name == "iterate" else result

    def _enter(self, block: Any) -> Any:
        return block.__enter__()

    def _exit(self, block: Any, normally: bool) -> None:
        """Leave a block normally, or by an exception (a rollback)."""
        block.__exit__(*((None, None, None) if normally else (Leave, Leave(), None)))

    def begin(self) -> None:
        self.tx = self._enter(self.db.transaction())

    def end(self, commit: bool) -> None:
        """Leave the transaction (savepoints first): normally (commit) or by an exception."""
        try:
            while self.savepoints:
                self.leave_savepoint(commit)
        finally:
            tx, self.tx = self.tx, None
            self._exit(tx, commit)

    def savepoint(self) -> None:
        self.savepoints.append(self._enter(self.tx.savepoint()))

    def leave_savepoint(self, release: bool) -> None:
        self._exit(self.savepoints.pop(), release)

    def open_snapshot(self) -> None:
        self.snapshot = self._enter(self.db.snapshot())

    def close_snapshot(self) -> None:
        snap, self.snapshot = self.snapshot, None
        self._exit(snap, True)

    def close(self) -> None:
        if self.snapshot is not None:
            self.close_snapshot()
        if self.tx is not None:
            self.end(False)
        self.call("db", "close")


class AsyncIO(SyncIO):
    """The same calls on an :class:`litegate.AsyncDatabase`, each made by one driver task on a
    persistent event loop (a transaction belongs to the task that entered it)."""

    def _open(self, path: str, readers: int) -> Any:
        self.runner = asyncio.Runner()
        return self.runner.run(self._start(path, readers))

    async def _start(self, path: str, readers: int) -> litegate.AsyncDatabase:
        self.queue: asyncio.Queue[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]]
        self.queue = asyncio.Queue()
        self._driver = asyncio.create_task(self._drive())  # lives across runner.run() calls
        return await litegate.connect_async(path, readers=readers, synchronous="OFF")

    async def _drive(self) -> None:
        while True:
            job, reply = await self.queue.get()
            try:
                reply.set_result(await job())
            except Exception as exc:
                reply.set_exception(exc)

    def _do(self, job: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``job()`` in the driver task; returns its result (or raises its error)."""

        async def send() -> Any:
            reply = asyncio.get_running_loop().create_future()
            self.queue.put_nowait((job, reply))
            return await asyncio.wait_for(reply, 30)

        return self.runner.run(send())

    def call(self, target: str, name: str, *args: Any) -> Any:
        async def job() -> Any:
            result = getattr(getattr(self, target), name)(*args)
            return [row async for row in result] if name == "iterate" else await result

        return self._do(job)

    def _enter(self, block: Any) -> Any:
        return self._do(block.__aenter__)

    def _exit(self, block: Any, normally: bool) -> None:
        exc = (None, None, None) if normally else (Leave, Leave(), None)
        self._do(lambda: block.__aexit__(*exc))

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.runner.close()


# ---- the machine ----------------------------------------------------------------------------------
class Model(RuleBasedStateMachine):
    """The database against ``committed`` (a dict) and, while a transaction is open, ``stack``:
    its staged state, then one copy per open savepoint."""

    io_class: type[SyncIO] = SyncIO
    readers = 2

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.io = self.io_class(str(Path(self.dir.name) / "model.db"), self.readers)
        self.io.call("db", "executescript", SCHEMA)
        self.committed: State = {}
        self.stack: list[State] = []  # [transaction, savepoint 1, savepoint 2, ...]
        self.aborted = False  # SQLite rolled the open transaction back
        self.frozen: State | None = None  # what the held snapshot saw when it began

    def teardown(self) -> None:
        try:
            self.io.close()
        finally:
            self.dir.cleanup()

    @property
    def in_tx(self) -> bool:
        return bool(self.stack)

    @property
    def current(self) -> State:
        return self.stack[-1] if self.stack else self.committed

    def expect_error(self, error: type[BaseException], target: str, *call: Any) -> None:
        with pytest.raises(error):
            self.io.call(target, *call)

    # ---- writes outside a transaction: each all or nothing ------------------------------------
    @precondition(lambda self: not self.in_tx)
    @rule(k=KEYS, v=VALS)
    def write(self, k: int, v: int) -> None:
        self.io.call("db", "execute", UPSERT, (k, v))
        self.committed[k] = v

    @precondition(lambda self: not self.in_tx)
    @rule(k=KEYS)
    def delete(self, k: int) -> None:
        assert self.io.call("db", "execute", DELETE, (k,)).rowcount == int(k in self.committed)
        self.committed.pop(k, None)

    @precondition(lambda self: not self.in_tx)
    @rule(k=KEYS, v=VALS, negative=st.booleans())
    def failing_write(self, k: int, v: int, negative: bool) -> None:
        """A constraint violation (CHECK, or UNIQUE on an existing key) changes nothing."""
        if negative or k in self.committed:
            value = -1 - v if negative else v
            self.expect_error(sqlite3.IntegrityError, "db", "execute", INSERT, (k, value))
        else:
            self.io.call("db", "execute", INSERT, (k, v))
            self.committed[k] = v

    @precondition(lambda self: not self.in_tx)
    @rule(d=st.integers(0, 60))
    def subtract_from_all(self, d: int) -> None:
        """One statement over every row: if one row would go negative, no row changes."""
        self._subtract(self.committed, "db", d)

    def _subtract(self, state: State, target: str, d: int) -> None:
        if any(v < d for v in state.values()):
            self.expect_error(sqlite3.IntegrityError, target, "execute", SUBTRACT, (d,))
        else:
            self.io.call(target, "execute", SUBTRACT, (d,))
            for k in state:
                state[k] -= d

    @precondition(lambda self: not self.in_tx)
    @rule(pairs=PAIRS, fail=st.booleans())
    def write_many(self, pairs: list[tuple[int, int]], fail: bool) -> None:
        rows = pairs + [(0, -1)] if fail else pairs
        if fail:
            self.expect_error(sqlite3.IntegrityError, "db", "executemany", UPSERT, rows)
        else:
            self.io.call("db", "executemany", UPSERT, rows)
            self.committed.update(pairs)

    @precondition(lambda self: not self.in_tx)
    @rule(pairs=PAIRS, fail=st.booleans())
    def script(self, pairs: list[tuple[int, int]], fail: bool) -> None:
        lines = [
            f"INSERT INTO kv(k, v) VALUES ({k}, {v}) ON CONFLICT(k) DO UPDATE SET v = {v};"
            for k, v in pairs
        ]
        if fail:
            lines.append("INSERT INTO kv(k, v) VALUES (100, -1);")
            self.expect_error(sqlite3.IntegrityError, "db", "executescript", "\n".join(lines))
        else:
            self.io.call("db", "executescript", "\n".join(lines))
            self.committed.update(pairs)

    @precondition(lambda self: not self.in_tx)
    @rule(pairs=PAIRS, fail=st.booleans())
    def run_write(self, pairs: list[tuple[int, int]], fail: bool) -> None:
        if fail:
            self.expect_error(Boom, "db", "run_write", _upserts, pairs, True)
        else:
            self.io.call("db", "run_write", _upserts, pairs, False)
            self.committed.update(pairs)

    # ---- the transaction ------------------------------------------------------------------------
    @precondition(lambda self: not self.in_tx)
    @rule(savepoints=st.integers(0, 2))
    def begin(self, savepoints: int) -> None:
        self.io.begin()
        self.stack = [dict(self.committed)]
        self.aborted = False
        for _ in range(savepoints):  # (nested blocks straight away: more savepoint traffic)
            self.savepoint()

    @precondition(lambda self: self.in_tx)
    @rule(k=KEYS, v=VALS)
    def tx_write(self, k: int, v: int) -> None:
        if self.aborted:
            self.expect_error(litegate.RolledBack, "tx", "execute", UPSERT, (k, v))
            return
        self.io.call("tx", "execute", UPSERT, (k, v))
        self.current[k] = v

    @precondition(lambda self: self.in_tx and not self.aborted)
    @rule(k=KEYS)
    def tx_delete(self, k: int) -> None:
        self.io.call("tx", "execute", DELETE, (k,))
        self.current.pop(k, None)

    @precondition(lambda self: self.in_tx and not self.aborted)
    @rule(k=KEYS, v=VALS)
    def tx_failing_write(self, k: int, v: int) -> None:
        """Only the failing statement is undone; the transaction goes on."""
        self.expect_error(sqlite3.IntegrityError, "tx", "execute", UPSERT, (k, -1 - v))

    @precondition(lambda self: self.in_tx and not self.aborted)
    @rule(d=st.integers(0, 60))
    def tx_subtract_from_all(self, d: int) -> None:
        self._subtract(self.current, "tx", d)

    @precondition(lambda self: self.in_tx and not self.aborted)
    @rule(k=st.integers(0, 24), v=VALS)  # (keys past 7 never conflict: aborts stay rare)
    def tx_insert_or_rollback(self, k: int, v: int) -> None:
        """On a conflict SQLite rolls the whole transaction back (savepoints included)."""
        if k in self.current:
            self.expect_error(sqlite3.IntegrityError, "tx", "execute", OR_ROLLBACK, (k, v))
            self.aborted = True
        else:
            self.io.call("tx", "execute", OR_ROLLBACK, (k, v))
            self.current[k] = v

    @precondition(lambda self: self.in_tx and not self.aborted)
    @rule(pairs=PAIRS)
    def tx_run(self, pairs: list[tuple[int, int]]) -> None:
        self.io.call("tx", "run", _upserts, pairs, False)
        self.current.update(pairs)

    @precondition(lambda self: self.in_tx and not self.aborted and len(self.stack) < 4)
    @rule()
    def savepoint(self) -> None:
        self.io.savepoint()
        self.stack.append(dict(self.current))

    @precondition(lambda self: self.in_tx and not self.aborted)
    @rule(pairs=PAIRS, release=st.booleans())
    def savepoint_block(self, pairs: list[tuple[int, int]], release: bool) -> None:
        """``with tx.savepoint(): ...`` in one step, left normally or by an exception."""
        self.savepoint()
        for k, v in pairs:
            self.tx_write(k, v)
        self.leave_savepoint(release)

    @precondition(lambda self: len(self.stack) > 1)
    @rule(release=st.booleans())
    def leave_savepoint(self, release: bool) -> None:
        self.io.leave_savepoint(release)
        top = self.stack.pop()
        if release:
            self.stack[-1] = top

    @precondition(lambda self: self.in_tx)
    @rule(commit=st.booleans())
    def end(self, commit: bool) -> None:
        while len(self.stack) > 1:  # leaving the block releases (or rolls back) savepoints first
            top = self.stack.pop()
            if commit:
                self.stack[-1] = top
        staged = self.stack.pop()
        if commit and self.aborted:
            with pytest.raises(litegate.RolledBack):
                self.io.end(True)
        else:
            self.io.end(commit)
            if commit:
                self.committed = dict(staged)

    @precondition(lambda self: self.in_tx and not self.aborted)
    @rule(k=KEYS)
    def tx_point_read(self, k: int) -> None:
        assert self.io.call("tx", "query_value", ONE, (k,)) == self.current.get(k)

    @precondition(lambda self: self.in_tx and not self.aborted)
    @rule()
    def tx_iterate(self) -> None:
        assert _as_dict(self.io.call("tx", "iterate", ALL)) == self.current

    @precondition(lambda self: self.in_tx and self.io_class is SyncIO)
    @rule(k=KEYS, v=VALS)
    def write_inside_own_transaction_is_misuse(self, k: int, v: int) -> None:
        """``db.execute`` inside this thread's transaction would deadlock: refused."""
        self.expect_error(litegate.Misuse, "db", "execute", UPSERT, (k, v))

    # ---- reads outside ------------------------------------------------------------------------
    @precondition(lambda self: not self.in_tx or self.readers != 0)
    @rule(k=KEYS)
    def point_read(self, k: int) -> None:
        assert self.io.call("db", "query_value", ONE, (k,)) == self.committed.get(k)
        row = self.io.call("db", "query_one", ONE, (k,))
        assert (row[0] if row is not None else None) == self.committed.get(k)

    @precondition(lambda self: not self.in_tx or self.readers != 0)
    @rule()
    def iterate(self) -> None:
        assert _as_dict(self.io.call("db", "iterate", ALL)) == self.committed

    @precondition(lambda self: (not self.in_tx or self.readers != 0) and self.io.snapshot is None)
    @rule()
    def snapshot_read(self) -> None:
        self.io.open_snapshot()
        try:
            assert _as_dict(self.io.call("snapshot", "query", ALL)) == self.committed
            assert _as_dict(self.io.call("snapshot", "iterate", ALL)) == self.committed
        finally:
            self.io.close_snapshot()

    # A snapshot held across other steps (needs a reader of its own: not with readers=0).
    @precondition(lambda self: self.readers != 0 and self.io.snapshot is None)
    @rule()
    def hold_snapshot(self) -> None:
        self.io.open_snapshot()
        self.frozen = dict(self.committed)

    @precondition(lambda self: self.frozen is not None)
    @rule(k=KEYS)
    def read_held_snapshot(self, k: int) -> None:
        assert self.frozen is not None
        assert _as_dict(self.io.call("snapshot", "query", ALL)) == self.frozen
        assert self.io.call("snapshot", "query_value", ONE, (k,)) == self.frozen.get(k)

    @precondition(lambda self: self.frozen is not None)
    @rule()
    def release_snapshot(self) -> None:
        self.io.close_snapshot()
        self.frozen = None

    # ---- after every step ------------------------------------------------------------------------
    @invariant()
    def matches_the_model(self) -> None:
        if self.in_tx and not self.aborted:
            assert _as_dict(self.io.call("tx", "query", ALL)) == self.current
        if not self.in_tx or self.readers != 0:
            assert _as_dict(self.io.call("db", "query", ALL)) == self.committed
        elif self.io_class is SyncIO and not self.aborted:
            # readers=0: this thread's reads run on the lane it holds, so they see its writes
            assert _as_dict(self.io.call("db", "query", ALL)) == self.current


class AsyncModel(Model):
    io_class = AsyncIO


class ModelReaders0(Model):
    readers = 0


SETTINGS = settings(
    max_examples=500 if LONG else 60,
    stateful_step_count=60 if LONG else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSyncModel = Model.TestCase
TestSyncModel.settings = SETTINGS
TestSyncModelReaders0 = ModelReaders0.TestCase
TestSyncModelReaders0.settings = SETTINGS
TestAsyncModel = AsyncModel.TestCase
TestAsyncModel.settings = SETTINGS
