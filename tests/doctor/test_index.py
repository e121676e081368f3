"""litegate doctor: how the module index reads the source (scopes, classes, values, statements).

Each test is a small program whose connection is only found if the index follows one more
form of Python; the findings say whether it did.
"""

from __future__ import annotations

import textwrap

import pytest

from litegate.doctor import analyze_source


def found(source: str) -> list[tuple[str, int]]:
    """(rule, line) of every finding in a snippet, sorted by line."""
    return [(f.rule, f.line) for f in analyze_source(textwrap.dedent(source), "snippet.py")]


def messages(source: str) -> list[str]:
    return [f.message for f in analyze_source(textwrap.dedent(source), "snippet.py")]


# -- scopes: global, nonlocal, parameters -----------------------------------------------------


def test_global_connection_opened_lazily_by_a_worker_is_shared() -> None:
    src = """
    import sqlite3, threading
    conn = None
    def work():
        global conn
        if conn is None:
            conn = sqlite3.connect("a.db")
        conn.execute("SELECT 1")
    for _ in range(4):
        threading.Thread(target=work).start()
    """
    assert found(src) == [("LG104", 7), ("LG101", 8)]


def test_global_counter_updated_by_a_worker_is_not_a_connection() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    writes = 0
    def work():
        global writes
        writes += 1
        conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert found(src) == [("LG101", 8)]


def test_nonlocal_connection_used_by_a_closure_thread() -> None:
    # Regression: ``nonlocal conn`` plus a later ``conn = None`` made ``conn`` a local of work().
    src = """
    import sqlite3, threading
    def main():
        conn = sqlite3.connect("a.db")
        def work():
            nonlocal conn
            conn.execute("SELECT 1")
            conn = None
        threading.Thread(target=work).start()
    """
    assert found(src) == [("LG101", 7)]


def test_nonlocal_connection_opened_lazily_by_the_first_thread_is_shared() -> None:
    src = """
    import sqlite3, threading
    def main():
        conn = None
        def work():
            nonlocal conn
            if conn is None:
                conn = sqlite3.connect("a.db")
            conn.execute("SELECT 1")
        for _ in range(4):
            threading.Thread(target=work).start()
    """
    assert found(src) == [("LG101", 9)]
    assert "created in main.work (line 8)" in messages(src)[0]


def test_nonlocal_counter_beside_a_per_thread_connection() -> None:
    src = """
    import sqlite3, threading
    def main():
        done = 0
        def work():
            nonlocal done
            conn = sqlite3.connect("a.db", timeout=5)
            conn.execute("INSERT INTO t VALUES (1)")
            done += 1
        for _ in range(4):
            threading.Thread(target=work).start()
    """
    assert found(src) == []


def test_parameter_shadowing_a_module_function_is_not_that_function() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    def work():
        conn.execute("SELECT 1")
    def run(work):
        threading.Thread(target=work).start()
    """
    assert found(src) == []


def test_only_the_parameter_bound_to_a_connection_is_one() -> None:
    src = """
    import logging, sqlite3, threading
    def write(conn, log):
        log.info("writing")
        conn.execute("INSERT INTO t VALUES (1)")
    def main():
        conn = sqlite3.connect("a.db")
        threading.Thread(target=write, args=(conn, logging.getLogger())).start()
    """
    assert found(src) == [("LG101", 5)]


def test_unbound_parameter_is_not_assumed_to_be_a_connection() -> None:
    src = """
    import sqlite3, threading
    def work(conn):
        cur = conn.cursor()
        cur.execute("INSERT INTO t VALUES (1)")
    threading.Thread(target=work, args=("a.db",)).start()
    """
    assert found(src) == []


def test_connection_bound_before_star_args() -> None:
    src = """
    import sqlite3, threading
    def write(conn, *rows, **options):
        conn.executemany("INSERT INTO t VALUES (?)", rows)
    def main():
        conn = sqlite3.connect("a.db")
        threading.Thread(target=write, args=(conn, 1, 2)).start()
    """
    assert found(src) == [("LG101", 4)]


def test_names_assigned_from_each_other_do_not_loop() -> None:
    src = """
    import sqlite3, threading
    a = b
    b = a
    def work():
        a.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert found(src) == []


# -- classes ----------------------------------------------------------------------------------


