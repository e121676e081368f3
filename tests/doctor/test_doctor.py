"""litegate doctor: the case corpus, each rule's positive and negative cases, and reports."""

from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path

import pytest

from litegate.doctor import RULES, Report, analyze_paths, analyze_source
from litegate.doctor._report import to_json, to_sarif, to_text

CASES = Path(__file__).parent / "cases"
_EXPECT = re.compile(r"#\s*expect:\s*([A-Z0-9, ]+)")


def found(source: str) -> list[tuple[str, int]]:
    """(rule, line) of every finding in a snippet, sorted by line."""
    return [(f.rule, f.line) for f in analyze_source(textwrap.dedent(source), "snippet.py")]


def messages(source: str) -> list[str]:
    return [f.message for f in analyze_source(textwrap.dedent(source), "snippet.py")]


def expected(path: Path) -> set[tuple[str, int]]:
    out: set[tuple[str, int]] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = _EXPECT.search(line)
        if match:
            out.update((rule.strip(), number) for rule in match.group(1).split(","))
    return out


# -- the corpus --------------------------------------------------------------------------------

CASE_FILES = sorted(CASES.glob("*.py"))


def test_corpus_has_the_required_programs() -> None:
    names = {p.stem for p in CASE_FILES}
    assert {
        "starlette_store",
        "global_threads",
        "ok_locked_connection",
        "ok_per_thread",
        "ok_queue_pool",
        "async_routes",
    } <= names


