"""``litegate.aio``'s core: a connection's state, its tasks' sessions, where each statement
runs (the public API is :class:`~._connection.Connection`'s).

Every connection to one file in a process shares one engine (with ``litegate.sqlite3``'s: the
same registry). A statement runs in the calling task's transaction if it has one, else as one
group-committed write on the lane or as a read on the pool -- inline on the loop when an idle
reader answers within the engine's budget, as :class:`litegate.AsyncDatabase` reads.

Transaction state belongs to the calling task (:class:`~._session._Session`, found through a
``ContextVar`` of the connection's): a task's transaction holds the write lane until that
task's ``commit()``/``rollback()``, the connection's ``close()``, or the task's end (rolled back,
with a ``ResourceWarning``). A task started while its parent's transaction is open runs its
statements in it (``asyncio.gather`` inside a transaction, as ORMs do); otherwise it has its
own.

==================  =====================================================================
field               guard
==================  =====================================================================
``_open``           ``_lock``: the sessions with a transaction open (``close`` ends them)
``_changes``,       ``_lock`` (``interrupt`` holds it while it interrupts, so a job that
``_running_on``     ends meanwhile waits and no other caller's statement is reached)
``_closed``         set once by ``close``/``stop`` under ``_lock``; ``_begin`` re-checks it
                    under the lock before it records a transaction (one that got the lane
                    from close's rollbacks is given back); elsewhere read without it: a call
                    that starts after it fails
``_one``            ``_lock`` (``per_task``'s setter; read without it: a whole reference)
``_slice``,         the loop's read turns: written by whichever task reads (a stale value
``_last_yield``     only moves a turn); a connection used from several loops shares them
factories, hooks,   the caller's: set them before sharing the connection (as with
``isolation_level`` aiosqlite); a statement reads them as it starts, a hook again when its
                    job runs
==================  =====================================================================

The methods that find a task's session and open and end its transaction are
:class:`~._session.TaskSessions`'s (``ConnectionCore``'s base): they use these fields under
these guards; a session's own fields are guarded as :mod:`._session` says. What a statement
runs on the engine's connections is in :mod:`._jobs`.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sqlite3
import threading
import warnings
from collections.abc import Callable
from time import perf_counter
from typing import Any, Literal, Self, cast, overload

from .._engine import MISS, AsyncWriteLease, Engine, wait_turn
from .._errors import Error
from .._statements import prepare as prepare_conn
from .._statements import run_described, run_execute, split_script
from ..sqlite3 import _sql
from ..sqlite3._session import translate
from ..sqlite3._shared import (
    Settings,
    Shared,
    attach,
    attach_if_open,
    check_registration,
    check_statement,
    detach,
)
from ._cursor import Outcome
from ._jobs import _by_dropin_rules, _run_job
from ._session import TaskSessions, _end_quietly, _Lease, _Session

__all__ = ("CONNECT_ARGS", "ConnectionCore", "location")


def location(database: Any) -> str:
    """aiosqlite's: a path, bytes, or anything with ``__str__``."""
    if isinstance(database, str):
        return database
    if isinstance(database, bytes):
        return database.decode("utf-8")
    if isinstance(database, os.PathLike):
        return os.fspath(database)  # type: ignore[no-any-return]
    return str(database)


