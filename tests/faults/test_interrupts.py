"""KeyboardInterrupt at every point of the lane, deterministically.

Ctrl-C in a REPL, a notebook or a CLI raises ``KeyboardInterrupt`` in the main thread wherever
it happens to be -- possibly inside litegate, between the lane's ``BEGIN IMMEDIATE`` and its
job loop, or while it answers callers. Hoping a real signal lands on each spot would take
thousands of runs; instead a trace function raises ``KeyboardInterrupt`` at the k-th place in
litegate's code where CPython would run a signal handler, for every k the call reaches.

Those places (CPython 3.11-3.13 check for pending signals there and nowhere else): the entry of
a Python function, right after a call returns, and a loop's jump back. The tracer follows every
bytecode of litegate's frames (``f_trace_opcodes``) and raises before the instruction that
follows such a point -- exactly where a real signal's ``KeyboardInterrupt`` would appear.

After each interruption: no transaction is left open (another connection takes the write lock
at once), the next write and read work, other threads' writes were all answered and committed,
none of them saw the main thread's interrupt, and nothing waits past its timeout.
"""

from __future__ import annotations

import dis
import gc
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

import litegate
from helpers import lane_held, wait_for

PACKAGE = str(Path(litegate.__file__).parent)
WORKER_TIMEOUT = 10.0
# After these a signal handler may run (the eval loop checks its "eval breaker" there).
_CHECKS_AFTER = frozenset({"CALL", "CALL_KW", "CALL_FUNCTION_EX", "JUMP_BACKWARD"})


@cache
def _opnames(code: CodeType) -> dict[int, str]:
    return {ins.offset: ins.opname for ins in dis.get_instructions(code)}


class _Interrupter:
    """A trace function raising KeyboardInterrupt at the ``at``-th signal-check point in
    litegate's code (``at`` None: count only). ``on_first`` runs at the first point (to set up
    a race)."""

    def __init__(self, at: int | None, on_first: Callable[[], None] | None = None) -> None:
        self.at = at
        self.on_first = on_first
        self.seen = 0
        self.where: tuple[str, int] | None = None
        self._previous: dict[int, str] = {}  # id(frame) -> the opcode it ran last

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if not frame.f_code.co_filename.startswith(PACKAGE):
            return None
        frame.f_trace_opcodes = True
        return self._local

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event != "opcode":
            if event == "line":
                # (3.12+ ignores f_trace_opcodes set at the 'call' event: set again here)
                frame.f_trace_opcodes = True
            elif event == "return":
                self._previous.pop(id(frame), None)
            return self._local
        op = _opnames(frame.f_code).get(frame.f_lasti, "")
        previous = self._previous.get(id(frame))
        self._previous[id(frame)] = op
        if previous is not None and previous not in _CHECKS_AFTER:
            return self._local
        if self.seen == 0 and self.on_first is not None:
            first, self.on_first = self.on_first, None
            first()
        if self.seen == self.at:
            self.where = (Path(frame.f_code.co_filename).name, frame.f_lineno)
            self.seen += 1
            self._previous.pop(id(frame), None)
            raise KeyboardInterrupt(f"injected at {self.where}")
        self.seen += 1
        return self._local


@contextmanager
def _traced(tracer: _Interrupter) -> Iterator[None]:
    # No cyclic garbage collection meanwhile: a collection runs the __del__ of some earlier
    # test's leftovers (Facade.__del__) right where the interrupt is injected, and the
    # interrupt is then reported as an unraisable exception instead of reaching the call.
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    previous = sys.gettrace()  # coverage's tracer, under `make test`: put it back after
    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(previous)
        if gc_was_enabled:
            gc.enable()


