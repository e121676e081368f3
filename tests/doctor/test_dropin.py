"""litegate doctor on code that uses the ``litegate.sqlite3`` drop-in (what ``--fix`` writes)."""

from __future__ import annotations

import textwrap

import pytest

from litegate.doctor import RULES, analyze_source


def found(source: str) -> list[tuple[str, int]]:
    """(rule, line) of every finding in a snippet, sorted by line."""
    return [(f.rule, f.line) for f in analyze_source(textwrap.dedent(source), "snippet.py")]


_SHARED = """
{imports}
import threading
conn = {connect}("a.db")
def add(n):
    conn.execute("INSERT INTO t VALUES (?)", (n,))
    conn.commit()
for n in range(4):
    threading.Thread(target=add, args=(n,)).start()
"""


@pytest.mark.parametrize(
    ("imports", "connect"),
    [
        pytest.param("import litegate.sqlite3 as sqlite3", "sqlite3.connect", id="import-as"),
        pytest.param("import litegate.sqlite3 as db", "db.connect", id="import-as-alias"),
        pytest.param("import litegate.sqlite3", "litegate.sqlite3.connect", id="import-dotted"),
        pytest.param("from litegate import sqlite3", "sqlite3.connect", id="from-litegate"),
        pytest.param("from litegate.sqlite3 import connect", "connect", id="from-dropin"),
        pytest.param("from litegate.sqlite3 import connect as c", "c", id="from-dropin-as"),
    ],
)
def test_dropin_connection_shared_by_threads_is_not_reported(imports: str, connect: str) -> None:
    assert found(_SHARED.format(imports=imports, connect=connect)) == []


def test_the_same_code_on_stdlib_sqlite3_is_reported() -> None:
    rules = {
        rule
        for rule, _ in found(_SHARED.format(imports="import sqlite3", connect="sqlite3.connect"))
    }
    assert rules == {"LG101", "LG104"}


def test_dropin_blocking_call_in_async_is_still_reported() -> None:
    src = """
    import litegate.sqlite3 as sqlite3
    db = sqlite3.connect("a.db")
    async def handler():
        return db.execute("SELECT 1").fetchall()
    async def other():
        conn = sqlite3.connect("b.db")
    """
    assert found(src) == [("LG103", 5), ("LG103", 7)]


def test_dropin_close_from_worker_is_still_reported() -> None:
    src = """
    import litegate.sqlite3 as sqlite3, threading
    conn = sqlite3.connect("a.db")
    def stop():
        conn.commit()
        conn.close()
    threading.Thread(target=stop).start()
    """
    assert found(src) == [("LG105", 6)]


def test_dropin_global_cursor_used_by_two_threads_is_still_reported() -> None:
    src = """
    import litegate.sqlite3 as sqlite3, threading
    conn = sqlite3.connect("a.db")
    cur = conn.cursor()
    def a():
        cur.execute("SELECT 1")
    def b():
        conn.execute("SELECT 2")
    threading.Thread(target=a).start()
    threading.Thread(target=b).start()
    threading.Thread(target=a).start()
    """
    assert found(src) == [("LG104", 4)]


def test_dropin_per_thread_connections_still_need_a_busy_timeout() -> None:
    src = """
    import litegate.sqlite3 as sqlite3, threading
    def work():
        conn = sqlite3.connect("a.db")
        conn.execute("INSERT INTO t VALUES (1)")
    for _ in range(4):
        threading.Thread(target=work).start()
    """
    assert found(src) == [("LG106", 4)]


def test_dropin_deferred_write_transaction_is_still_reported() -> None:
    src = """
    from litegate import sqlite3
    def bump(conn):
        conn.execute("BEGIN")
        conn.execute("UPDATE c SET n = n + 1")
    """
    assert found(src) == [("LG107", 4)]


def test_fixable_flags() -> None:
    assert {r.id for r in RULES.values() if r.fixable} == {"LG101", "LG102", "LG104", "LG105"}
