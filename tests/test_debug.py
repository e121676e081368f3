"""litegate.debug: the runtime misuse detector."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

import litegate
from litegate import debug


@pytest.fixture
def detector() -> Iterator[None]:
    debug.enable()
    try:
        yield
    finally:
        debug.disable()


def run_in_thread(fn: Callable[[], object], name: str = "worker") -> BaseException | None:
    """Run ``fn`` in a new thread; return what it raised."""
    caught: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            caught.append(exc)

    t = threading.Thread(target=target, name=name)
    t.start()
    t.join(10)
    assert not t.is_alive()
    return caught[0] if caught else None


def make_connection(**kwargs: object) -> sqlite3.Connection:
    return sqlite3.connect(":memory:", **kwargs)  # type: ignore[call-overload, no-any-return]


def test_not_patched_unless_enabled() -> None:
    original = sqlite3.connect
    assert not debug.is_enabled()
    debug.enable()
    debug.enable()  # idempotent
    assert sqlite3.connect is not original
    assert sqlite3.dbapi2.connect is sqlite3.connect
    debug.disable()
    debug.disable()
    assert sqlite3.connect is original
    assert sqlite3.dbapi2.connect is original


def test_cross_thread_use_shows_both_stacks(detector: None) -> None:
    conn = make_connection()
    try:
        conn.execute("CREATE TABLE t (x)")

        def use_connection_from_worker() -> None:
            conn.execute("INSERT INTO t VALUES (1)")

        exc = run_in_thread(use_connection_from_worker, name="worker-7")
        assert isinstance(exc, debug.CrossThreadUse)
        assert isinstance(exc, litegate.Misuse)
        assert isinstance(exc, sqlite3.ProgrammingError)
        text = str(exc)
        created, _, rest = text.partition("Used now here")
        assert "Connection created here, in thread 'MainThread'" in created
        assert "in make_connection" in created
        assert "test_cross_thread_use_shows_both_stacks" in created
        assert "in thread 'worker-7'" in rest
        assert "in use_connection_from_worker" in rest
        assert "Held by: thread 'MainThread'" in rest
        assert "Fix:" in rest
        assert exc.created.thread_name == "MainThread"
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    finally:
        conn.close()


def test_cursor_from_another_thread_is_caught(detector: None) -> None:
    conn = make_connection()
    try:
        cur = conn.execute("SELECT 1 UNION ALL SELECT 2")
        assert isinstance(run_in_thread(cur.fetchall), debug.CrossThreadUse)
        assert isinstance(run_in_thread(lambda: list(cur)), debug.CrossThreadUse)
        assert isinstance(run_in_thread(conn.commit), debug.CrossThreadUse)
        assert cur.fetchall() == [(1,), (2,)]
    finally:
        conn.close()


def test_interleaved_transaction_is_caught(detector: None) -> None:
    conn = make_connection(check_same_thread=False)
    try:
        conn.execute("CREATE TABLE t (x)")

        def open_transaction() -> None:
            conn.execute("INSERT INTO t VALUES (1)")  # implicit BEGIN, no commit

        assert run_in_thread(open_transaction, name="writer-a") is None
        exc = run_in_thread(lambda: conn.execute("INSERT INTO t VALUES (2)"), name="writer-b")
        assert isinstance(exc, debug.ConcurrentUse)
        assert exc.holder == "writer-a (finished)"
        text = str(exc)
        assert "Transaction opened here" in text and "in open_transaction" in text
        assert "in thread 'writer-b'" in text
        # Committing another thread's open transaction is the same misuse.
        with pytest.raises(debug.ConcurrentUse):
            conn.commit()
    finally:  # close() is always allowed: it rolls the orphaned transaction back
        conn.close()


def test_call_while_another_thread_is_inside_is_caught(detector: None) -> None:
    conn = make_connection(check_same_thread=False)
    inside, release = threading.Event(), threading.Event()

    def slow() -> int:
        inside.set()
        release.wait(10)
        return 1

    conn.create_function("slow", 0, slow)
    worker = threading.Thread(
        target=lambda: conn.execute("SELECT slow()").fetchall(),  # litegate: ignore[LG102]
        name="busy-worker",
    )
    worker.start()
    try:
        assert inside.wait(10)
        with pytest.raises(debug.ConcurrentUse) as info:
            conn.execute("SELECT 1")
        assert info.value.holder == "busy-worker"
        text = str(info.value)
        assert "is inside a call on it right now" in text
        assert "Thread 'busy-worker' is now here" in text and "in slow" in text
    finally:
        release.set()
        worker.join(10)
        conn.close()


def test_lock_guarded_sharing_is_allowed(detector: None) -> None:
    conn = make_connection(check_same_thread=False)
    lock = threading.Lock()
    conn.execute("CREATE TABLE t (x)")
    conn.commit()

    def add(n: int) -> None:
        for _ in range(20):
            with lock:
                conn.execute("INSERT INTO t VALUES (?)", (n,))
                conn.commit()

    threads = [threading.Thread(target=add, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    try:
        assert conn.execute("SELECT count(*), sum(x) FROM t").fetchone() == (80, 20 * 6)
    finally:
        conn.close()


def test_same_thread_use_and_user_factories_work(detector: None) -> None:
    class MyConnection(sqlite3.Connection):
        def answer(self) -> int:
            return 42

    class MyCursor(sqlite3.Cursor):
        pass

    conn = sqlite3.connect(":memory:", factory=MyConnection)
    try:
        assert isinstance(conn, MyConnection) and conn.answer() == 42
        origin = debug.origin(conn)
        assert origin is not None and origin.check_same_thread
        cur = conn.cursor(MyCursor)
        assert isinstance(cur, MyCursor)
        with conn:
            conn.execute("CREATE TABLE t (x)")
            conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
        assert conn.execute("SELECT 7").fetchone() == (7,)
        assert isinstance(run_in_thread(cur.close), debug.CrossThreadUse)
    finally:
        conn.close()


def test_connections_made_before_enable_are_not_tracked() -> None:
    conn = make_connection()
    try:
        assert debug.origin(conn) is None
    finally:
        conn.close()


def _python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != debug.ENV_VAR}
    environ.update(env)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True
    )
    return out.stdout.strip()


def test_environment_variable_enables_at_import() -> None:
    code = (
        "import sqlite3; original = sqlite3.connect; import litegate.debug as d; "
        "print(d.is_enabled(), sqlite3.connect is original)"
    )
    assert _python(code) == "False True"
    assert _python(code, LITEGATE_DEBUG="1") == "True False"
    assert _python(code, LITEGATE_DEBUG="0") == "False True"


def test_public_module_surface() -> None:
    assert isinstance(debug.__all__, tuple)
    assert list(debug.__all__) == sorted(debug.__all__)
    for name in debug.__all__:
        assert hasattr(debug, name)