def _lock_is_free(path: Path) -> bool:
    """Another connection can take the file's write lock (nothing left holding it). Within
    half a second: the engine's idle checkpoint (``wal_checkpoint(TRUNCATE)``, 0.2 s after
    the lane goes idle) blocks writers for the few milliseconds it runs, and one that began
    just then made this check fail at a random point of a sweep; a lane left held stays
    held (nothing else runs meanwhile)."""
    other = sqlite3.connect(path, timeout=0.5, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


def _count(call: Callable[[], object]) -> int:
    tracer = _Interrupter(None)
    with _traced(tracer):
        call()
    return tracer.seen


@pytest.fixture
def db(tmp_path: Path) -> Iterator[litegate.Database]:
    database = litegate.connect(tmp_path / "ki.db", timeout=WORKER_TIMEOUT)
    database.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who)")
    database.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER)")
    database.executemany("INSERT INTO acct VALUES (?, 100)", [(1,), (2,)])
    yield database
    database.close()


HEALED_AT_NEXT_CALL: list[tuple[str, int] | None] = []


def _check_healthy(db: litegate.Database, marker: int, where: tuple[str, int] | None) -> None:
    """The interrupted call left nothing held: another connection takes the write lock at once,
    the next write and read work, nothing is queued. One exception, recorded: an interrupt as
    a transaction's ``__exit__`` begins (no context manager written in Python can act there)
    leaves the lane held until this thread's next call, which rolls it back and gives it back.
    """
    if not _lock_is_free(Path(db.path)):
        HEALED_AT_NEXT_CALL.append(where)
    db.execute("INSERT INTO t(id, who) VALUES (?, 'after')", (marker,))
    assert _lock_is_free(Path(db.path)), f"the write lock is still held after {where}"
    assert db.query_value("SELECT who FROM t WHERE id = ?", (marker,)) == "after"
    assert db.stats().queue_depth == 0


def _sweep(
    db: litegate.Database,
    call: Callable[[int], object],
    on_first: Any = None,
    settle: Callable[[], None] = lambda: None,
) -> dict[str, int]:
    """Interrupt ``call(i)`` at each of its signal-check points; check health after each
    (after ``settle()``: other threads' calls done). Returns how often the call was
    interrupted before / after its write committed, or not."""
    HEALED_AT_NEXT_CALL.clear()
    n = _count(lambda: call(10_000_000))
    assert n > 20, n  # (the trace reaches litegate's code)
    outcomes = {"interrupted, not committed": 0, "interrupted, committed": 0, "completed": 0}
    for k in range(n + 1):
        marker = 1_000 + k
        tracer = _Interrupter(k, on_first)
        try:
            with _traced(tracer):
                call(marker)
            outcome = "completed"
        except KeyboardInterrupt:
            committed = db.query_value("SELECT count(*) FROM t WHERE id = ?", (marker,))
            outcome = "interrupted, committed" if committed else "interrupted, not committed"
        outcomes[outcome] += 1
        settle()
        _check_healthy(db, 50_000_000 + k, tracer.where)
    exits = {where for where in HEALED_AT_NEXT_CALL if where is not None}
    assert all(name == "_transaction.py" for name, _ in exits), HEALED_AT_NEXT_CALL
    assert len(exits) <= 1, HEALED_AT_NEXT_CALL  # (one point: __exit__'s entry)
    return outcomes


def test_interrupting_a_write_on_an_idle_lane_at_every_point(db: litegate.Database) -> None:
    outcomes = _sweep(db, lambda i: db.execute("INSERT INTO t(id, who) VALUES (?, 'main')", (i,)))
    assert outcomes["interrupted, not committed"] > 10, outcomes


def test_interrupting_a_queued_write_at_every_point(db: litegate.Database) -> None:
    """The lane is held by another thread: the main thread's write queues and waits."""

    def call(i: int) -> None:
        with lane_held(db):
            try:
                db.execute("INSERT INTO t(id, who) VALUES (?, 'queued')", (i,), timeout=0.05)
            except litegate.WriteTimeout:
                pass

    HEALED_AT_NEXT_CALL.clear()
    n = _count(lambda: call(10_000_000))
    for k in range(n + 1):
        tracer = _Interrupter(k)
        try:
            with _traced(tracer):
                call(2_000 + k)
        except KeyboardInterrupt:
            pass
        _check_healthy(db, 60_000_000 + k, tracer.where)
    assert not HEALED_AT_NEXT_CALL