@pytest.mark.parametrize("case", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_case_findings_are_exactly_the_expected_ones(case: Path) -> None:
    want = expected(case)
    if case.stem.startswith("ok_"):
        assert want == set(), "correct patterns carry no expectations"
    else:
        assert want, "a faulty case must expect at least one finding"
    report = analyze_paths([case])
    assert {(f.rule, f.line) for f in report.findings} == want


def test_starlette_store_exact_findings() -> None:
    got = [(f.rule, f.line, f.col) for f in analyze_paths([CASES / "starlette_store.py"]).findings]
    assert got == [("LG101", 23, 9), ("LG101", 26, 9), ("LG101", 29, 16)]


def test_global_threads_exact_findings() -> None:
    got = [(f.rule, f.line) for f in analyze_paths([CASES / "global_threads.py"]).findings]
    assert got == [("LG104", 10), ("LG106", 10), ("LG102", 15), ("LG105", 16)]


def test_every_rule_is_exercised_by_the_corpus() -> None:
    seen = {f.rule for f in analyze_paths([CASES]).findings}
    assert seen == set(RULES)


def test_messages_name_the_creation_and_the_thread_hop() -> None:
    (first, *_) = analyze_paths([CASES / "starlette_store.py"]).findings
    assert "Store._conn" in first.message
    assert "Store.__init__ (line 18)" in first.message
    assert "asyncio.to_thread, line 44" in first.message
    assert first.fix == RULES["LG101"].fix


# -- LG101 cross-thread connection --------------------------------------------------------------


def test_lg101_module_connection_used_by_thread_target() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    def work():
        conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert found(src) == [("LG101", 5)]


def test_lg101_not_for_connection_opened_in_the_worker() -> None:
    src = """
    import sqlite3, threading
    def work():
        conn = sqlite3.connect("a.db")
        conn.execute("SELECT 1")
        conn.close()
    threading.Thread(target=work).start()
    """
    assert found(src) == []


def test_lg101_method_via_to_thread_on_module_instance() -> None:
    src = """
    import asyncio, sqlite3
    class Repo:
        def __init__(self):
            self.db = sqlite3.connect("a.db")
        def get(self):
            return self.db.execute("SELECT 1").fetchone()
    repo = Repo()
    async def handler():
        return await asyncio.to_thread(repo.get)
    """
    assert found(src) == [("LG101", 7)]


def test_lg101_not_for_instance_built_inside_the_worker() -> None:
    src = """
    import sqlite3, threading
    class Repo:
        def __init__(self):
            self.db = sqlite3.connect("a.db", timeout=5)
        def get(self):
            return self.db.execute("SELECT 1").fetchone()
    def work():
        Repo().get()
    threading.Thread(target=work).start()
    """
    assert found(src) == []


def test_lg101_sync_fastapi_route_and_app_state() -> None:
    src = """
    import sqlite3
    from fastapi import FastAPI, Request
    app = FastAPI()
    @app.on_event("startup")
    async def startup():
        app.state.db = sqlite3.connect("a.db")
    @app.get("/")
    def index(request: Request):
        return request.app.state.db.execute("SELECT 1").fetchall()
    @app.get("/a")
    async def fine(request: Request):
        return {}
    """
    assert found(src) == [("LG101", 10)]


def test_lg101_partial_and_executor_map() -> None:
    src = """
    import functools, sqlite3
    from concurrent.futures import ThreadPoolExecutor
    conn = sqlite3.connect("a.db")
    def load(table, n):
        return conn.execute("SELECT * FROM t LIMIT ?", (n,)).fetchall()
    with ThreadPoolExecutor() as ex:
        ex.map(functools.partial(load, "t"), [1, 2])
    """
    assert ("LG101", 6) in found(src)


# -- thread entries: what starts running on another thread -------------------------------------


def test_thread_and_timer_with_positional_target_and_args() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    def work(n):
        conn.execute("SELECT ?", (n,))
    def tick(c):
        c.commit()
    threading.Thread(None, work, "worker", (1,), daemon=True).start()
    threading.Timer(5.0, tick, [conn]).start()
    threading.Timer(9.0, tick, pending).start()
    """
    assert found(src) == [("LG104", 3), ("LG101", 5), ("LG101", 7)]
    timer = analyze_source(textwrap.dedent(src), "snippet.py")[2]
    assert "used here in tick, which runs on another thread (threading.Timer, line 9)" in (
        timer.message
    )


def test_thread_without_a_resolvable_target_is_not_an_entry() -> None:
    src = """
    import functools, sqlite3, threading
    conn = sqlite3.connect("a.db")
    def work():
        conn.execute("SELECT 1")
    threading.Thread(daemon=True).start()
    threading.Thread(target=make_worker(work)).start()
    threading.Thread(target=handlers[0]).start()
    threading.Thread(target=undefined_name).start()
    threading.Thread(target=functools.partial(undefined_name)).start()
    """
    assert found(src) == []


def test_lambda_targets_at_module_level_and_in_a_function() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    threading.Thread(target=lambda: conn.execute("SELECT 1")).start()
    def main():
        threading.Thread(target=lambda: conn.commit()).start()
    """
    assert found(src) == [("LG104", 3), ("LG101", 4), ("LG101", 6)]
    assert "(<lambda:4>, main.<lambda:6>)" in analyze_source(textwrap.dedent(src))[0].message


def test_lambda_target_calling_a_function_with_keyword_arguments() -> None:
    src = """
    import sqlite3, threading
    def save(conn):
        conn.commit()
    def write(n, *, db, retries=3):
        db.execute("INSERT INTO t VALUES (?)", (n,))
        save(conn=db)
    def main(**options):
        conn = sqlite3.connect("a.db")
        threading.Thread(target=lambda: write(1, db=conn, retries=5, **options)).start()
    """
    assert found(src) == [("LG101", 4), ("LG101", 6)]


def test_method_of_an_unknown_receiver_only_one_class_defines() -> None:
    unique = """
    import sqlite3, threading
    class Store:
        def __init__(self):
            self.conn = sqlite3.connect("a.db")
        def flush(self):
            self.conn.commit()
    def start(store):
        threading.Thread(target=store.flush).start()
    """
    ambiguous = (
        unique
        + """
    class Other:
        def __init__(self):
            self.conn = sqlite3.connect("b.db")
        def flush(self):
            self.conn.commit()
    """
    )
    assert found(unique) == [("LG101", 7)]
    assert found(ambiguous) == []  # which class's flush() runs is unknown: no guess


def test_method_from_an_outside_base_is_not_taken_for_another_classes_method() -> None:
    # Regression: store.flush() (inherited from ExternalBase) was taken for Cache.flush(), the
    # only flush() in the module, and Cache.conn was reported as used on the thread.
    src = """
    import sqlite3, threading
    from storage import ExternalBase
    class Store(ExternalBase):
        def __init__(self):
            self.conn = sqlite3.connect("a.db", timeout=5)
    class Cache:
        def __init__(self):
            self.conn = sqlite3.connect("c.db")
        def flush(self):
            self.conn.commit()
    store = Store()
    threading.Thread(target=store.flush).start()
    """
    assert found(src) == []


def test_starred_arguments_stop_the_binding() -> None:
    src = """
    import sqlite3, threading
    def write(conn, n):
        conn.execute("INSERT INTO t VALUES (?)", (n,))
    def main():
        conn = sqlite3.connect("a.db")
        args = (conn, 1)
        threading.Thread(target=write, args=(*args,)).start()
    """
    assert found(src) == []
    bound = src.replace("args=(*args,)", "args=(conn, 1)")
    assert found(bound) == [("LG101", 4)]


def test_recursive_worker_is_followed_once() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    def walk(node):
        for child in node.children:
            walk(child)
        walk(node.left)
        conn.execute("SELECT 1")
    threading.Thread(target=walk, args=(root,)).start()
    """
    assert found(src) == [("LG101", 8)]


def test_calls_the_worker_cannot_resolve_are_skipped() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    class Job:
        def run(self):
            self.missing()
            handlers[0]()
            conn.execute("SELECT 1")
    def work():
        job = Job()
        job.run()
    threading.Thread(target=work).start()
    """
    assert found(src) == [("LG101", 8)]


def test_process_targets_do_not_share_the_parents_connection() -> None:
    src = """
    import multiprocessing, sqlite3
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import Pool
    conn = sqlite3.connect("a.db")
    def work(n=0):
        mine = sqlite3.connect("b.db")
        mine.execute("INSERT INTO t VALUES (?)", (n,))
        conn.execute("SELECT 1")
    multiprocessing.Process(target=work).start()
    with Pool(4) as pool:
        pool.apply_async(work, (1,))
        pool.starmap(work, [(1,)])
    with ProcessPoolExecutor() as ex:
        ex.submit(work, 2)
    """
    assert found(src) == [("LG106", 7)]
    assert "each thread or process opens its own connection" in (
        analyze_source(textwrap.dedent(src))[0].message
    )


def test_run_in_executor_on_a_process_pool_versus_the_default_thread_pool() -> None:
    src = """
    import asyncio, sqlite3
    from concurrent.futures import ProcessPoolExecutor
    conn = sqlite3.connect("a.db")
    pool = ProcessPoolExecutor()
    def work():
        conn.execute("SELECT 1")
    async def main():
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, work)
    """
    assert found(src) == []
    threads = src.replace("run_in_executor(pool, work)", "run_in_executor(None, work)")
    assert found(threads) == [("LG104", 4), ("LG101", 7)]


def test_submit_and_map_on_objects_that_are_not_executors() -> None:
    src = """
    import sqlite3
    conn = sqlite3.connect("a.db")
    def work():
        conn.execute("SELECT 1")
    form.submit(work)
    results.map(work)
    pool.starmap(work, [()])
    """
    assert found(src) == []


def test_route_objects_and_add_url_rule() -> None:
    src = """
    import sqlite3
    from starlette.routing import Route
    from flask import Flask
    conn = sqlite3.connect("a.db")
    def a(request):
        return conn.execute("SELECT 1").fetchall()
    def b():
        return conn.execute("SELECT 2").fetchall()
    async def c(request):
        return conn.execute("SELECT 3").fetchall()
    routes = [Route("/a", endpoint=a), Route("/c", c)]
    app = Flask(__name__)
    app.add_url_rule("/b", "b", b)
    app.add_url_rule("/x", "x")
    """
    # the async endpoint runs on the loop: LG103, not a thread hop
    assert found(src) == [("LG104", 5), ("LG101", 7), ("LG101", 9), ("LG103", 11)]


def test_sync_methods_of_http_endpoint_subclasses() -> None:
    src = """
    import sqlite3
    from starlette.endpoints import HTTPEndpoint
    conn = sqlite3.connect("a.db")
    class Base(HTTPEndpoint):
        pass
    class Items(Base):
        def get(self, request):
            return conn.execute("SELECT 1").fetchall()
        def helper(self):
            return conn.execute("SELECT 2").fetchall()
    class Plain(Unknown):
        def get(self, request):
            return conn.execute("SELECT 3").fetchall()
    """
    assert found(src) == [("LG104", 4), ("LG101", 9)]
    message = analyze_source(textwrap.dedent(src))[1].message
    assert "(sync HTTPEndpoint method, run in a thread pool, line 8)" in message


def test_a_class_that_names_itself_as_its_base_is_analysed() -> None:
    # ``class A(A)`` (a NameError at run time, but valid syntax): telling whether it is an
    # HTTPEndpoint once recursed until RecursionError, and the file was skipped unanalysed.
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    class A(A):
        def get(self, request):
            return 1
    def work():
        conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert found(src) == [("LG101", 8)]


def test_decorator_call_that_is_not_a_route_is_not_an_entry() -> None:
    src = """
    import sqlite3
    conn = sqlite3.connect("a.db")
    @cache.memoize(timeout=60)
    def load():
        return conn.execute("SELECT 1").fetchall()
    """
    assert found(src) == []


# -- threading.Thread subclasses: run() is the thread body -------------------------------------


def test_lg101_thread_subclass_run_uses_a_module_connection() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    class Worker(threading.Thread):
        def run(self):
            conn.execute("SELECT 1")
    Worker().start()
    """
    assert found(src) == [("LG101", 6)]
    assert messages(src)[0] == (
        "connection `conn` is created at module level (line 3) but used here in Worker.run, "
        "which runs on another thread (threading.Thread subclass, line 7): sqlite3 raises "
        "ProgrammingError (objects created in a thread can only be used in that same thread)"
    )


_SUBCLASS = """
import sqlite3, threading
import threading as th
from threading import Thread
conn = sqlite3.connect("a.db")
class Base(threading.Thread):
    pass
class Mixin:
    pass
class Worker({bases}):
    def run(self):
        conn.execute("SELECT 1")
w = Worker()
w.start()
"""


@pytest.mark.parametrize(
    ("bases", "want"),
    [
        pytest.param("threading.Thread", [("LG101", 12)], id="threading.Thread"),
        pytest.param("th.Thread", [("LG101", 12)], id="module-alias"),
        pytest.param("Thread", [("LG101", 12)], id="from-threading-import-Thread"),
        pytest.param("Base", [("LG101", 12)], id="module-class-subclassing-Thread"),
        pytest.param("Mixin, Base", [("LG101", 12)], id="second-base"),
        pytest.param("Mixin", [], id="module-class-not-a-thread"),
        pytest.param("object", [], id="object"),
        pytest.param("threading.local", [], id="threading.local"),
    ],
)
def test_thread_subclass_forms(bases: str, want: list[tuple[str, int]]) -> None:
    assert found(_SUBCLASS.format(bases=bases)) == want


def test_lg101_thread_subclass_connection_made_in_init_used_in_run() -> None:
    # The classic bug: __init__ runs on the thread that creates the object, run() on the new one.
    src = """
    import sqlite3, threading
    class Writer(threading.Thread):
        def __init__(self, path):
            super().__init__(daemon=True)
            self.conn = sqlite3.connect(path)
            self.repo = Repo()
        def run(self):
            self.conn.execute("INSERT INTO t VALUES (1)")
            self.conn.commit()
            self.repo.get()
    class Repo:
        def __init__(self):
            self.db = sqlite3.connect("b.db")
        def get(self):
            return self.db.execute("SELECT 1").fetchone()
    Writer("a.db").start()
    """
    assert found(src) == [("LG101", 9), ("LG101", 16)]
    first, second = messages(src)
    assert first.startswith("connection `Writer.conn` is created in Writer.__init__ (line 6)")
    assert "used here in Writer.run, which runs on another thread" in first
    assert second.startswith("connection `Repo.db` is created in Repo.__init__ (line 14)")


def test_thread_subclass_connection_made_in_run_is_per_thread() -> None:
    src = """
    import sqlite3, threading
    class Writer(threading.Thread):
        def __init__(self):
            super().__init__()
            self.conn = None
            self.cache = None
        def run(self):
            self.conn = sqlite3.connect("a.db", timeout=5)
            self.cache = Repo()
            local = sqlite3.connect("b.db", timeout=5)
            local.execute("INSERT INTO t VALUES (1)")
            self.step()
            def flush():
                self.conn.commit()
            flush()
            self.conn.close()
        def step(self):
            self.conn.execute("INSERT INTO t VALUES (1)")
            self.conn.commit()
            self.cache.get()
    class Repo:
        def __init__(self):
            self.db = sqlite3.connect("c.db", timeout=5)
        def get(self):
            return self.db.execute("SELECT 1").fetchone()
    for _ in range(4):
        Writer().start()
    """
    assert found(src) == []


def test_connection_made_in_run_handed_to_a_further_thread() -> None:
    src = """
    import sqlite3, threading
    class Writer(threading.Thread):
        def run(self):
            self.conn = sqlite3.connect("a.db", timeout=5)
            def flush():
                self.conn.commit()
            threading.Thread(target=flush).start()
    Writer().start()
    """
    assert found(src) == [("LG101", 7)]
    assert messages(src)[0].startswith(
        "connection `Writer.conn` is created in Writer.run (line 5) but used here in "
        "Writer.run.flush, which runs on another thread (threading.Thread, line 8)"
    )


def test_thread_subclass_that_never_touches_the_connection() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    class Ticker(threading.Thread):
        def run(self):
            print("tick")
    class Idle(threading.Thread):
        pass
    Ticker().start()
    Idle(target=print).start()
    conn.execute("SELECT 1")
    """
    assert found(src) == []


def test_run_method_of_a_class_that_is_not_a_thread_is_not_a_thread_body() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    class Job:
        def run(self):
            conn.execute("SELECT 1")
        def start(self):
            self.run()
    Job().start()
    Job().run()
    """
    assert found(src) == []
    started = src + "threading.Thread(target=Job().run).start()\n"
    assert found(started) == [("LG101", 6)]


def test_thread_subclass_started_by_itself_and_started_in_a_loop() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    class Worker(threading.Thread):
        def __init__(self):
            super().__init__()
            self.start()
        def run(self):
            conn.execute("SELECT 1")
    Worker()
    """
    assert found(src) == [("LG101", 9)]
    assert "(threading.Thread subclass, line 7)" in messages(src)[0]
    looped = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    class Worker(threading.Thread):
        def run(self):
            conn.execute("SELECT 1")
    for _ in range(4):
        Worker().start()
    """
    assert found(looped) == [("LG104", 3), ("LG101", 6)]  # one connection, four threads


def test_thread_subclass_started_elsewhere_still_runs_on_its_own_thread() -> None:
    # No start() in this module (it is started by the code that imports it): run() is still
    # the body of a thread, reported at the class.
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    class Worker(threading.Thread):
        def run(self):
            conn.execute("SELECT 1")
    """
    assert found(src) == [("LG101", 6)]
    assert "(threading.Thread subclass, line 4)" in messages(src)[0]


def test_run_inherited_from_a_module_thread_class_is_one_thread_body() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    class Base(threading.Thread):
        def run(self):
            conn.execute("SELECT 1")
    class Worker(Base):
        pass
    class Other(Base):
        pass
    Worker().start()
    """
    assert found(src) == [("LG101", 6)]
    assert "(threading.Thread subclass, line 11)" in messages(src)[0]


# -- a connection handed to a thread in its arguments -------------------------------------------

_HANDED = """
import asyncio, functools, multiprocessing, sqlite3, threading
from concurrent.futures import ThreadPoolExecutor
ex = ThreadPoolExecutor()
def open_db():
    return sqlite3.connect("a.db")
def write(conn):
    conn.execute("SELECT 1")
def main():
    c = sqlite3.connect("a.db")
    {spawn}
"""


@pytest.mark.parametrize(
    ("spawn", "made"),
    [
        pytest.param(
            "threading.Thread(target=write, args=(c,)).start()",
            "connection `c` is created in main (line 10)",
            id="variable",
        ),
        pytest.param(
            'threading.Thread(target=write, args=(sqlite3.connect("a.db"),)).start()',
            "connection `conn` is created in main (line 11)",
            id="inline",
        ),
        pytest.param(
            'threading.Thread(target=write, args=(d := sqlite3.connect("a.db"),)).start()',
            "connection `d` is created in main (line 11)",
            id="walrus",
        ),
        pytest.param(
            'threading.Thread(None, write, None, [sqlite3.connect("a.db")]).start()',
            "connection `conn` is created in main (line 11)",
            id="positional-args",
        ),
        pytest.param(
            'threading.Thread(target=functools.partial(write, sqlite3.connect("a.db"))).start()',
            "connection `conn` is created in main (line 11)",
            id="partial",
        ),
        pytest.param(
            'ex.submit(write, sqlite3.connect("a.db"))',
            "connection `conn` is created in main (line 11)",
            id="executor-submit",
        ),
        pytest.param(
            'asyncio.to_thread(write, sqlite3.connect("a.db"))',
            "connection `conn` is created in main (line 11)",
            id="to-thread",
        ),
        pytest.param(
            "threading.Thread(target=write, args=(open_db(),)).start()",
            "connection `conn` is created in open_db (line 11)",
            id="factory",
        ),
        pytest.param(
            'threading.Thread(target=write, args=(sqlite3.connect("a.db").cursor(),)).start()',
            "cursor `conn` is created in main (line 11)",
            id="cursor",
        ),
    ],
)
def test_lg101_connection_handed_to_a_thread_as_an_argument(spawn: str, made: str) -> None:
    src = _HANDED.format(spawn=spawn)
    assert found(src) == [("LG101", 8)]
    assert messages(src)[0].startswith(f"{made} but used here in write, which runs on another")


@pytest.mark.parametrize(
    "spawn",
    [
        pytest.param(
            'threading.Thread(target=lambda: write(sqlite3.connect("a.db"))).start()',
            id="made-by-the-thread",
        ),
        pytest.param(
            'multiprocessing.Process(target=write, args=(sqlite3.connect("a.db"),)).start()',
            id="process",
        ),
        pytest.param(
            "threading.Thread("
            'target=write, args=(sqlite3.connect("a.db", check_same_thread=False),)).start()',
            id="the-threads-alone",
        ),
    ],
)
def test_connection_handed_inline_that_only_the_thread_uses(spawn: str) -> None:
    assert found(_HANDED.format(spawn=spawn)) == []


def test_connection_handed_inline_in_a_loop_is_not_a_shared_global() -> None:
    src = """
    import sqlite3, threading
    def write(conn):
        conn.execute("SELECT 1")
    for _ in range(4):
        threading.Thread(target=write, args=(sqlite3.connect("a.db"),)).start()
    """
    # made on the main thread (LG101), but one connection per thread: no global is shared
    assert found(src) == [("LG101", 4)]
    assert messages(src)[0].startswith("connection `conn` is created at module level (line 6)")
    named = src.replace("args=(sqlite3", "args=(c := sqlite3")
    assert messages(named)[0].startswith("connection `c` is created at module level (line 6)")


# -- LG102 unlocked shared connection ----------------------------------------------------------


def test_lg102_check_same_thread_false_without_lock() -> None:
    src = """
    import sqlite3, threading
    class Log:
        def __init__(self):
            self.conn = sqlite3.connect("a.db", timeout=5, check_same_thread=False)
        def write(self, m):
            self.conn.execute("INSERT INTO log VALUES (?)", (m,))
    log = Log()
    threading.Thread(target=log.write, args=("x",)).start()
    """
    assert found(src) == [("LG102", 7)]


def test_lg102_not_when_lock_held_by_caller() -> None:
    src = """
    import sqlite3, threading
    lock = threading.Lock()
    conn = sqlite3.connect("a.db", timeout=5, check_same_thread=False)
    def _insert(m):
        conn.execute("INSERT INTO log VALUES (?)", (m,))
    def write(m):
        with lock:
            _insert(m)
            conn.commit()
    threading.Thread(target=write, args=("x",)).start()
    """
    assert found(src) == []


# -- LG103 blocking call in async def ----------------------------------------------------------


def test_lg103_direct_and_through_a_helper() -> None:
    src = """
    import sqlite3
    db = sqlite3.connect("a.db")
    def count():
        return db.execute("SELECT count(*) FROM t").fetchone()[0]
    async def handler():
        n = count()
        db.commit()
        return n
    """
    assert found(src) == [("LG103", 7), ("LG103", 8)]


def test_lg103_not_for_awaited_or_offloaded_calls() -> None:
    src = """
    import asyncio, sqlite3
    import aiosqlite
    def count():
        with sqlite3.connect("a.db") as conn:
            return conn.execute("SELECT 1").fetchone()
    async def handler(adb):
        await adb.execute("SELECT 1")
        return await asyncio.to_thread(count)
    async def lifespan(app):
        app.state.db = sqlite3.connect("a.db")
        yield
    """
    assert found(src) == []


def test_lg103_through_helpers_each_call_reported_once() -> None:
    src = """
    import sqlite3
    db = sqlite3.connect("a.db")
    def open_db():
        return sqlite3.connect("a.db")
    def query(session):
        rows = []
        session.close()
        rows.append(1)
        return db.execute("SELECT 1").fetchall()
    def report(session):
        log("start")
        pure()
        return query(session)
    def pure():
        return 1
    def noop():
        pass
    async def handler(session):
        conn = open_db()
        n = report(session)
        m = report(session)
        session.execute("SELECT 1")
        pure()
        noop()
        return n, m
    """
    assert found(src) == [("LG103", 20), ("LG103", 21), ("LG103", 22)]
    messages = [f.message for f in analyze_source(textwrap.dedent(src))]
    assert (
        messages[0]
        == "in async def handler(): open_db() runs sqlite3 (line 5) and blocks the event loop"
    )
    assert "report() runs sqlite3 (line 14)" in messages[1]


def test_lg103_not_in_startup_and_shutdown_hooks() -> None:
    src = """
    import sqlite3
    from starlette.applications import Starlette
    db = None
    async def warm():
        global db
        db = sqlite3.connect("a.db")
    async def close_db():
        db.close()
    app = Starlette(on_startup=[warm], on_shutdown=(close_db,))
    @app.on_event("startup")
    async def load():
        db.execute("CREATE TABLE IF NOT EXISTS t (x)")
    @sio.listen
    async def connected():
        db.execute("SELECT 1")
    async def handler():
        db.execute("SELECT 2")
    """
    assert found(src) == [("LG103", 18)]


# -- LG104 global shared by several threads -----------------------------------------------------


def test_lg104_global_cursor_used_by_two_targets() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db", timeout=5, check_same_thread=False)
    cur = conn.cursor()
    lock = threading.Lock()
    def a():
        with lock:
            cur.execute("SELECT 1")
    def b():
        cur.execute("SELECT 2")
    threading.Thread(target=a).start()
    threading.Thread(target=b).start()
    """
    assert found(src) == [("LG104", 4), ("LG102", 10)]


def test_lg104_not_for_one_background_thread() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    def work():
        conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert [rule for rule, _ in found(src)] == ["LG101"]


# -- LG105 commit/close from worker -------------------------------------------------------------


def test_lg105_close_even_under_lock_and_unlocked_commit() -> None:
    src = """
    import sqlite3, threading
    lock = threading.Lock()
    conn = sqlite3.connect("a.db", timeout=5, check_same_thread=False)
    def stop():
        with lock:
            conn.close()
    def save():
        conn.commit()
    threading.Thread(target=stop).start()
    threading.Thread(target=save).start()
    """
    assert found(src) == [("LG104", 4), ("LG105", 7), ("LG105", 9)]


def test_lg105_not_for_commit_under_lock() -> None:
    src = """
    import sqlite3, threading
    lock = threading.RLock()
    conn = sqlite3.connect("a.db", timeout=5, check_same_thread=False)
    def save():
        lock.acquire()
        try:
            conn.execute("INSERT INTO t VALUES (1)")
            conn.commit()
        finally:
            lock.release()
    threading.Thread(target=save).start()
    """
    assert found(src) == []


# -- LG106 missing busy timeout ----------------------------------------------------------------


def test_lg106_per_thread_connections_without_timeout() -> None:
    src = """
    import sqlite3, threading
    def work():
        conn = sqlite3.connect("a.db")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
    for _ in range(4):
        threading.Thread(target=work).start()
    """
    assert found(src) == [("LG106", 4)]


@pytest.mark.parametrize(
    "connect",
    [
        pytest.param('sqlite3.connect("a.db", timeout=30)', id="timeout-kwarg"),
        pytest.param('sqlite3.connect("a.db", 30.0)', id="timeout-positional"),
    ],
)
def test_lg106_not_with_timeout(connect: str) -> None:
    src = f"""
    import sqlite3, threading
    def work():
        conn = {connect}
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
    threading.Thread(target=work).start()
    """
    assert found(src) == []


def test_lg106_not_with_busy_timeout_pragma_or_read_only_module() -> None:
    pragma = """
    import sqlite3, threading
    def work():
        conn = sqlite3.connect("a.db")
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("INSERT INTO t VALUES (1)")
    threading.Thread(target=work).start()
    """
    reads = """
    import sqlite3, threading
    def work():
        conn = sqlite3.connect("a.db")
        return conn.execute("SELECT * FROM t").fetchall()
    threading.Thread(target=work).start()
    """
    assert found(pragma) == []
    assert found(reads) == []


def test_lg106_not_for_in_memory_databases() -> None:
    src = """
    import sqlite3, threading
    def work():
        conn = sqlite3.connect(":memory:")
        conn.execute("INSERT INTO t VALUES (1)")
    threading.Thread(target=work).start()
    """
    assert found(src) == []


def test_check_same_thread_through_kwargs_is_not_assumed_true() -> None:
    src = """
    import sqlite3, threading
    lock = threading.Lock()
    def connect(**kwargs):
        return sqlite3.connect("a.db", timeout=5, **kwargs)
    conn = connect(check_same_thread=False)
    def work():
        with lock:
            conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert found(src) == []


def test_lg106_timeout_zero_is_flagged() -> None:
    src = """
    import sqlite3
    def pool():
        return [sqlite3.connect("a.db", timeout=0) for _ in range(4)]
    def save(conn):
        conn.execute("DELETE FROM t")
    """
    assert found(src) == [("LG106", 4)]


# -- LG107 deferred write transaction ----------------------------------------------------------


def test_lg107_begin_then_read_then_write() -> None:
    src = """
    import sqlite3
    def bump(conn):
        conn.execute("BEGIN")
        n = conn.execute("SELECT n FROM c").fetchone()[0]
        conn.execute("UPDATE c SET n = ?", (n + 1,))
        conn.execute("COMMIT")
    def script(conn):
        conn.executescript("BEGIN DEFERRED; SELECT 1; DELETE FROM c; COMMIT;")
    """
    assert found(src) == [("LG107", 4), ("LG107", 9)]


def test_lg107_not_for_begin_immediate_or_read_only_transaction() -> None:
    src = """
    import sqlite3
    def bump(conn):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE c SET n = n + 1")
        conn.execute("COMMIT")
    def snapshot(conn):
        conn.execute("BEGIN")
        rows = conn.execute("SELECT * FROM c").fetchall()
        conn.execute("COMMIT")
        conn.execute("INSERT INTO log VALUES (1)")
        return rows
    """
    assert found(src) == []


def test_lg107_f_string_sql_is_read_up_to_its_first_placeholder() -> None:
    src = """
    import sqlite3
    def bump(conn, table):
        conn.execute("BEGIN")
        conn.execute(f"UPDATE {table} SET n = n + 1")
        conn.execute("COMMIT")
    def unknown(conn, verb):
        conn.execute("BEGIN")
        conn.execute(f"{verb} INTO t VALUES (1)")
        conn.execute("COMMIT")
    def constant(conn):
        conn.execute("BEGIN")
        conn.execute(f"DELETE FROM t")
    """
    assert found(src) == [("LG107", 4), ("LG107", 12)]


# -- suppression, robustness -------------------------------------------------------------------

_SUPPRESS = """
import sqlite3, threading
conn = sqlite3.connect("a.db")
def work():
    conn.execute("SELECT 1")  {comment}
threading.Thread(target=work).start()
"""


@pytest.mark.parametrize(
    ("comment", "kept"),
    [
        pytest.param("", [("LG101", 5)], id="none"),
        pytest.param("# litegate: ignore[LG101]", [], id="rule"),
        pytest.param("# litegate: ignore[lg103, LG101]", [], id="list"),
        pytest.param("# litegate: ignore", [], id="all"),
        pytest.param("# litegate: ignore[LG102]", [("LG101", 5)], id="other-rule"),
    ],
)
def test_ignore_comment(comment: str, kept: list[tuple[str, int]]) -> None:
    assert found(_SUPPRESS.format(comment=comment)) == kept


def test_modules_without_sqlite3_are_not_parsed() -> None:
    assert analyze_source("this is not python (") == []


def test_unparsable_file_is_reported_as_skipped(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sqlite3\ndef broken(:\n")
    report = analyze_paths([tmp_path])
    assert report.findings == ()
    assert report.files == 1
    assert report.skipped[0][0] == str(bad)
    assert "SyntaxError" in report.skipped[0][1]


def test_hidden_and_virtualenv_directories_are_skipped(tmp_path: Path) -> None:
    code = (CASES / "global_threads.py").read_text()
    for sub in (".git", "venv", "pkg/__pycache__"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "m.py").write_text(code)
    (tmp_path / "venv" / "pyvenv.cfg").write_text("")
    (tmp_path / "pkg" / "app.py").write_text(code)
    report = analyze_paths([tmp_path], exclude=["*/never/*"])
    assert report.files == 1
    assert {f.path for f in report.findings} == {str(tmp_path / "pkg" / "app.py")}


def test_exclude_and_select(tmp_path: Path) -> None:
    report = analyze_paths([CASES], exclude=["async_*"], select=["lg103", "LG104"])
    assert {f.rule for f in report.findings} == {"LG104"}
    with pytest.raises(ValueError, match="LG999"):
        analyze_paths([CASES], select=["LG999"])
    with pytest.raises(FileNotFoundError):
        analyze_paths([tmp_path / "missing"])


def test_deeply_nested_expression_does_not_crash(tmp_path: Path) -> None:
    src = "import sqlite3\nx = " + "+".join(["1"] * 500) + "\n"
    assert analyze_source(src) == []
    (tmp_path / "deep.py").write_text("import sqlite3\nx = " + "+".join(["1"] * 50_000))
    report = analyze_paths([tmp_path])
    assert len(report.skipped) == 1  # the parser gives up; the doctor carries on


# -- reports ----------------------------------------------------------------------------------


def _report() -> Report:
    return analyze_paths([CASES / "global_threads.py", CASES / "ok_per_thread.py"])


def test_text_report_groups_by_file_with_fixes() -> None:
    text = to_text(_report())
    lines = text.splitlines()
    assert lines[0].endswith("global_threads.py")
    assert lines[1].startswith("  10:1  LG104  global connection `conn`")
    assert lines[2].startswith("      fix: ")
    assert lines[-1] == "4 findings in 1 file (2 files checked)"


def test_json_report() -> None:
    doc = json.loads(to_json(_report()))
    assert doc["version"] == 1
    assert doc["files"] == 2
    first = doc["findings"][0]
    assert (first["rule"], first["line"], first["col"]) == ("LG104", 10, 1)
    assert first["name"] == "global-shared-by-threads"
    assert first["fix"] == RULES["LG104"].fix


def test_sarif_report() -> None:
    log = json.loads(to_sarif(_report()))
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == list(RULES)
    results = run["results"]
    assert len(results) == 4
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        region = result["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert uri.endswith("cases/global_threads.py") and "\\" not in uri


# -- speed ------------------------------------------------------------------------------------

_MODULE = """
import sqlite3
import threading

conn_{i} = sqlite3.connect("db_{i}.sqlite", check_same_thread=False)
lock_{i} = threading.Lock()


class Store{i}:
    def __init__(self, path):
        self._conn = sqlite3.connect(path, timeout=10)

    def add(self, name):
        self._conn.execute("INSERT INTO items (name) VALUES (?)", (name,))
        self._conn.commit()

"""
_FUNC = """
def work_{i}_{j}(item):
    with lock_{i}:
        rows = conn_{i}.execute("SELECT * FROM t WHERE x = ?", (item,)).fetchall()
        total = 0
        for row in rows:
            total += row[0] * {j}
        return total

"""


def test_doctor_runs_on_a_100k_line_tree_in_seconds(tmp_path: Path) -> None:
    lines = 0
    for i in range(200):
        parts = [_MODULE.format(i=i)]
        parts += [_FUNC.format(i=i, j=j) for j in range(55)]
        parts.append(
            f"threads_{i} = [threading.Thread(target=work_{i}_0) for _ in range(2)]\n"
            f"store_{i} = Store{i}('s.db')\n"
            f"threading.Thread(target=store_{i}.add, args=('x',)).start()\n"
        )
        text = "".join(parts)
        lines += text.count("\n")
        pkg = tmp_path / f"pkg{i % 10}"
        pkg.mkdir(exist_ok=True)
        (pkg / f"mod{i}.py").write_text(text)
    assert lines >= 100_000
    start = time.perf_counter()
    report = analyze_paths([tmp_path])
    elapsed = time.perf_counter() - start
    print(f"doctor: {lines} lines in {report.files} files in {elapsed:.2f} s")
    assert report.files == 200
    assert report.skipped == ()
    assert elapsed < 30


def test_every_rule_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "doctor.md").read_text()
    for r in RULES.values():
        assert f"### {r.id} {r.name}" in doc