def test_method_inherited_from_a_module_base_class() -> None:
    src = """
    import sqlite3, threading
    class Base:
        def __init__(self):
            self.conn = sqlite3.connect("a.db")
        def save(self):
            self.conn.commit()
    class Mixin:
        pass
    class Child(Mixin, Base):
        pass
    child = Child()
    threading.Thread(target=child.save).start()
    """
    assert found(src) == [("LG101", 7)]
    assert "`Base.conn` is created in Base.__init__ (line 5)" in messages(src)[0]


def test_class_attribute_connection_through_the_class_and_self() -> None:
    src = """
    import dataclasses, sqlite3, threading
    @dataclasses.dataclass
    class Store:
        conn = sqlite3.connect("a.db")
        label: str = "store"
        path: str
        low, high = 0, 10
        class Meta:
            table = "t"
        def add(self):
            Store.conn.execute("INSERT INTO t VALUES (1)")
        def add_again(self):
            self.conn.execute("INSERT INTO t VALUES (2)")
    store = Store()
    threading.Thread(target=store.add).start()
    threading.Thread(target=store.add_again).start()
    """
    assert found(src) == [("LG104", 5), ("LG101", 12), ("LG101", 14)]
    assert messages(src)[0].startswith("global connection `Store.conn` is used by 2 thread")


def test_class_attribute_of_a_base_reached_through_several_bases() -> None:
    src = """
    import sqlite3, threading
    class Base:
        conn = sqlite3.connect("a.db")
    class Left(Base):
        pass
    class Right(Base):
        pass
    class Store(Left, Right, Base):
        def add(self):
            self.conn.execute("INSERT INTO t VALUES (1)")
    store = Store()
    threading.Thread(target=store.add).start()
    """
    assert found(src) == [("LG101", 11)]
    assert messages(src)[0].startswith("connection `Base.conn` is created at module level")


def test_class_attribute_set_to_none_then_connected_by_a_method() -> None:
    src = """
    import sqlite3, threading
    class Store:
        conn = None
        def open(self):
            self.conn = sqlite3.connect("a.db")
        def add(self):
            self.conn.execute("INSERT INTO t VALUES (1)")
    store = Store()
    store.open()
    threading.Thread(target=store.add).start()
    """
    assert found(src) == [("LG101", 8)]
    assert "`Store.conn` is created in Store.open (line 6)" in messages(src)[0]


def test_closure_over_self_in_a_method() -> None:
    src = """
    import sqlite3, threading
    class Store:
        def __init__(self):
            self.conn = sqlite3.connect("a.db")
        def start(self):
            def work():
                self.conn.execute("SELECT 1")
            threading.Thread(target=work).start()
    """
    assert found(src) == [("LG101", 8)]
    assert "used here in Store.start.work, which runs" in messages(src)[0]


_ANNOTATED = """
import sqlite3, threading
from typing import Optional
class Repo:
    def __init__(self):
        self.db = sqlite3.connect("a.db")
    def get(self):
        return self.db.execute("SELECT 1").fetchone()
def work(repo: {annotation}):
    return repo.get()
threading.Thread(target=work, args=(None,)).start()
"""


@pytest.mark.parametrize(
    ("annotation", "want"),
    [
        pytest.param("Repo", [("LG101", 8)], id="name"),
        pytest.param('"Repo"', [("LG101", 8)], id="string"),
        pytest.param("Repo | None", [("LG101", 8)], id="union"),
        pytest.param("None | Repo", [("LG101", 8)], id="union-right"),
        pytest.param("Optional[Repo]", [("LG101", 8)], id="subscript"),
        pytest.param('"Other"', [], id="string-of-unknown-class"),
        pytest.param("Other", [], id="unknown-class"),
        pytest.param("models.Repo", [], id="class-of-another-module"),
    ],
)
def test_parameter_annotation_names_the_class(annotation: str, want: list[tuple[str, int]]) -> None:
    assert found(_ANNOTATED.format(annotation=annotation)) == want


def test_attribute_annotated_in_the_class_body_and_in_init() -> None:
    src = """
    import sqlite3, threading
    class Repo:
        def __init__(self):
            self.db: sqlite3.Connection = sqlite3.connect("a.db")
            self.hits = 0
        def get(self):
            self.hits += 1
            return self.db.execute("SELECT 1").fetchone()
    class Service:
        repo: Repo
        def __init__(self, factory):
            self.repo = factory()
        def handle(self):
            return self.repo.get()
    service = Service(Repo)
    threading.Thread(target=service.handle).start()
    """
    assert found(src) == [("LG101", 9)]
    assert "`Repo.db` is created in Repo.__init__ (line 5)" in messages(src)[0]