def test_interrupting_a_transaction_at_every_point(db: litegate.Database) -> None:
    """A transfer between two accounts: whatever is interrupted, the sum stays 200 and the
    lane is free afterwards."""

    def transfer(i: int) -> None:
        with db.transaction() as tx:
            tx.execute("UPDATE acct SET bal = bal - 7 WHERE id = 1")
            tx.execute("UPDATE acct SET bal = bal + 7 WHERE id = 2")
            tx.execute("INSERT INTO t(id, who) VALUES (?, 'tx')", (i,))

    outcomes = _sweep(db, transfer)
    assert db.query_value("SELECT sum(bal) FROM acct") == 200
    assert outcomes["interrupted, not committed"] > 10, outcomes


def test_interrupts_never_reach_other_threads_writes(db: litegate.Database) -> None:
    """While the main thread writes on the idle lane, other threads' writes queue behind it.
    An interrupt of the main thread at any point must not fail, lose or strand any of them."""
    results: dict[int, object] = {}
    lock = threading.Lock()
    next_id = iter(range(100_000_000, 200_000_000))

    def worker(n: int) -> None:
        ident = next(next_id)
        try:
            db.execute(
                "INSERT INTO t(id, who) VALUES (?, 'worker')", (ident,), timeout=WORKER_TIMEOUT
            )
            outcome: object = "ok"
        except BaseException as exc:
            outcome = exc
        with lock:
            results[ident] = outcome

    started: list[threading.Thread] = []

    def start_workers() -> None:
        """At the main thread's first line inside litegate: four writes from other threads
        arrive (they queue: the main thread is about to take the idle lane, or has it)."""
        for n in range(4):
            t = threading.Thread(target=worker, args=(n,))
            t.start()
            started.append(t)
        time.sleep(0.005)

    def settle() -> None:
        for t in started:
            t.join(WORKER_TIMEOUT)
            assert not t.is_alive(), "a worker waited past its timeout"

    outcomes = _sweep(
        db,
        lambda i: db.execute("INSERT INTO t(id, who) VALUES (?, 'main')", (i,)),
        start_workers,
        settle,
    )
    failed = {k: v for k, v in results.items() if v != "ok"}
    assert not failed, failed
    committed = db.query_value("SELECT count(*) FROM t WHERE who = 'worker'")
    assert committed == len(results) == len(started), (committed, len(results), len(started))
    assert sum(outcomes.values()) > 20
    wait_for(lambda: db.stats().queue_depth == 0, what="an empty queue")


def test_a_transaction_abandoned_without_its_end_is_rolled_back(db: litegate.Database) -> None:
    """What an interrupt at ``__exit__``'s first instruction leaves: a transaction entered and
    never ended. Once the transaction object is gone, the lane is rolled back and given back --
    by the writer thread even if the holding thread never calls again."""
    tx = db.transaction()
    tx.__enter__()
    tx.execute("INSERT INTO t(id, who) VALUES (1, 'abandoned')")
    del tx  # (the block's frame, and with it the object, is gone)
    other: list[object] = []

    def writer() -> None:
        db.execute("INSERT INTO t(id, who) VALUES (2, 'other thread')", timeout=WORKER_TIMEOUT)
        other.append("ok")

    t = threading.Thread(target=writer)
    t.start()
    t.join(WORKER_TIMEOUT + 1)
    assert other == ["ok"]
    assert db.query_value("SELECT group_concat(who) FROM t") == "other thread"
    assert _lock_is_free(Path(db.path))


def test_a_transaction_entered_by_hand_is_not_taken_for_abandoned(db: litegate.Database) -> None:
    """An ExitStack (or a test) may enter a transaction in one frame and leave it in another:
    as long as the object lives, the lane stays its."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        tx = stack.enter_context(db.transaction())
        tx.execute("INSERT INTO t(id, who) VALUES (1, 'held')")
        with pytest.raises(litegate.Misuse, match="deadlock"):
            db.execute("INSERT INTO t(id, who) VALUES (2, 'x')")
        tx.execute("INSERT INTO t(id, who) VALUES (3, 'held')")
    assert db.query_value("SELECT count(*) FROM t") == 2
