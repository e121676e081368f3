"""Bad arguments to public methods (``_args.py``): a wrong type raises ``TypeError`` naming the
argument, a value out of range ``ValueError``, both in the caller before anything is queued;
values SQLite cannot store raise what sqlite3 raises. Nothing of a refused call runs, and the
database stays usable (issue 10, item 10)."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import litegate

INSERT = "INSERT INTO items(name) VALUES (?)"


def _count(db: litegate.Database, name: str) -> int:
    n: int = db.query_value("SELECT count(*) FROM items WHERE name = ?", (name,))
    return n


@pytest.fixture
def held_lane(db: litegate.Database) -> Iterator[Callable[[], None]]:
    """The write lane held by a transaction on another thread; call the fixture's value to let
    it go once this thread's write has been queued behind it (or at once, if none is)."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with db.transaction():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    try:
        yield release.set
    finally:
        release.set()
        thread.join(10)


# ---- item 10 as filed: executescript and non-str SQL -----------------------------------------
SCRIPTS = [
    pytest.param(123, id="int"),
    pytest.param(b"CREATE TABLE x(a);", id="bytes"),
    pytest.param(None, id="None"),
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_executescript_of_a_non_str_raises_type_error_naming_script(
    db: litegate.Database, script: Any
) -> None:
    with pytest.raises(TypeError, match="script must be a str, not"):
        db.executescript(script)
    with db.transaction() as tx, pytest.raises(TypeError, match="script must be a str"):
        tx.executescript(script)
    db.execute(INSERT, ("after",))
    assert _count(db, "after") == 1


@pytest.mark.parametrize("script", SCRIPTS)
async def test_async_executescript_of_a_non_str_raises_type_error(
    db: litegate.Database, script: Any
) -> None:
    adb = db.as_async()
    with pytest.raises(TypeError, match="script must be a str, not"):
        await adb.executescript(script)
    async with adb.transaction() as tx:
        with pytest.raises(TypeError, match="script must be a str"):
            await tx.executescript(script)
        await tx.execute(INSERT, ("after",))
    assert _count(db, "after") == 1


def _sync_sql_calls(db: litegate.Database, sql: Any) -> list[Callable[[], object]]:
    return [
        lambda: db.execute(sql),
        lambda: db.executemany(sql, [()]),
        lambda: db.query(sql),
        lambda: db.query_one(sql),
        lambda: db.query_value(sql),
        lambda: db.iterate(sql),
    ]


@pytest.mark.parametrize("sql", [pytest.param(b"SELECT 1", id="bytes"), pytest.param(7, id="int")])
def test_non_str_sql_raises_type_error_naming_sql_everywhere(
    db: litegate.Database, sql: Any
) -> None:
    calls = _sync_sql_calls(db, sql)
    with db.snapshot() as snap:
        calls += [lambda: snap.query(sql), lambda: snap.query_one(sql), lambda: snap.iterate(sql)]
        for call in calls:
            with pytest.raises(TypeError, match="sql must be a str, not"):
                call()
    with db.transaction() as tx:
        tx_calls: list[Callable[[], object]] = [
            lambda: tx.execute(sql),
            lambda: tx.executemany(sql, [()]),
            lambda: tx.query(sql),
            lambda: tx.query_value(sql),
            lambda: tx.iterate(sql),
        ]
        for call in tx_calls:
            with pytest.raises(TypeError, match="sql must be a str, not"):
                call()
        tx.execute(INSERT, ("kept",))  # the transaction is unharmed
    assert _count(db, "kept") == 1


async def test_async_non_str_sql_raises_type_error_naming_sql(db: litegate.Database) -> None:
    adb = db.as_async()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: adb.execute(b"SELECT 1"),  # type: ignore[arg-type]
        lambda: adb.executemany(None, []),  # type: ignore[arg-type]
        lambda: adb.query(1),  # type: ignore[arg-type]
        lambda: adb.query_one(None),  # type: ignore[arg-type]
        lambda: adb.query_value(b""),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(TypeError, match="sql must be a str, not"):
            await call()
    with pytest.raises(TypeError, match="sql must be a str"):
        adb.iterate(b"SELECT 1")  # type: ignore[arg-type]  # (at the call, not the first row)
    async with adb.snapshot() as snap:
        with pytest.raises(TypeError, match="sql must be a str"):
            await snap.query(b"SELECT 1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="sql must be a str"):
            snap.iterate(3)  # type: ignore[arg-type]
    async with adb.transaction() as tx:
        with pytest.raises(TypeError, match="sql must be a str"):
            await tx.execute(None)  # type: ignore[arg-type]
        await tx.execute(INSERT, ("kept",))
    assert _count(db, "kept") == 1


# ---- bad timeouts: refused before the write is queued (they used to commit anyway) -----------
def test_write_with_a_nan_timeout_is_refused_and_never_runs(
    db: litegate.Database, held_lane: Callable[[], None]
) -> None:
    # It used to be queued first, then its wait raised ValueError, and it committed later.
    with pytest.raises(ValueError, match="timeout must be None or a number of seconds >= 0"):
        db.execute(INSERT, ("phantom",), timeout=math.nan)
    held_lane()
    db.execute(INSERT, ("behind",))  # queued after it, had it been queued
    assert (_count(db, "phantom"), _count(db, "behind")) == (0, 1)


async def test_async_write_with_a_bad_timeout_is_refused_and_never_runs(
    db: litegate.Database,
) -> None:
    adb = db.as_async()
    for i, bad in enumerate(["5", math.nan, -1.0, True]):
        with pytest.raises(TypeError if isinstance(bad, str | bool) else ValueError):
            await adb.execute(INSERT, (f"phantom{i}",), timeout=bad)  # type: ignore[arg-type]
    await adb.execute(INSERT, ("behind",))
    assert db.query_value("SELECT count(*) FROM items WHERE name LIKE 'phantom%'") == 0
    assert _count(db, "behind") == 1


def test_infinite_timeout_waits_without_bound(
    db: litegate.Database, held_lane: Callable[[], None]
) -> None:
    # math.inf used to raise OverflowError (and its write committed anyway).
    def release_once_queued() -> None:
        deadline = time.monotonic() + 10
        while db.stats().queue_depth == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        held_lane()

    releaser = threading.Thread(target=release_once_queued)
    releaser.start()
    try:
        db.execute(INSERT, ("waited",), timeout=math.inf)
        with db.transaction(timeout=1e300) as tx:
            tx.execute(INSERT, ("tx",))
    finally:
        releaser.join(10)
    assert (_count(db, "waited"), _count(db, "tx")) == (1, 1)
    assert db.query_value("SELECT 1", timeout=math.inf, time_limit=math.inf) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"timeout": "1"}, TypeError, "timeout must be", id="timeout-str"),
        pytest.param({"timeout": False}, TypeError, "timeout must be", id="timeout-bool"),
        pytest.param({"timeout": -0.5}, ValueError, "timeout must be", id="timeout-negative"),
        pytest.param({"time_limit": [1]}, TypeError, "time_limit must be", id="limit-list"),
        pytest.param({"time_limit": math.nan}, ValueError, "time_limit must be", id="limit-nan"),
    ],
)
def test_bad_timeout_or_time_limit_is_refused_by_every_method(
    db: litegate.Database, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    calls: list[Callable[[], object]] = [
        lambda: db.execute(INSERT, ("x",), **kwargs),
        lambda: db.executemany(INSERT, [("x",)], **kwargs),
        lambda: db.executescript("SELECT 1;", **kwargs),
        lambda: db.run_write(lambda conn: None, **kwargs),
        lambda: db.query("SELECT 1", **kwargs),
        lambda: db.query_value("SELECT 1", **kwargs),
        lambda: db.run_read(lambda conn: None, **kwargs),
        lambda: db.transaction(**kwargs),
        lambda: db.snapshot(**kwargs),
    ]
    if "timeout" in kwargs:
        calls += [lambda: db.iterate("SELECT 1", **kwargs), lambda: db.migrate([], **kwargs)]
    else:
        with db.transaction() as tx:
            tx_calls: list[Callable[[], object]] = [
                lambda: tx.execute(INSERT, ("x",), **kwargs),
                lambda: tx.query("SELECT 1", **kwargs),
            ]
            for call in tx_calls:
                with pytest.raises(error, match=match):
                    call()
    for call in calls:
        with pytest.raises(error, match=match):
            call()
    assert _count(db, "x") == 0


# ---- close(timeout) is checked before closing starts ----------------------------------------
def test_close_with_a_bad_timeout_leaves_the_database_open(db: litegate.Database) -> None:
    # close("x") used to mark the database closed, then fail before stopping the writer.
    for bad, error in [("x", TypeError), (-1, ValueError), (math.nan, ValueError)]:
        with pytest.raises(error, match="timeout must be a number of seconds"):
            db.close(bad)  # type: ignore[arg-type]
        assert not db.closed
    db.execute(INSERT, ("still open",))
    assert _count(db, "still open") == 1
    db.close(math.inf)  # (no bound: accepted)
    assert db.closed
    db.close()  # idempotent


async def test_async_close_with_a_bad_timeout_leaves_the_database_open(db_path: str) -> None:
    adb = await litegate.connect_async(db_path)
    try:
        with pytest.raises(TypeError, match="timeout must be a number of seconds"):
            await adb.close("soon")  # type: ignore[arg-type]
        assert not adb.closed
        assert await adb.query_value("SELECT 41 + 1") == 42
    finally:
        await adb.close()
    assert adb.closed


# ---- the other arguments litegate interprets ---------------------------------------------------
def test_non_callable_fn_is_refused_before_it_is_queued(db: litegate.Database) -> None:
    calls: list[Callable[[], object]] = [
        lambda: db.run_write(None),  # type: ignore[arg-type]
        lambda: db.run_read("SELECT 1"),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(TypeError, match="fn must be a callable fn\\(conn, \\*args\\), not"):
            call()
    with db.transaction() as tx, pytest.raises(TypeError, match="fn must be a callable"):
        tx.run(42)  # type: ignore[arg-type]
    assert db.stats().jobs_failed == 0  # refused in the caller: nothing reached the lane


async def test_async_non_callable_fn_is_refused(db: litegate.Database) -> None:
    adb = db.as_async()
    with pytest.raises(TypeError, match="fn must be a callable"):
        await adb.run_write(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn must be a callable"):
        await adb.run_read(1)  # type: ignore[arg-type]
    async with adb.transaction() as tx:
        with pytest.raises(TypeError, match="fn must be a callable"):
            await tx.run("f")  # type: ignore[arg-type]
    assert db.stats().jobs_failed == 0


@pytest.mark.parametrize(
    ("arraysize", "error"),
    [pytest.param(0, ValueError, id="0"), pytest.param("9", TypeError, id="str")],
)
async def test_bad_arraysize_raises_at_the_call(
    db: litegate.Database, arraysize: Any, error: type[Exception]
) -> None:
    # It used to raise only at the first row (sync), or never (arraysize=0 read one row a page).
    adb = db.as_async()
    with pytest.raises(error, match="arraysize must be an int >= 1"):
        db.iterate("SELECT 1", arraysize=arraysize)
    with pytest.raises(error, match="arraysize must be an int >= 1"):
        adb.iterate("SELECT 1", arraysize=arraysize)
    async with adb.snapshot() as snap:
        with pytest.raises(error, match="arraysize must be an int >= 1"):
            snap.iterate("SELECT 1", arraysize=arraysize)


def test_executemany_of_a_non_iterable_names_seq(db: litegate.Database) -> None:
    for bad in (None, 5):
        with pytest.raises(TypeError, match="seq must be an iterable of parameter sets"):
            db.executemany(INSERT, bad)  # type: ignore[arg-type]
        with db.transaction() as tx, pytest.raises(TypeError, match="seq must be an iterable"):
            tx.executemany(INSERT, bad)  # type: ignore[arg-type]
    tx_rows = iter([("a",), ("b",)])
    with db.transaction() as tx:  # an iterator is streamed, not refused
        assert tx.executemany(INSERT, tx_rows).rowcount == 2


@pytest.mark.parametrize(
    ("migrations", "match"),
    [
        pytest.param(None, "migrations must be a sequence", id="None"),
        pytest.param("CREATE TABLE z(a)", "wrap the one script in a list", id="str"),
        pytest.param(["CREATE TABLE z(a)", 3], "migration 2 must be an SQL str", id="bad-step"),
    ],
)
async def test_bad_migrations_raise_type_error_and_apply_nothing(
    db: litegate.Database, migrations: Any, match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        db.migrate(migrations)
    with pytest.raises(TypeError, match=match):
        await db.as_async().migrate(migrations)
    with pytest.raises(TypeError, match="busy_timeout must be a number"):
        db.migrate([], busy_timeout=None)  # type: ignore[arg-type]
    assert db.query_value("PRAGMA user_version") == 0
    assert db.query_value("SELECT count(*) FROM sqlite_schema WHERE name = 'z'") == 0


# ---- values SQLite cannot store: sqlite3's own errors, and only that call fails ---------------
UNSTORABLE = [
    pytest.param((2**63,), OverflowError, id="int-2**63"),
    pytest.param((-(2**63) - 1,), OverflowError, id="int-below-int64"),
    pytest.param(("\ud800",), UnicodeEncodeError, id="lone-surrogate"),
    pytest.param((object(),), sqlite3.ProgrammingError, id="unsupported-type"),
]


@pytest.mark.parametrize(("params", "error"), UNSTORABLE)
async def test_values_sqlite_cannot_store_fail_alone(
    db: litegate.Database, params: tuple[Any, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        db.execute(INSERT, params)
    with pytest.raises(error):
        db.query("SELECT ?", params)
    adb = db.as_async()
    # In one group commit with good writes: only the bad one fails.
    results = await asyncio.gather(
        *[adb.execute(INSERT, (f"good{i}",)) for i in range(5)],
        adb.execute(INSERT, params),
        *[adb.execute(INSERT, (f"good{i}",)) for i in range(5, 10)],
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [litegate.Result] * 5 + [error] + [litegate.Result] * 5
    assert db.query_value("SELECT count(*) FROM items") == 10
    with pytest.raises(error):
        await adb.query("SELECT ?", params)


@pytest.mark.xfail(
    strict=True,
    reason="CPython's sqlite3 replaces a bind error on a cached statement with the connection's "
    "previous error (the real one is its __context__); the engine could clear that state after a "
    "failed statement",
)
def test_a_bind_error_after_a_failed_statement_is_reported_as_itself(
    db: litegate.Database,
) -> None:
    db.query("SELECT ?", (1,))  # cached on the reader
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        db.query("SELECT * FROM no_such_table")
    with pytest.raises(OverflowError):
        db.query("SELECT ?", (2**63,))


def test_connect_options_infinite_bounds_mean_none_and_non_finite_others_are_refused(
    tmp_path: Any,
) -> None:
    """Regression: ``connect(timeout=math.inf)`` was accepted, then ``close()`` raised
    ``OverflowError`` (the wait overflowed); NaN passed every ``>= 0`` check."""
    path = str(tmp_path / "inf.db")
    db = litegate.connect(path, timeout=math.inf, time_limit=math.inf)
    try:
        db.execute("CREATE TABLE t(x)")
        assert db.query_value("SELECT count(*) FROM t") == 0
    finally:
        db.close()
    assert db.closed
    bad: list[tuple[str, float]] = [
        ("timeout", math.nan),
        ("time_limit", math.nan),
        ("busy_timeout", math.inf),
        ("busy_timeout", math.nan),
        ("hold_warn", math.nan),
        ("checkpoint_idle", math.inf),
    ]
    for name, value in bad:
        options: Any = {name: value}
        with pytest.raises(ValueError, match=name):
            litegate.connect(path, **options)