def test_class_defined_inside_the_function_that_opens_the_connection() -> None:
    src = """
    import sqlite3, threading
    def main():
        conn = sqlite3.connect("a.db")
        class Job:
            def run(self):
                conn.execute("SELECT 1")
        threading.Thread(target=Job().run).start()
    """
    assert found(src) == [("LG101", 7)]
    assert "created in main (line 4)" in messages(src)[0]


def test_alias_of_a_self_attribute_keeps_the_attribute_name() -> None:
    src = """
    import sqlite3, threading
    class Store:
        def __init__(self):
            self._conn = sqlite3.connect("a.db")
        def add(self):
            conn = self._conn
            conn.execute("INSERT INTO t VALUES (1)")
    store = Store()
    threading.Thread(target=store.add).start()
    """
    assert found(src) == [("LG101", 8)]
    assert messages(src)[0].startswith("connection `Store._conn` is created in Store.__init__")


# -- values: factories, wrappers, cursors, app.state --------------------------------------------


def test_factory_with_an_early_return_still_returns_a_connection() -> None:
    src = """
    import sqlite3, threading
    def open_db(path):
        if not path:
            return None
        return sqlite3.connect(path)
    def make_label():
        return "x"
    conn = open_db("a.db")
    label = make_label()
    def work():
        label.upper()
        conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert found(src) == [("LG101", 13)]


def test_connection_wrapped_in_contextlib_closing() -> None:
    src = """
    import contextlib, sqlite3, threading
    conn = contextlib.closing(sqlite3.connect("a.db"))
    def work():
        with contextlib.closing(sqlite3.connect("b.db", timeout=5)) as mine:
            mine.execute("INSERT INTO t VALUES (1)")
        conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert found(src) == [("LG101", 7)]


def test_result_of_cursor_execute_is_the_same_cursor() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db", timeout=5, check_same_thread=False)
    cur = conn.cursor()
    lock = threading.Lock()
    def work():
        with lock:
            cur.execute("SELECT 1").fetchall()
        return cur.execute("SELECT 2").fetchall()
    threading.Thread(target=work).start()
    """
    assert found(src) == [("LG102", 9)]
    assert messages(src)[0].startswith("cursor `cur` is created at module level (line 4)")


def test_connection_kept_on_a_threading_local_is_per_thread() -> None:
    src = """
    import sqlite3, threading
    local = threading.local()
    def work():
        local.conn = sqlite3.connect("a.db", timeout=5)
        local.conn.execute("INSERT INTO t VALUES (1)")
    for _ in range(4):
        threading.Thread(target=work).start()
    """
    assert found(src) == []


def test_app_state_set_to_none_at_import_then_connected_at_startup() -> None:
    src = """
    import sqlite3
    from fastapi import FastAPI, Request
    app = FastAPI()
    app.state.db = None
    @app.on_event("startup")
    async def startup():
        app.state.db = sqlite3.connect("a.db")
    @app.get("/")
    def index(request: Request):
        request.app.state.cache.clear()
        return request.app.state.db.execute("SELECT 1").fetchall()
    """
    assert found(src) == [("LG101", 12)]
    assert messages(src)[0].startswith("connection `app.state.db` is created in startup")


def test_connection_yielded_by_a_request_dependency_is_per_request() -> None:
    src = """
    import sqlite3
    from fastapi import Depends, FastAPI
    app = FastAPI()
    def get_db():
        conn = sqlite3.connect("a.db", check_same_thread=False)
        try:
            yield conn
        finally:
            conn.close()
    @app.get("/")
    def index(db=Depends(get_db)):
        return db.execute("SELECT 1").fetchall()
    """
    assert found(src) == []


def test_walrus_receiver_is_followed() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    def work():
        (cur := conn.cursor()).execute("SELECT 1")
        return cur.fetchall()
    threading.Thread(target=work).start()
    """
    assert found(src) == [("LG101", 5)]


def test_awaited_aiosqlite_connection_is_not_sqlite3() -> None:
    src = """
    import sqlite3
    import aiosqlite
    async def handler():
        db = await aiosqlite.connect("a.db")
        async with db.execute("SELECT 1") as cur:
            return await cur.fetchall()
    async def other():
        async with aiosqlite.connect("a.db") as db:
            async with db.execute("SELECT 1") as cur:
                return await cur.fetchall()
    """
    assert found(src) == []