class ConnectionCore(TaskSessions):
    """A ``litegate.aio`` connection's state and routing (see the module docstring)."""

    def __init__(
        self,
        connector: Callable[[], Any] | str | bytes | os.PathLike[str],
        iter_chunk_size: int = 64,
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        if loop is not None:
            warnings.warn(
                "aiosqlite.Connection no longer uses the `loop` parameter",
                DeprecationWarning,
                stacklevel=2,
            )
        self._connector = connector
        self._kwargs = kwargs
        self.iter_chunk_size = iter_chunk_size
        self._lock = threading.Lock()
        # The calling task's session and which of its transactions was open when the value
        # was set: a task started then (it copies its parent's context) joins that one.
        self._var: contextvars.ContextVar[tuple[_Session, int]] = contextvars.ContextVar(
            "litegate.aio"
        )
        self._open: set[_Session] = set()
        self._running_on: list[sqlite3.Connection] = []  # engine connections running its jobs
        self._changes = 0
        self._shared: Shared | None = None
        self._engine: Engine | None = None
        self._closed = False  # close() has begun
        self._done = False  # close() has ended
        self._running = True
        self._started = False
        self._isolation_level = _sql.check_level(kwargs.get("isolation_level", ""))
        self._autocommit = _sql.check_mode(
            kwargs.get("autocommit", _sql.LEGACY_TRANSACTION_CONTROL)
        )
        self._timeout = 5.0
        self.row_factory: Callable[[sqlite3.Cursor, tuple[Any, ...]], Any] | None = None
        self._text_factory: Any = str
        self._custom = False  # any hook or text factory of its own (see _recustom)
        self._one: _Session | None = None  # the one session, when per_task is off
        self._trace: Callable[[str], object] | None = None
        self._progress: tuple[Callable[[], object], int] | None = None
        self._authorizer: Callable[..., int] | None = None
        self._slice = 0.0
        self._last_yield = 0.0

    # ---- opening and closing --------------------------------------------------------------

    async def _connect(self) -> Self:
        if self._started:
            raise RuntimeError("threads can only be started once")
        self._started = True
        shared = self._attach(only_open=True)  # (on the loop: no thread when the engine is open)
        if shared is not None:
            self._shared, self._engine = shared, shared.engine
            return self
        attaching = asyncio.ensure_future(asyncio.to_thread(self._attach))
        try:
            self._shared = await asyncio.shield(attaching)
        except BaseException:
            self._running = False
            if not attaching.done():  # (cancelled: the thread attaches still; let go then)
                attaching.add_done_callback(self._let_go)
            else:
                attaching.result()  # (the thread's own error, as it was raised there)
            raise
        self._engine = self._shared.engine
        return self

    def _let_go(self, attaching: asyncio.Future[Shared]) -> None:
        if not attaching.cancelled() and attaching.exception() is None:
            detach(attaching.result(), self._timeout, wait=False)

    @overload
    def _attach(self, only_open: Literal[True]) -> Shared | None: ...
    @overload
    def _attach(self, only_open: Literal[False] = False) -> Shared: ...

    def _attach(self, only_open: bool = False) -> Shared | None:
        """The engine for the connection's file; ``only_open``: only if it is open already
        (then it never blocks; ``None`` otherwise)."""
        connector = self._connector
        if callable(connector) and not isinstance(connector, os.PathLike):
            if only_open:
                return None
            made = connector()  # (aiosqlite's own constructor: a function that connects)
            if isinstance(made, sqlite3.Connection):
                made.close()
            raise sqlite3.NotSupportedError(
                "litegate.aio opens its own connections to the shared engine: use "
                "litegate.aio.connect(path, ...) rather than Connection(connector, ...)"
            )
        kw = self._kwargs
        path, self._timeout = _sql.check_open(
            location(connector), kw.get("timeout", 5.0), kw.get("detect_types", 0)
        )
        unknown = set(kw) - CONNECT_ARGS
        if unknown:
            raise TypeError(f"connect() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        try:
            if only_open:
                return attach_if_open(  # (not even realpath on the loop: see there)
                    path,
                    uri=bool(kw.get("uri", False)),
                    detect_types=kw.get("detect_types", 0),
                    options=kw.get("litegate"),
                    resolve=False,
                )
            return attach(
                path,
                uri=bool(kw.get("uri", False)),
                detect_types=kw.get("detect_types", 0),
                timeout=self._timeout,
                options=kw.get("litegate"),
            )
        except Error as exc:
            raise translate(exc) from exc
        except ValueError as exc:
            raise sqlite3.ProgrammingError(str(exc)) from exc

    @property
    def closed(self) -> bool:
        """Never opened, or closed (``close()`` ended, or ``stop()`` was called)."""
        return self._done or self._engine is None

    @property
    def engine(self) -> Engine:
        """The shared engine (litegate's extension; ``ValueError`` once closed)."""
        return self._live()

    def _live(self) -> Engine:
        engine = self._engine
        if engine is None or self._closed:
            raise ValueError("no active connection")
        return engine

    @property
    def closing(self) -> bool:
        """``close()`` has begun (a cursor's calls meanwhile raise ``ProgrammingError``, as
        aiosqlite's do on the closed ``sqlite3`` connection; once it has ended, ``ValueError``)."""
        return self._closed

    @property
    def unusable(self) -> bool:
        """``closing`` or ``closed`` in one test (a cursor's, before each call)."""
        return self._closed or self._engine is None

    def _take_down(self) -> Shared | None:
        self._running = False
        with self._lock:
            if self._closed or self._shared is None:
                self._closed = True
                return None
            self._closed = True
            sessions, self._open = list(self._open), set()
        for s in sessions:
            _end_quietly(s)
        shared, self._shared = self._shared, None
        return shared

    # ---- statements ---------------------------------------------------------------------------

    def _recustom(self) -> None:
        """After a hook or the text factory changed: has the connection any of its own?
        (Then its statements run through :func:`_run_job`, which applies them.)"""
        self._custom = (
            self._trace is not None
            or self._progress is not None
            or self._authorizer is not None
            or self._text_factory is not str
        )

    @property
    def text_factory(self) -> Any:
        return self._text_factory

    @text_factory.setter
    def text_factory(self, value: Any) -> None:
        self._text_factory = value
        self._recustom()

    async def run_statement(
        self,
        sql: str,
        params: Any,
        row_factory: Any = None,
        *,
        many: bool = False,
        implicit: bool = True,
    ) -> Outcome:
        """Run one statement (routed as the module docstring says) for a cursor whose
        ``row_factory`` is given (``None``: the connection's); its :class:`Outcome`."""
        if not isinstance(sql, str):
            raise TypeError(f"execute() argument 1 must be str, not {type(sql).__name__}")
        engine, shared = self._engine, self._shared
        if engine is None or shared is None or self._closed:
            raise ValueError("no active connection")
        kind = _classify(sql)
        out: Outcome
        rf = row_factory if row_factory is not None else self.row_factory
        hooks = shared.hooks
        prepare = hooks.sync if hooks.version else None
        if kind == _READ and not many and not self._custom and self._autocommit is not False:
            # The hot path: a read outside the task's transaction, inline when a reader is
            # idle. Its session is not needed to tell: the one in the context var -- the
            # task's own, or one it inherited from the task that started it -- has no
            # transaction open, or there is none, or the one open is not this task's (its
            # starter began it after starting this task: _session would give it its own).
            s: _Session | None = self._one
            if s is None and (ticket := self._var.get(None)) is not None:
                s = ticket[0]
                if s.lease is not None and s.txn != ticket[1] and s.task is not _current_task():
                    s = None
            if s is None or s.lease is None:
                if perf_counter() - self._last_yield > self._slice:
                    self._slice = await wait_turn()  # (a burst of tasks reads in turns)
                    self._last_yield = perf_counter()
                try:
                    out = engine.query_inline(sql, params, run_described, (rf, prepare))
                    if out is MISS:
                        read = (sql, params, rf, prepare)
                        out = await engine.read_async(run_described, read, self._timeout, None, sql)
                except Error as exc:
                    raise translate(exc) from exc
                rowid = None
                if s is not None and s.lastrowid is not None:  # (its task's last inserted row,
                    # as its own connection would tell; an inherited session's is its parent's)
                    if s is self._one or s.task is _current_task():
                        rowid = s.lastrowid
                out.lastrowid = rowid
                return out
        s = self._session()
        try:
            if kind >= _sql.BEGIN:
                await self._control(s, kind, sql)
                return Outcome([], None, -1, None)
            lease = s.lease
            if lease is None:
                if self._autocommit is False:
                    lease = await self._begin(s)
                elif (
                    implicit
                    and kind in (_sql.DML, _sql.INSERT)
                    and self._isolation_level is not None
                    and self._autocommit == _sql.LEGACY_TRANSACTION_CONTROL
                ):
                    if self._trace is not None:
                        self._traced("BEGIN " + self._isolation_level)
                    lease = await self._begin(s)
            if kind == _sql.SET_PRAGMA or (
                lease is None and (kind == _sql.NO_TRANSACTION or kind == _sql.WRITER_READ)
            ):
                out = await _by_dropin_rules(
                    engine, s, kind, sql, params, many, self._timeout, self
                )
            elif lease is not None:
                if s.reading and kind != _sql.READ and kind != _sql.WRITER_READ:
                    raise sqlite3.OperationalError("attempt to write a readonly database")
                if kind == _sql.NO_TRANSACTION:
                    raise sqlite3.OperationalError(
                        f"cannot run {sql.split()[0].upper()} from within a transaction"
                    )
                try:
                    out = await self._in_transaction(s, lease, kind, sql, params, many, rf, prepare)
                except BaseException:
                    if s.lease is lease and not s.reading and _writing(lease).lost:
                        await self._end(s, commit=False)  # (SQLite ended it: give the lane back)
                    raise
            elif kind == _sql.READ:
                job = (sql, params, many, rf, prepare, self._settings(), self)
                out = await engine.read_async(_run_job, job, self._timeout, None, sql)
            else:
                out = await self._write(engine, kind, sql, params, many, rf, prepare)
        except Error as exc:
            raise translate(exc) from exc
        if kind in (_sql.DML, _sql.INSERT, _sql.WRITE) and out.rowcount > 0:
            with self._lock:
                self._changes += out.rowcount
        if many:
            out.lastrowid = None
        else:  # (the task's own last inserted row, as a connection of its own would tell)
            if out.lastrowid is not None and (
                (kind == _sql.INSERT and out.rowcount > 0)
                or (kind == _sql.WRITE and _sql.inserts(sql))  # (WITH … INSERT: rowcount -1)
            ):
                s.lastrowid = out.lastrowid
            out.lastrowid = s.lastrowid
        return out

    async def _write(
        self, engine: Engine, kind: int, sql: str, params: Any, many: bool, rf: Any, prepare: Any
    ) -> Any:
        """A write outside the task's transaction: one group-committed lane job."""
        if (
            not many
            and prepare is None
            and not self._custom
            and kind != _sql.WRITE  # (DDL, and what classify could not tell: it may return rows)
            and not _returns(sql)
        ):
            res = await engine.write_async(run_execute, (sql, params), self._timeout, None, sql)
            return Outcome(res.rows, None, res.rowcount, res.lastrowid)
        job = (sql, params, many, rf, prepare, self._settings(), self)
        return await engine.write_async(_run_job, job, self._timeout, None, sql)

    async def _in_transaction(
        self,
        s: _Session,
        lease: _Lease,
        kind: int,
        sql: str,
        params: Any,
        many: bool,
        rf: Any,
        prepare: Any,
    ) -> Any:
        custom = self._custom
        if kind == _sql.READ and not many and not custom:
            return await lease.run(run_described, (sql, params, rf, prepare), sql, None)
        if (
            not s.reading
            and not custom
            and not _returns(sql)
            and (kind == _sql.DML or kind == _sql.INSERT)
        ):  # (a write the engine may run on the loop: its execute's fast path)
            writing: AsyncWriteLease = lease  # type: ignore[assignment]  # (not reading)
            if prepare is not None and s.synced != self._shared_hooks_version():
                await lease.run(prepare_conn, (prepare,), None, None)  # (quick: on the loop)
                s.synced = self._shared_hooks_version()
            if not many:
                res = await writing.execute(sql, params, None)
                return Outcome(res.rows, None, res.rowcount, res.lastrowid)
            seq = params if isinstance(params, list | tuple) else None
            if seq is not None and len(seq) <= _INLINE_MANY:  # (an ORM flush's few rows)
                changed = 0
                for one in seq:
                    changed += max((await writing.execute(sql, one, None)).rowcount, 0)
                return Outcome([], None, changed, None)
        job = (sql, params, many, rf, prepare, self._settings(), self)
        return await lease.run(_run_job, job, sql, None)

    def _shared_hooks_version(self) -> int:
        shared = self._shared
        return shared.hooks.version if shared is not None else 0

    async def _control(self, s: _Session, kind: int, sql: str) -> None:
        check_statement(sql)
        lease = s.lease
        if kind == _sql.BEGIN:
            if lease is not None:
                raise sqlite3.OperationalError("cannot start a transaction within a transaction")
            self._traced(sql)
            await self._begin(s)
            return
        if kind == _sql.COMMIT or kind == _sql.ROLLBACK:
            if lease is None:
                verb = "commit" if kind == _sql.COMMIT else "rollback"
                raise sqlite3.OperationalError(f"cannot {verb} - no transaction is active")
            await self._end(s, commit=kind == _sql.COMMIT)
            return
        name = _sql.savepoint_name(sql)
        if lease is None:
            if kind != _sql.SAVEPOINT:
                raise sqlite3.OperationalError(f"no such savepoint: {name}")
            lease = await self._begin(s)
            if self._autocommit is not False:  # (a SAVEPOINT outside BEGIN is a transaction)
                s.savepoints = []
        job = (sql, (), False, None, None, None, self)
        try:
            await lease.run(_run_job, job, sql, None)
        except BaseException:
            if s.savepoints == [] and kind == _sql.SAVEPOINT:
                await self._end(s, commit=False)  # (it began nothing: give the lane back)
            raise
        marks = s.savepoints
        if marks is not None:  # (as SQLite: RELEASE of the outermost commits)
            if kind == _sql.SAVEPOINT:
                marks.append(name)
            elif name in marks:
                i = len(marks) - 1 - marks[::-1].index(name)
                del marks[i if kind == _sql.RELEASE else i + 1 :]
                if not marks and kind == _sql.RELEASE:
                    await self._end(s, commit=True)

    def _settings(self) -> Settings | None:
        if not self._custom:
            return None
        return (self._trace, self._progress, self._authorizer, self._text_factory)

    def _traced(self, text: str) -> None:
        trace = self._trace
        if trace is not None:
            try:
                trace(text)
            except Exception:
                pass

    async def run_script(self, script: str) -> None:
        if not isinstance(script, str):
            raise TypeError(f"executescript() argument must be str, not {type(script).__name__}")
        s = self._session()
        if self._autocommit == _sql.LEGACY_TRANSACTION_CONTROL and s.lease is not None:
            await self._end(s, commit=True)
        for statement in split_script(script):
            await self.run_statement(statement, (), implicit=False)

    # ---- aiosqlite's API ------------------------------------------------------------------------

    async def interrupt(self) -> None:
        """Interrupt the statements of this connection running off the loop (a statement
        running inline on the loop has ended before another task can call this)."""
        self._live()
        with self._lock:  # (held: a job that ends meanwhile waits, so no other is reached)
            for conn in self._running_on:
                conn.interrupt()

    def _started_on(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            self._running_on.append(conn)

    def _ended_on(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            self._running_on.remove(conn)

    async def create_function(
        self, name: str, num_params: int, func: Callable[..., Any], deterministic: bool = False
    ) -> None:
        """Register a function on every connection of the shared engine."""
        self._register("create_function", name, num_params, func, deterministic=deterministic)

    def _register(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._live()
        check_registration(method, args, kwargs)
        assert self._shared is not None
        self._shared.hooks.add(method, args, kwargs)


_INLINE_MANY = 16
"""``executemany`` inside a transaction with at most this many parameter sets runs as that
many statements through the lease's ``execute`` (on the loop when quick) rather than as one
job on the writer thread: SQLAlchemy's ORM flushes a few rows' UPDATEs that way, and a hop to
the writer thread cost ~250 us of the loop's CPU per flush."""
_classify = _sql.classify
_READ = _sql.READ
_current_task = asyncio.current_task

CONNECT_ARGS = frozenset(
    (
        "timeout",
        "detect_types",
        "isolation_level",
        "check_same_thread",
        "factory",
        "cached_statements",
        "uri",
        "autocommit",
        "litegate",
    )
)


def _writing(lease: _Lease) -> AsyncWriteLease:
    """A session's lease when it is not ``reading``: the write lane's."""
    return cast(AsyncWriteLease, lease)


_RETURNS: dict[str, bool] = {}  # sql -> answer: a pure function's memo, as _sql's (a lost or
# doubled entry is harmless: every writer stores the same value; cleared whole when large)


def _returns(sql: str) -> bool:
    """Whether ``sql`` may return rows although it writes (``RETURNING``)."""
    found = _RETURNS.get(sql)
    if found is None:
        if len(_RETURNS) >= 1024:
            _RETURNS.clear()
        found = _RETURNS[sql] = "returning" in sql.lower()
    return found
