"""Hostile input through every public method, drawn by hypothesis (issue 10).

Each example calls one method of ``Database`` / ``AsyncDatabase`` -- or opens a transaction, a
savepoint or a snapshot and calls a few of theirs -- with arguments drawn from a wide strategy:
``None``, ints up to and past 64 bits, NaN and infinities, bytes, text with lone surrogates and
NULs, containers of those, objects whose every protocol method raises, parameter counts and
styles that do not match the SQL, broken SQL, non-callables where a function is expected.

Invariants, checked after every call:

* it returned, or raised an exception of the documented set: ``litegate.Error``, a
  ``sqlite3.Error``, ``TypeError``/``ValueError`` (``UnicodeEncodeError`` included),
  ``OverflowError``, or the exception the test's own objects raise (user code's errors pass
  through). Never ``AttributeError``, ``KeyError``, ``AssertionError``..., and never a hang.
* an argument litegate interprets itself (SQL text, ``timeout``, ``time_limit``, ``arraysize``,
  ``fn``, ``seq``, migrations) that is invalid is refused with ``TypeError``/``ValueError``
  naming it, before anything reaches the lane; a valid one is never refused so.
* a call that raised wrote nothing; a read never writes; a transaction that did not commit
  wrote nothing.
* the engine still serves a known query and a write (the row is read back).

After the run, the database is closed (twice) and every call must raise ``Closed`` or a
validation error.

Quick form: 300 examples per mode (100 on a closed database); ``LITEGATE_STRESS=long``
(``make soak``): 3000 (1000).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import litegate

pytestmark = [
    pytest.mark.stress,
    # Python 3.12+: named placeholders given a sequence warn (an error from 3.14, which the
    # documented set covers): a warning, not an exception, outside pytest's warnings-as-errors.
    pytest.mark.filterwarnings("ignore:Binding .* is a named parameter:DeprecationWarning"),
]

LONG = os.environ.get("LITEGATE_STRESS", "").strip().lower() == "long"
EXAMPLES = 3000 if LONG else 300
HANG = 30.0  # seconds an async call may take before the test calls it a hang

SCHEMA = """
CREATE TABLE known(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE junk(v);
CREATE TABLE uniq(k UNIQUE);
INSERT INTO uniq(k) VALUES (1);
"""


class Hostile(Exception):
    """Raised by the test's own hostile objects: user code's errors pass through unchanged."""


class Weird:
    """A value whose every protocol method raises (a sequence to sqlite3: it has __len__)."""

    def __len__(self) -> int:
        raise Hostile("__len__")

    def __getitem__(self, i: object) -> object:
        raise Hostile("__getitem__")

    def __iter__(self) -> Iterator[object]:
        raise Hostile("__iter__")

    def __str__(self) -> str:
        raise Hostile("__str__")

    def __index__(self) -> int:
        raise Hostile("__index__")

    def __float__(self) -> float:
        raise Hostile("__float__")

    def __bool__(self) -> bool:
        raise Hostile("__bool__")

    def __conform__(self, protocol: object) -> object:
        raise Hostile("__conform__")

    def __call__(self, *args: object) -> object:
        raise Hostile("__call__")

    def __repr__(self) -> str:
        return "Weird()"


class Text(str):
    """A str subclass: valid SQL text for sqlite3 and for litegate."""

    def __str__(self) -> str:
        raise Hostile("Text.__str__")


def _raising_iter() -> Iterator[tuple[int]]:
    yield (1,)
    raise Hostile("in the middle of executemany's parameter sets")


# ---- values ---------------------------------------------------------------------------------
ODD_TEXT = st.text(
    st.one_of(st.characters(), st.characters(categories=["Cs"]), st.just("\x00")), max_size=12
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**100]),
    st.floats(),  # NaN and the infinities included
    st.binary(max_size=12),
    ODD_TEXT,
    st.builds(Weird),
    st.builds(object),
    st.just(litegate.DEFAULT),
)
SCALARS_OF = [None, 1, 2.5, b"x", Weird(), object()]  # (non-steps, for migrations)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.sampled_from(["a", "b", "zz", ""]), inner, max_size=3),
    ),
    max_leaves=6,
)

SQL_TEXT = [
    "SELECT 1",
    "SELECT ?",
    "SELECT ?, ?",
    "SELECT :a",
    "SELECT :a, :b",
    "SELECT count(*) FROM junk",
    "SELECT * FROM known WHERE id = ?",
    "INSERT INTO junk(v) VALUES (?)",
    "INSERT INTO junk(v) VALUES (:a)",
    "INSERT INTO junk(v) VALUES (?) RETURNING v",
    "UPDATE junk SET v = ? WHERE rowid = 1",
    "INSERT INTO uniq(k) VALUES (?)",
    "INSERT OR ROLLBACK INTO uniq(k) VALUES (?)",
    "DELETE FROM junk WHERE v = ?",
    "SELECT * FROM no_such_table",
    "SELEC 1",
    "SELECT 1; SELECT 2",
    "",
    "  ;  ",
    "-- only a comment",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT s",
    "RELEASE s",
    "PRAGMA user_version",
    "SELECT '\ud800'",
    "SELECT 1\x00",
]


def mostly(
    valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """``valid`` three times in four: a call with one hostile argument among valid ones goes
    deeper than one refused at its first argument (and shrinks towards valid)."""
    return st.integers(0, 3).flatmap(lambda i: hostile if i == 3 else valid)


SQL = mostly(
    st.one_of(st.sampled_from(SQL_TEXT), st.sampled_from(SQL_TEXT).map(Text)),
    st.one_of(ODD_TEXT, SCALARS),  # odd text, or not text at all
)
SCRIPTS = mostly(
    st.lists(st.sampled_from(SQL_TEXT), max_size=3).map(";\n".join), st.one_of(ODD_TEXT, SCALARS)
)
PARAMS = st.one_of(
    st.just(()),
    st.tuples(st.integers(0, 2)),
    st.tuples(VALUES),
    st.lists(VALUES, max_size=3).map(tuple),
    st.lists(VALUES, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), VALUES, max_size=3),
    VALUES,
)
PARAM_SETS = mostly(
    st.one_of(
        st.lists(PARAMS, max_size=3),
        st.lists(PARAMS, max_size=3).map(tuple),
        st.lists(PARAMS, max_size=3).map(iter),
    ),
    st.one_of(st.builds(_raising_iter), SCALARS),
)
SECONDS = mostly(
    st.one_of(st.just(litegate.DEFAULT), st.none(), st.floats(0, 30), st.integers(0, 30)),
    st.one_of(
        st.floats(),  # NaN, the infinities, negatives, tiny ones
        st.integers(min_value=-(2**70), max_value=2**70),
        st.booleans(),
        st.sampled_from(["1", b"1", [1]]),
    ),
)
ARRAYSIZES = mostly(st.integers(1, 3), st.one_of(st.integers(-3, 0), st.integers(), SCALARS))


def _noop(conn: Any, *args: Any) -> int:
    return len(args)


def _write_then_fail(conn: Any, *args: Any) -> None:
    conn.execute("INSERT INTO junk(v) VALUES ('from a failing fn')")
    raise Hostile("after writing")


def _returns_cursor(conn: Any, *args: Any) -> Any:
    return conn.execute("SELECT 1")  # a live cursor handed back across threads


def _no_args() -> None:
    pass  # called as fn(conn): TypeError from the call itself


FUNCTIONS = mostly(
    st.sampled_from([_noop, _write_then_fail, _returns_cursor, _no_args, Weird()]), SCALARS
)
MIGRATIONS = mostly(
    st.lists(
        mostly(st.sampled_from(SQL_TEXT), st.sampled_from([_noop, _write_then_fail, *SCALARS_OF])),
        max_size=3,
    ),
    SCALARS,
)


# ---- calls ----------------------------------------------------------------------------------
@dataclass
class Call:
    """One method call: ``getattr(target, name)(*args, **kwargs)``; ``body`` holds the calls
    made inside a ``transaction``/``snapshot``/``savepoint`` block, ``rollback`` whether the
    block is left by an exception."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    body: list[Call] = field(default_factory=list)
    rollback: bool = False

    def invalid(self) -> bool:
        """Whether litegate must refuse the call's own arguments (TypeError/ValueError)."""
        return any(not ok for ok in self._checks())

    def _checks(self) -> Iterator[bool]:
        n, a, kw = self.name, self.args, self.kwargs
        if n in ("execute", "executemany", "query", "query_one", "query_value", "iterate"):
            yield isinstance(a[0], str)
        if n == "executescript":
            yield isinstance(a[0], str)
        if n == "executemany":
            yield _iterable(a[1])
        if n in ("run_write", "run_read", "run"):
            yield callable(a[0])
        if n == "migrate":
            yield isinstance(a[0], list) and all(isinstance(s, str) or callable(s) for s in a[0])
            yield _seconds_ok(kw.get("busy_timeout", 1.0), allow_none=False)
        if "arraysize" in kw:
            yield _arraysize_ok(kw["arraysize"])
        for key in ("timeout", "time_limit"):
            if key in kw:
                yield kw[key] is litegate.DEFAULT or _seconds_ok(kw[key], allow_none=True)


def _iterable(value: object) -> bool:
    try:
        iter(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    except Hostile:
        return True  # (iterable, in a hostile way: the error is the object's own)
    return True


def _seconds_ok(value: object, *, allow_none: bool) -> bool:
    if value is None:
        return allow_none
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not (isinstance(value, float) and math.isnan(value)) and value >= 0


def _arraysize_ok(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _kwargs(**options: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=options)


TIMEOUTS = _kwargs(timeout=SECONDS, time_limit=SECONDS)
READS = st.one_of(
    st.builds(Call, st.sampled_from(["query", "query_one", "query_value"]), st.tuples(SQL, PARAMS)),
    st.builds(Call, st.just("iterate"), st.tuples(SQL, PARAMS), _kwargs(arraysize=ARRAYSIZES)),
)
TX_CALLS = st.one_of(
    READS,
    st.builds(Call, st.just("execute"), st.tuples(SQL, PARAMS), _kwargs(time_limit=SECONDS)),
    st.builds(Call, st.just("executemany"), st.tuples(SQL, PARAM_SETS)),
    st.builds(Call, st.just("executescript"), st.tuples(SCRIPTS)),
    st.builds(Call, st.just("run"), st.tuples(FUNCTIONS, VALUES)),
)
TX_BODY = st.one_of(
    TX_CALLS,
    st.builds(
        Call, st.just("savepoint"), body=st.lists(TX_CALLS, max_size=2), rollback=st.booleans()
    ),
)
CALLS = st.one_of(
    st.builds(Call, st.just("execute"), st.tuples(SQL, PARAMS), TIMEOUTS),
    st.builds(Call, st.just("executemany"), st.tuples(SQL, PARAM_SETS), TIMEOUTS),
    st.builds(Call, st.just("executescript"), st.tuples(SCRIPTS), TIMEOUTS),
    st.builds(
        Call,
        st.sampled_from(["query", "query_one", "query_value"]),
        st.tuples(SQL, PARAMS),
        TIMEOUTS,
    ),
    st.builds(
        Call,
        st.just("iterate"),
        st.tuples(SQL, PARAMS),
        _kwargs(timeout=SECONDS, arraysize=ARRAYSIZES),
    ),
    st.builds(
        Call, st.sampled_from(["run_write", "run_read"]), st.tuples(FUNCTIONS, VALUES), TIMEOUTS
    ),
    st.builds(
        Call,
        st.just("migrate"),
        st.tuples(MIGRATIONS),
        _kwargs(timeout=SECONDS, busy_timeout=SECONDS),
    ),
    st.builds(Call, st.just("stats")),
    st.builds(
        Call,
        st.just("close"),
        st.tuples(SECONDS.filter(lambda t: not _seconds_ok(t, allow_none=True))),
    ),
    st.builds(
        Call,
        st.just("transaction"),
        kwargs=TIMEOUTS,
        body=st.lists(TX_BODY, max_size=3),
        rollback=st.booleans(),
    ),
    st.builds(Call, st.just("snapshot"), kwargs=TIMEOUTS, body=st.lists(READS, max_size=3)),
)
READ_NAMES = {"query", "query_one", "query_value", "iterate", "run_read", "stats", "snapshot"}

# What a call may raise (see the module docstring).
DOCUMENTED = (litegate.Error, sqlite3.Error, TypeError, ValueError, OverflowError, Hostile)
VALIDATION = re.compile(
    r"\b(sql|script|timeout|time_limit|arraysize|fn|seq|migrations|migration \d+|busy_timeout)"
    r" must be\b"
)


class Leave(Exception):
    """Leaves a transaction/savepoint block on purpose (a rollback)."""


def _check_outcome(call: Call, error: BaseException | None) -> None:
    """The call's own exception (or None) against the documented set and the validation rule."""
    if error is not None and not isinstance(error, DOCUMENTED):
        raise AssertionError(f"{call!r} raised an undocumented {type(error).__name__}") from error
    refused = isinstance(error, TypeError | ValueError) and bool(VALIDATION.search(str(error)))
    if call.name == "close":
        assert refused, f"close({call.args[0]!r}) was not refused: {error!r}"
    elif call.invalid():
        assert refused, f"{call!r}: invalid arguments not refused up front; got {error!r}"
    elif refused:
        raise AssertionError(f"{call!r}: valid arguments refused") from error


# ---- running calls, sync and async ----------------------------------------------------------
def _run_sync(target: Any, call: Call) -> BaseException | None:
    """Run one call on ``target``; returns what it raised (None: it returned)."""
    try:
        if call.name in ("transaction", "snapshot", "savepoint"):
            block = getattr(target, call.name)(**call.kwargs)
            with block as inner:
                for sub in call.body:
                    _check_outcome(
                        sub, _run_sync(inner if call.name != "savepoint" else target, sub)
                    )
                if call.rollback:
                    raise Leave
        else:
            result = getattr(target, call.name)(*call.args, **call.kwargs)
            if call.name == "iterate":
                list(result)
    except Leave:
        return None
    except AssertionError:
        raise
    except BaseException as exc:  # (judged by the caller)
        return exc
    return None


async def _run_async(target: Any, call: Call) -> BaseException | None:
    """:func:`_run_sync` for the async facade (``target`` is an AsyncDatabase or block)."""
    try:
        if call.name in ("transaction", "snapshot", "savepoint"):
            block = getattr(target, call.name)(**call.kwargs)
            async with block as inner:
                for sub in call.body:
                    got = await _run_async(inner if call.name != "savepoint" else target, sub)
                    _check_outcome(sub, got)
                if call.rollback:
                    raise Leave
        else:
            result = getattr(target, call.name)(*call.args, **call.kwargs)
            if call.name == "iterate":
                [row async for row in result]
            else:
                await asyncio.wait_for(result, HANG)
    except Leave:
        return None
    except AssertionError:
        raise
    except BaseException as exc:
        if isinstance(exc, TimeoutError) and not isinstance(exc, litegate.Timeout):
            raise AssertionError(f"{call!r} did not finish within {HANG}s") from exc
        return exc
    return None


@dataclass
class Engine:
    """The database under test and how to call it (sync, or async through one event loop)."""

    db: litegate.Database
    runner: asyncio.Runner | None = None
    marks: int = 0

    def call(self, call: Call) -> BaseException | None:
        if self.runner is None:
            return _run_sync(self.db, call)
        return self.runner.run(_run_async(self.db.as_async(), call))

    def content(self) -> list[tuple[Any, ...]]:
        """Every row the drawn SQL can change."""
        rows = self.db.query(
            "SELECT 'junk', rowid, quote(v) FROM junk UNION ALL SELECT 'uniq', rowid, k FROM uniq"
        )
        return [tuple(row) for row in rows]

    def healthy(self) -> None:
        """The engine serves a known query and a write, and the row is there."""
        self.marks += 1
        mark = f"mark-{self.marks}"
        if self.runner is None:
            res = self.db.execute("INSERT INTO known(v) VALUES (?)", (mark,))
        else:
            res = self.runner.run(
                self.db.as_async().execute("INSERT INTO known(v) VALUES (?)", (mark,))
            )
        assert self.db.query_value("SELECT v FROM known WHERE id = ?", (res.lastrowid,)) == mark
        assert self.db.query_value("SELECT count(*) FROM known") == self.marks
        assert self.db.query_value("SELECT count(*) FROM uniq WHERE k = 1") == 1


def _rolled_back(call: Call, error: BaseException | None) -> bool:
    """Whether the call must have left no trace (a refused call, a read, an abandoned block)."""
    if call.name in READ_NAMES or call.name == "close":
        return True
    if call.name == "transaction":
        return error is not None or call.rollback
    return error is not None


def _exercise(engine: Engine, call: Call) -> None:
    before = engine.content()
    jobs = engine.db.stats()
    error = engine.call(call)
    event(f"{call.name}: {'ok' if error is None else type(error).__name__}")
    _check_outcome(call, error)
    if call.invalid() or call.name == "close":  # refused in the caller: nothing reached the lane
        after = engine.db.stats()
        assert (after.jobs_ok, after.jobs_failed) == (jobs.jobs_ok, jobs.jobs_failed), call
    if _rolled_back(call, error):
        assert engine.content() == before, f"{call!r} ({error!r}) changed the database"
    engine.healthy()


@contextlib.contextmanager
def _engine(tmp_path: Path, readers: int, use_async: bool) -> Iterator[Engine]:
    db = litegate.connect(str(tmp_path / "bad.db"), readers=readers, synchronous="OFF")
    try:
        db.executescript(SCHEMA)
        if not use_async:
            yield Engine(db)
            return
        with asyncio.Runner() as runner:
            yield Engine(db, runner)
    finally:
        db.close()


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODES = [
    pytest.param(2, False, id="sync-readers=2"),
    pytest.param(0, False, id="sync-readers=0"),
    pytest.param(2, True, id="async-readers=2"),
    pytest.param(0, True, id="async-readers=0"),
]


@pytest.mark.parametrize(("readers", "use_async"), MODES)
def test_every_call_succeeds_or_raises_a_documented_error(
    tmp_path: Path, readers: int, use_async: bool
) -> None:
    with _engine(tmp_path, readers, use_async) as engine:

        @SETTINGS
        @given(call=CALLS)
        def one_call(call: Call) -> None:
            _exercise(engine, call)

        one_call()


@pytest.mark.parametrize(("readers", "use_async"), MODES)
def test_every_call_on_a_closed_database_raises_closed_or_a_validation_error(
    tmp_path: Path, readers: int, use_async: bool
) -> None:
    with _engine(tmp_path, readers, use_async) as engine:
        if engine.runner is None:
            engine.db.close()
        else:
            engine.runner.run(engine.db.as_async().close())
        engine.db.close()  # twice: idempotent

        @settings(SETTINGS, max_examples=EXAMPLES // 3)
        @given(call=CALLS.filter(lambda c: c.name not in ("stats", "close")))
        def one_call(call: Call) -> None:
            error = engine.call(call)
            if isinstance(error, TypeError | ValueError) and VALIDATION.search(str(error)):
                assert call.invalid(), f"{call!r}: valid arguments refused"
            else:
                # (executemany draws its parameter sets in the caller first: user code's error)
                assert isinstance(error, litegate.Closed | Hostile), f"{call!r} raised {error!r}"

        one_call()
        assert engine.db.stats().jobs_ok >= 1  # stats still answer after close


# ---- a read never writes ---------------------------------------------------------------------
WRITING_READS: list[Callable[[litegate.Database], object]] = [
    lambda db: db.query("INSERT INTO junk(v) VALUES ('from a read')"),
    lambda db: db.query_one("INSERT INTO junk(v) VALUES ('from a read') RETURNING v"),
    lambda db: db.run_read(lambda conn: conn.execute("INSERT INTO junk(v) VALUES (1)")),
    lambda db: db.run_read(_write_then_fail),  # a read that failed, and yet wrote
]


@pytest.mark.parametrize("readers", [2, "per-thread", 0])
@pytest.mark.parametrize("read", range(len(WRITING_READS)))
def test_a_read_method_never_writes(tmp_path: Path, readers: Any, read: int) -> None:
    with litegate.connect(str(tmp_path / "r.db"), readers=readers) as db:
        db.executescript(SCHEMA)
        with contextlib.suppress(sqlite3.Error, litegate.Error, Hostile):
            WRITING_READS[read](db)
        assert db.query_value("SELECT count(*) FROM junk") == 0
