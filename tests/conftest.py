from __future__ import annotations

import asyncio
import gc
import importlib.util
import inspect
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import litegate
import loop_lag
from litegate._engine import _connection, _group, _lane_loop, live

# Every test body that can runs in every read mode.
READ_MODES = [
    pytest.param(2, id="readers=2"),
    pytest.param("per-thread", id="per-thread"),
    pytest.param(0, id="readers=0"),
]


def _chosen(variable: str, params: list[Any]) -> list[Any]:
    """``params`` (pytest.param, each with an id), only those whose ids ``variable`` names
    (comma-separated) when it is set: CI runs some on one interpreter only, to stay in its
    time budget (see the Makefile's ``ci``). An unknown name fails the run."""
    chosen = os.environ.get(variable, "").strip()
    if not chosen:
        return params
    wanted = {name.strip() for name in chosen.split(",") if name.strip()}
    known = {p.id for p in params}
    if wanted - known:
        raise pytest.UsageError(
            f"{variable} names ones not available here: {sorted(wanted - known)} "
            f"(available: {sorted(str(k) for k in known)})"
        )
    return [p for p in params if p.id in wanted]


READ_MODES = _chosen("LITEGATE_READ_MODES", READ_MODES)


def _eager_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


# Every `async def` test runs on each of these loops (anyio's plugin, `anyio_mode = "auto"`):
# - asyncio: the default loop; the loop-lag check (tests/loop_lag.py) is enforced here.
# - asyncio-debug: debug mode raises on a loop call from a foreign thread and reports
#   never-awaited coroutines. Its bookkeeping (a source traceback, with a stat() per frame, for
#   every handle and future) stalls the loop by itself for 10-60 ms, so lag is not enforced.
# - uvloop, when installed; eager (3.12+): tasks run their first step inside create_task(),
#   so litegate must not assume a new task has not started yet.
ASYNC_BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"debug": True}), id="asyncio-debug"),
]
if importlib.util.find_spec("uvloop") is not None:
    ASYNC_BACKENDS.append(pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"))
if sys.version_info >= (3, 12):
    ASYNC_BACKENDS.append(pytest.param(("asyncio", {"loop_factory": _eager_loop}), id="eager"))
# LITEGATE_LOOPS=asyncio,eager keeps only those (CI runs each loop once across its two
# interpreters); LITEGATE_READ_MODES=readers=2 likewise.
ASYNC_BACKENDS = _chosen("LITEGATE_LOOPS", ASYNC_BACKENDS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.no_debug_loop(reason)`` keeps a test off the asyncio-debug loop (where its
    bookkeeping makes a burst of a thousand tasks 5-10x slower and trips default timeouts).

    And the debug loop runs with one read mode, a pool of 2 (the default's shape): what it
    checks (loop calls from foreign threads, never-awaited coroutines) is the async facade's,
    the same in every read mode, which the plain asyncio loop still covers in full. That keeps
    ~60 test cases, ~16 s, out of CI's 3.11 leg."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_debug = callspec is not None and callspec.id.split("-")[:2] == ["asyncio", "debug"]
        other_mode = (
            callspec is not None
            and "readers" in callspec.params
            and callspec.params["readers"] != 2
            and len(READ_MODES) > 1
        )
        off = item.get_closest_marker("no_debug_loop") is not None or other_mode
        (drop if on_debug and off else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=ASYNC_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(autouse=True)
def _loop_lag(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail an ``async def`` test in which the event loop was held longer than litegate's
    inline budget plus a margin (tests/loop_lag.py). ``@pytest.mark.blocks_loop("reason")``
    opts a test out: only for a test that blocks the loop itself, never for litegate."""
    item = request.node
    test = getattr(item, "obj", None)
    if not isinstance(item, pytest.Function) or not inspect.iscoroutinefunction(test):
        yield
        return
    marker = item.get_closest_marker("blocks_loop")
    if marker is not None and not (marker.args and str(marker.args[0]).strip()):
        pytest.fail("@pytest.mark.blocks_loop needs a reason", pytrace=False)
    # Whatever is alive now (pytest, the frameworks, earlier tests' leftovers) stays out of the
    # cyclic GC during the test: otherwise a full collection walks that heap and stalls the
    # loop for 10-40 ms, which is the session's heap, not litegate, holding the loop. And no
    # automatic collection runs during the test (an explicit gc.collect() still does): one over
    # the test's own garbage (300 requests' httpx and framework objects, under coverage) is the
    # likeliest cause of a 35 ms stall in CI on a quiet machine, sampled once, in httpx's URL
    # parsing (an allocation); not proven.
    gc.collect()
    gc.freeze()
    was_enabled = gc.isenabled()
    gc.disable()
    item.obj = loop_lag.wrap(test, item.nodeid, opted_out=marker is not None)
    try:
        yield
    finally:
        item.obj = test
        if was_enabled:
            gc.enable()


@pytest.fixture
def no_sniffio_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx and httpcore try ``import sniffio`` on every request; when it is not installed the
    failed import is not cached, and each request scans sys.path on the event loop (~5 ms,
    more under load). Recording it as absent makes that import fail at once."""
    if importlib.util.find_spec("sniffio") is None:
        monkeypatch.setitem(sys.modules, "sniffio", None)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "test.db")


@pytest.fixture(params=READ_MODES)
def readers(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture
def db(db_path: str, readers: Any) -> Iterator[litegate.Database]:
    database = litegate.connect(db_path, readers=readers)
    database.executescript(
        """
        CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, qty INT DEFAULT 0);
        CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL CHECK (balance >= 0));
        """
    )
    try:
        yield database
    finally:
        database.close()


@pytest.fixture(autouse=True)
def _no_leaked_engines() -> Iterator[None]:
    """Fail a test that leaves a database open (instead of silently closing it)."""
    before = set(map(id, live()))
    threads_before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [e for e in live() if id(e) not in before]
    for e in leaked:
        e.close(timeout=5)
    assert not leaked, f"test left {len(leaked)} litegate database(s) open"
    writers = [
        t
        for t in threading.enumerate()
        if t.name.startswith("litegate-writer") and t.ident not in threads_before
    ]
    for t in writers:
        t.join(5)
    assert not [t for t in writers if t.is_alive()], "a writer thread outlived its database"


@pytest.fixture
def commits_here(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The threads that ran a COMMIT on an event loop (``commit_on_loop``: the checkpoint held
    off), in order."""
    on: list[int] = []
    real = _connection.commit_on_loop

    def spy(conn: sqlite3.Connection, guard: Any, pages: int) -> None:
        on.append(threading.get_ident())
        real(conn, guard, pages)

    monkeypatch.setattr(_lane_loop, "commit_on_loop", spy)
    monkeypatch.setattr(_group, "commit_on_loop", spy)
    return on