# -- statements the worker's uses sit in --------------------------------------------------------

_IN_WORKER = """
import sqlite3, threading
conn = sqlite3.connect("a.db")
def work(jobs):
{body}
threading.Thread(target=work, args=([],)).start()
"""


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            """
            while jobs:
                conn.execute("INSERT INTO t VALUES (?)", (jobs.pop(),))  # expect: LG101
            else:
                pass
            """,
            id="while",
        ),
        pytest.param(
            """
            try:
                jobs.pop()
            except (IndexError, ValueError) as exc:
                conn.execute("INSERT INTO errors VALUES (?)", (str(exc),))  # expect: LG101
            """,
            id="except-as",
        ),
        pytest.param(
            """
            try:
                jobs.pop()
            except:
                raise
            else:
                conn.commit()  # expect: LG101
            """,
            id="try-else",
        ),
        pytest.param(
            """
            match jobs:
                case []:
                    return
                case [first, *rest]:
                    conn.execute("INSERT INTO t VALUES (?)", (first,))  # expect: LG101
            """,
            id="match",
        ),
        pytest.param(
            """
            if not jobs:
                return
            first, *rest = conn.execute("SELECT x FROM t").fetchall()  # expect: LG101
            jobs[0] = rest
            """,
            id="unpack-and-subscript-targets",
        ),
    ],
)
def test_use_inside_a_statement_of_the_worker(body: str) -> None:
    src = _IN_WORKER.format(body=textwrap.indent(textwrap.dedent(body).strip("\n"), "    "))
    lines = src.splitlines()
    want = [("LG101", n) for n, line in enumerate(lines, start=1) if "# expect: LG101" in line]
    assert len(want) == 1
    assert found(src) == want


def test_module_level_annotated_connection() -> None:
    src = """
    import sqlite3, threading
    conn: sqlite3.Connection = sqlite3.connect("a.db")
    cur: sqlite3.Cursor
    def work():
        conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert found(src) == [("LG101", 6)]


# -- imports ---------------------------------------------------------------------------------


def test_relative_import_of_connect_is_not_sqlite3() -> None:
    src = """
    import threading
    from .db import connect
    from . import sqlite3
    conn = connect("a.db")
    def work():
        conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert found(src) == []


def test_connect_imported_inside_the_worker() -> None:
    src = """
    import threading
    def work():
        from sqlite3 import connect
        conn = connect("a.db")
        conn.execute("INSERT INTO t VALUES (1)")
    for _ in range(4):
        threading.Thread(target=work).start()
    """
    assert found(src) == [("LG106", 5)]


# -- what counts as holding a lock --------------------------------------------------------------


def test_lock_kept_on_another_object_counts_by_its_name() -> None:
    src = """
    import sqlite3, threading
    class App:
        pass
    app = App()
    app.db_lock = threading.Lock()
    conn = sqlite3.connect("a.db", timeout=5, check_same_thread=False)
    def work():
        with app.db_lock:
            conn.execute("INSERT INTO t VALUES (1)")
    def other():
        with app.guard:
            conn.execute("INSERT INTO t VALUES (2)")
    threading.Thread(target=work).start()
    threading.Thread(target=other).start()
    """
    assert found(src) == [("LG104", 7), ("LG102", 13)]
    assert "used here in other, which runs" in messages(src)[1]


def test_lock_picked_from_a_collection_is_not_assumed_to_guard_the_connection() -> None:
    # Striped locks: two threads may hold two different locks around the one connection.
    src = """
    import sqlite3, threading
    locks = [threading.Lock() for _ in range(4)]
    conn = sqlite3.connect("a.db", timeout=5, check_same_thread=False)
    def work(n):
        with locks[n % 4]:
            conn.execute("INSERT INTO t VALUES (?)", (n,))
    threading.Thread(target=work, args=(1,)).start()
    """
    assert found(src) == [("LG102", 7)]


def test_acquire_on_something_that_is_not_a_lock_holds_nothing() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db", timeout=5, check_same_thread=False)
    bucket = RateLimiter(10)
    def work():
        bucket.acquire()
        conn.execute("INSERT INTO t VALUES (1)")
        bucket.release()
    threading.Thread(target=work).start()
    """
    assert found(src) == [("LG102", 7)]
