"""The drop-in's connection: one object shared by every thread, each with a transaction of its
own, on the engine of its file.

=====================  ==============================================================
field                  guard
=====================  ==============================================================
``_local``             a ``threading.local``: each thread's :class:`~._session.Session`
``_closed``            set once, by :meth:`close`, under ``_lock``; read without it (a
                       call that races with ``close`` fails in the engine instead)
``_changes``,          ``_lock``
``_running``
``row_factory``,       the caller's: set them before sharing the connection (as with
``text_factory``,      ``sqlite3``); every statement reads them once, when it starts
hooks, levels
=====================  ==============================================================
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Self

from .._engine import Engine, use_authorizer
from .._errors import Error
from .._statements import split_script
from .._types import ExcType, Tb
from . import _sql
from ._cursor import Cursor
from ._session import EMPTY, Outcome, Session, run_statement, translate
from ._shared import attach, check_registration, detach

__all__ = ("LEGACY_TRANSACTION_CONTROL", "Connection")

LEGACY_TRANSACTION_CONTROL = -1
_LEVELS = ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")


def _level(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("isolation_level must be str or None")
    if "\0" in value or str.upper(value) not in _LEVELS:
        raise ValueError(
            "isolation_level string must be '', 'DEFERRED', 'IMMEDIATE', or 'EXCLUSIVE'"
        )
    return value


def _autocommit(value: object) -> bool | int:
    if value is True or value is False or value == LEGACY_TRANSACTION_CONTROL:
        return value if isinstance(value, bool) else LEGACY_TRANSACTION_CONTROL
    raise ValueError(
        "autocommit must be True, False, or sqlite3.LEGACY_TRANSACTION_CONTROL"
    )


_TRUE = {"1", "on", "true", "yes"}
_FALSE = {"0", "off", "false", "no"}
_SYNCHRONOUS = {"0": "off", "1": "normal", "2": "full", "3": "extra"}


def _same_setting(name: str, have: object, value: str) -> bool:
    """Whether ``PRAGMA name = value`` asks for what the engine has (``have``, as ``PRAGMA
    name`` reads)."""
    want = value.strip().lower()
    got = str(have).lower()
    if name == "synchronous":
        return _SYNCHRONOUS.get(got, got) == _SYNCHRONOUS.get(want, want)
    if got in ("0", "1") and (want in _TRUE or want in _FALSE):
        return (got == "1") == (want in _TRUE)
    return got == want


class _Statement:
    """What ``Connection.__call__`` returns (sqlite3's ``Statement`` has no public API)."""

    __slots__ = ("sql",)

    def __init__(self, sql: str) -> None:
        self.sql = sql


class Connection:
    """A ``sqlite3.Connection`` that every thread may use at once.

    Each thread has its own transaction state on it, as if it had a connection of its own:
    its implicit or explicit transaction holds the write lane (``BEGIN IMMEDIATE``) until that
    thread commits or rolls back; another thread's ``commit()`` never commits it. Statements
    outside a transaction run as one group-committed write, or on a reader. Waits are bounded
    by ``timeout`` (then ``OperationalError: database is locked``).
    """

    Warning = sqlite3.Warning
    Error = sqlite3.Error
    InterfaceError = sqlite3.InterfaceError
    DatabaseError = sqlite3.DatabaseError
    DataError = sqlite3.DataError
    OperationalError = sqlite3.OperationalError
    IntegrityError = sqlite3.IntegrityError
    InternalError = sqlite3.InternalError
    ProgrammingError = sqlite3.ProgrammingError
    NotSupportedError = sqlite3.NotSupportedError

    _closed: bool | None = None  # (None: __init__ never ran)

    def __init__(
        self,
        database: str | bytes | Any,
        timeout: float = 5.0,
        detect_types: int = 0,
        isolation_level: str | None = "",
        check_same_thread: bool = True,
        factory: Any = None,
        cached_statements: int = 128,
        uri: bool = False,
        *,
        autocommit: bool | int = LEGACY_TRANSACTION_CONTROL,
        litegate: Mapping[str, Any] | None = None,
    ) -> None:
        import os

        if isinstance(database, bytes):
            database = os.fsdecode(database)
        path = os.fspath(database)
        if not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number, not {type(timeout).__name__}")
        if not isinstance(detect_types, int):
            raise TypeError("detect_types must be an int")
        self._isolation_level = _level(isolation_level)
        self._autocommit = _autocommit(autocommit)
        self._timeout = float(timeout)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self._changes = 0
        self._running: dict[int, sqlite3.Connection] = {}
        self.row_factory: Any = None
        self._text_factory: Any = str
        self._trace: Callable[[str], object] | None = None
        self._progress: tuple[Callable[[], object], int] | None = None
        self._authorizer: Callable[..., int] | None = None
        self._sql_limit: int | None = None  # SQLITE_LIMIT_SQL_LENGTH, if set
        self._custom = False
        del check_same_thread, factory, cached_statements  # (accepted: see the docs)
        try:
            self._shared = attach(
                path,
                uri=bool(uri),
                detect_types=detect_types,
                timeout=self._timeout,
                options=litegate,
            )
        except Error as exc:
            raise translate(exc) from exc
        except ValueError as exc:
            raise sqlite3.ProgrammingError(str(exc)) from exc
        self._engine: Engine = self._shared.engine

    # ---- state -------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._closed is not False:
            raise sqlite3.ProgrammingError(
                "Base Connection.__init__ not called."
                if self._closed is None
                else "Cannot operate on a closed database."
            )

    def _session(self) -> Session:
        try:
            s: Session = self._local.s
        except AttributeError:
            s = self._local.s = Session()
        return s

    @property
    def in_transaction(self) -> bool:
        """Whether the calling thread has a transaction open on this connection."""
        self._check()
        if self._autocommit is False:
            return True
        lease = self._session().lease
        return lease is not None and lease.in_transaction

    @property
    def isolation_level(self) -> str | None:
        self._check()
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._check()
        level = _level(value)
        if level is None and self._autocommit == LEGACY_TRANSACTION_CONTROL:
            self.commit()  # (as sqlite3 does: the calling thread's transaction)
        self._isolation_level = level

    @property
    def autocommit(self) -> bool | int:
        self._check()
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool | int) -> None:
        mode = _autocommit(value)
        self._check()
        s = self._session()
        if mode is True and self._autocommit is False:
            self._finish(s, commit=True, reopen=False)
        elif mode is True:
            self._commit(s)
        elif mode is False and self._autocommit is not False and s.lease is None:
            self._traced("BEGIN")
        self._autocommit = mode

    @property
    def total_changes(self) -> int:
        """Rows changed through this connection (every thread's statements)."""
        self._check()
        with self._lock:
            return self._changes

    @property
    def text_factory(self) -> Any:
        return self._text_factory

    @text_factory.setter
    def text_factory(self, value: Any) -> None:
        self._text_factory = value
        self._recustom()

    def _recustom(self) -> None:
        self._custom = bool(
            self._text_factory is not str
            or self._trace is not None
            or self._progress
            or self._authorizer is not None
        )

    def _count_changes(self, n: int) -> None:
        if n:
            with self._lock:
                self._changes += n

    def _settings_for(self, conn: sqlite3.Connection) -> bool:
        """Before a statement on engine connection ``conn`` (the caller owns it): bring it up
        to date with the registered functions and apply this connection's hooks. True if
        :meth:`_settings_done` must undo them afterwards."""
        hooks = self._shared.hooks
        if hooks.version:
            hooks.sync(conn)
        with self._lock:
            self._running[id(conn)] = conn
        if not self._custom:
            return True
        conn.text_factory = self._text_factory
        if self._trace is not None:
            conn.set_trace_callback(self._trace)
        if self._progress is not None:
            conn.set_progress_handler(*self._progress)
        if self._authorizer is not None:
            use_authorizer(conn, self._authorizer)
        return True

    def _settings_done(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            self._running.pop(id(conn), None)
        if conn.text_factory is not str:
            conn.text_factory = str
        if self._trace is not None or self._progress is not None:
            conn.set_trace_callback(None)
            conn.set_progress_handler(None, 0)
        if self._authorizer is not None:
            use_authorizer(conn, None)

    # ---- statements --------------------------------------------------------------------------
    def cursor(self, factory: Callable[[Connection], Any] = Cursor) -> Any:
        """A new cursor (``factory(self)``: a :class:`Cursor` subclass)."""
        self._check()
        cur = factory(self)
        if not isinstance(cur, Cursor):
            raise TypeError("factory must return a cursor, not " + type(cur).__name__)
        return cur

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        """Run one statement on a new cursor: in the calling thread's transaction if it has
        one open (or opens one: the standard module's rules), else as one group-committed
        write or on a reader."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> Cursor:
        return self.cursor().executescript(sql_script)

    def _run(self, cur: Cursor, sql: str, params: Any, many: bool) -> Outcome:
        """One statement for ``cur``, routed by what it is and the thread's session."""
        if not isinstance(sql, str):
            raise TypeError(f"execute() argument 1 must be str, not {type(sql).__name__}")
        if self._sql_limit is not None:
            self._check_length(sql)
        kind = _sql.classify(sql)
        s = self._session()
        try:
            if kind == _sql.SET_PRAGMA:
                return self._set_pragma(sql)
            if kind >= _sql.BEGIN:
                return self._control(s, kind, sql, params, cur)
            lease = s.lease
            if lease is None:
                if self._autocommit is False:  # (its BEGIN was traced when it "opened")
                    lease = self._begin(s, None)
                elif (
                    kind in (_sql.DML, _sql.INSERT)
                    and self._isolation_level is not None
                    and self._autocommit == LEGACY_TRANSACTION_CONTROL
                ):
                    lease = self._begin(s, "BEGIN " + self._isolation_level)
                elif kind == _sql.NO_TRANSACTION:
                    return self._outside(cur, sql, params)
            args = (self, cur, sql, params, many)
            if lease is not None:
                try:
                    out: Outcome = lease.run(run_statement, args, sql, None)
                except BaseException:
                    if s.lease is lease and not lease.in_transaction:
                        self._end(s, commit=False)  # SQLite ended it (ON CONFLICT ROLLBACK ...)
                    raise
            elif kind == _sql.READ:
                out = self._engine.read(run_statement, args, self._timeout, None, sql)
            else:
                out = self._engine.write(run_statement, args, self._timeout, None, sql)
        except Error as exc:
            raise translate(exc) from exc
        if not many:
            if kind == _sql.INSERT and out.lastrowid is not None:
                s.lastrowid = out.lastrowid
            cur.lastrowid = s.lastrowid if s.lastrowid is not None else 0
        return out

    def _control(self, s: Session, kind: int, sql: str, params: Any, cur: Cursor) -> Outcome:
        """BEGIN, COMMIT, ROLLBACK and savepoints: the calling thread's session."""
        lease = s.lease
        if kind == _sql.BEGIN:
            if lease is not None:
                raise sqlite3.OperationalError("cannot start a transaction within a transaction")
            self._begin(s, sql)
            return EMPTY
        if kind == _sql.COMMIT or kind == _sql.ROLLBACK:
            if lease is None:
                verb = "commit" if kind == _sql.COMMIT else "rollback"
                raise sqlite3.OperationalError(f"cannot {verb} - no transaction is active")
            self._end(s, commit=kind == _sql.COMMIT, text=sql)
            return EMPTY
        name = _sql.savepoint_name(sql)
        if lease is None:
            if kind != _sql.SAVEPOINT:
                raise sqlite3.OperationalError(f"no such savepoint: {name}")
            lease = self._begin(s, None)
            s.savepoints = []
        out: Outcome = lease.run(run_statement, (self, cur, sql, params, False), sql, None)
        marks = s.savepoints
        if marks is not None:
            if kind == _sql.SAVEPOINT:
                marks.append(name)
            elif name in marks:
                i = len(marks) - 1 - marks[::-1].index(name)
                del marks[i if kind == _sql.RELEASE else i + 1 :]
                if not marks and kind == _sql.RELEASE:
                    self._end(s, commit=True)
        return out

    def _set_pragma(self, sql: str) -> Outcome:
        """``PRAGMA name = value`` of a connection setting. The engine's connections are
        shared, so it cannot change for one caller: a value the engine already has is
        accepted (``journal_mode=WAL``, ``foreign_keys=OFF`` ...), ``busy_timeout`` too (the
        connection's ``timeout`` bounds every wait); any other is refused, saying how to set
        it for the engine."""
        setting = _sql.pragma_setting(sql)
        if setting is None:
            raise sqlite3.NotSupportedError(f"litegate.sqlite3 cannot read the PRAGMA in {sql!r}")
        name, value = setting
        if name == "busy_timeout":
            return EMPTY
        rows = self._read_job(lambda conn: conn.execute(f"PRAGMA {name}").fetchall())
        have = rows[0][0] if rows and rows[0] else None
        if _same_setting(name, have, value):
            if name == "journal_mode":  # (it answers with the mode)
                return Outcome([(have,)], (("journal_mode",) + (None,) * 6,), -1, None)
            return EMPTY
        how = (
            f'litegate={{"{name}": ...}}'
            if name == "synchronous"
            else f'litegate={{"pragmas": {{"{name}": ...}}}}'
        )
        raise sqlite3.NotSupportedError(
            f"PRAGMA {name}={value} is not supported by litegate.sqlite3: every connection to "
            f"{self._engine.opts.name!r} in this process shares one engine, which has "
            f"{name}={have}. Set it for the engine when the first connection opens: "
            f"sqlite3.connect(..., {how})"
        )

    def _begin(self, s: Session, text: str | None) -> Any:
        """Open the calling thread's transaction: take the write lane, ``BEGIN IMMEDIATE``
        (``text``: the statement sqlite3 would have run, for a trace callback)."""
        if text is not None and self._trace is not None:
            self._trace(text)
        lease = self._engine.lease(self._timeout, "the transaction", s)
        try:
            lease.begin()
        except BaseException:
            lease.release()
            raise
        s.lease = lease
        return lease

    def _end(self, s: Session, *, commit: bool, text: str | None = None) -> None:
        """End the calling thread's transaction (if any) and give the lane back."""
        lease = s.lease
        if lease is None:
            return
        if self._trace is not None:
            self._trace(text or ("COMMIT" if commit else "ROLLBACK"))
        s.lease = None
        s.savepoints = None
        if s.blobs:
            s.close_blobs()
        try:
            if lease.in_transaction:
                if commit:
                    lease.commit()
                else:
                    lease.rollback()
        finally:
            lease.release()

    def _script(self, cur: Cursor, script: str) -> None:
        if not isinstance(script, str):
            raise TypeError(
                f"executescript() argument must be str, not {type(script).__name__}"
            )
        if "\x00" in script:
            raise ValueError("embedded null character")
        s = self._session()
        if self._autocommit == LEGACY_TRANSACTION_CONTROL and s.lease is not None:
            self._commit(s)
        for statement in split_script(script):
            self._run(cur, statement, (), False)
        cur.description = None
        cur.rowcount = -1

    def commit(self) -> None:
        """Commit the calling thread's transaction (no-op without one, or with
        ``autocommit=True``). Returns after the (group's) COMMIT."""
        self._check()
        if self._autocommit is False:
            self._finish(self._session(), commit=True, reopen=True)
        elif self._autocommit is not True:
            self._commit(self._session())

    def _commit(self, s: Session) -> None:
        try:
            self._end(s, commit=True)
        except Error as exc:
            raise translate(exc) from exc

    def rollback(self) -> None:
        """Roll back the calling thread's transaction (no-op without one)."""
        self._check()
        if self._autocommit is False:
            self._finish(self._session(), commit=False, reopen=True)
        elif self._autocommit is not True:
            try:
                self._end(self._session(), commit=False)
            except Error as exc:
                raise translate(exc) from exc

    def _finish(self, s: Session, *, commit: bool, reopen: bool) -> None:
        """``autocommit=False``: end the thread's transaction, which is always open (begun
        lazily, at its first statement: the trace shows it as sqlite3 would)."""
        try:
            if s.lease is not None:
                self._end(s, commit=commit)
            else:
                self._traced("COMMIT" if commit else "ROLLBACK")
        except Error as exc:
            raise translate(exc) from exc
        finally:
            if reopen:
                self._traced("BEGIN")

    def _traced(self, text: str) -> None:
        trace = self._trace
        if trace is not None:
            trace(text)

    def close(self) -> None:
        """Close the connection, for every thread. The calling thread's open transaction is
        rolled back; the last connection to a file closes its engine (draining its writes)."""
        if self._closed is None:
            raise sqlite3.ProgrammingError("Base Connection.__init__ not called.")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            s = self._session()
            if self._autocommit is False:
                self._finish(s, commit=False, reopen=False)
            else:
                self._end(s, commit=False)
        except sqlite3.Error:
            pass
        finally:
            detach(self._shared, self._timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def __del__(self) -> None:
        shared = getattr(self, "_shared", None)
        if shared is not None and not self._closed:
            self._closed = True
            if sys.version_info >= (3, 13):  # (as sqlite3 warns since 3.13)
                warnings.warn(
                    f"unclosed database in {self!r}", ResourceWarning, source=self, stacklevel=1
                )
            detach(shared, 0, wait=False)

    def _outside(self, cur: Cursor, sql: str, params: Any) -> Outcome:
        """A statement SQLite runs only outside a transaction (``VACUUM``): on a connection
        of its own, while this thread holds the write lane (no other writer of the process
        runs meanwhile; readers go on, WAL allows it)."""
        opts = self._engine.opts
        if opts.memory:
            raise sqlite3.NotSupportedError(
                f"{sql.split()[0]} of an in-memory database is not supported by litegate.sqlite3 "
                "(the engine's one connection runs every statement in a transaction)"
            )
        lease = self._engine.lease(self._timeout, "the statement", self._session())
        try:
            side = sqlite3.connect(opts.path, timeout=self._timeout, uri=opts.uri)
            try:
                side.isolation_level = None
                out = run_statement(side, self, cur, sql, params, False)
            finally:
                side.close()
        finally:
            lease.release()
        return out

    def __call__(self, *args: str) -> _Statement:
        """A statement object (sqlite3 compiles it here; litegate checks its text only)."""
        self._check()
        if len(args) != 1:
            raise TypeError(f"expected 1 argument, got {len(args)}")
        sql = args[0]
        if not isinstance(sql, str):
            raise TypeError(f"argument must be str, not {type(sql).__name__}")
        sql.encode()  # (UnicodeEncodeError for a lone surrogate, as sqlite3)
        self._check_length(sql)
        return _Statement(sql)

    def getlimit(self, category: int, /) -> int:
        """A run-time limit of the engine's connections."""
        self._check()
        if category == sqlite3.SQLITE_LIMIT_SQL_LENGTH and self._sql_limit is not None:
            return self._sql_limit
        value: int = self._read_job(lambda conn: conn.getlimit(category))
        return value

    def setlimit(self, category: int, limit: int, /) -> int:
        """Set a run-time limit: the SQL text length for this connection's statements; any
        other on every connection of the engine (shared by the connections to one file).
        Returns the previous value."""
        old = self.getlimit(category)
        if category == sqlite3.SQLITE_LIMIT_SQL_LENGTH:
            # (checked here: on the engine's connections it would refuse litegate's own SQL)
            check_registration("setlimit", (category, limit), {})
            if limit >= 0:
                self._sql_limit = limit
            return old
        self._register("setlimit", category, limit)
        return old

    def getconfig(self, op: int, /) -> bool:
        """A configuration option of the engine's connections (Python 3.12+)."""
        self._check()
        value: bool = self._read_job(lambda conn: conn.getconfig(op))  # type: ignore[attr-defined,unused-ignore]
        return value

    def setconfig(self, op: int, enable: bool = True, /) -> bool:
        """Set a configuration option on every connection of the engine (shared by the
        connections to one file); returns its new value (Python 3.12+)."""
        self._register("setconfig", op, enable)
        return self.getconfig(op)

    def _check_length(self, sql: str) -> None:
        limit = self._sql_limit
        if limit is not None and len(sql.encode("utf-8", "surrogatepass")) > limit:
            raise sqlite3.DataError("query string is too large")

    # ---- functions and hooks -----------------------------------------------------------------
    def _register(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._check()
        check_registration(method, args, kwargs)
        self._shared.hooks.add(method, args, kwargs)

    def create_function(
        self, name: str, narg: int, func: Callable[..., Any] | None, *, deterministic: bool = False
    ) -> None:
        """Register a function on every connection of the engine (see the docs: functions are
        shared by the connections to one file)."""
        self._register("create_function", name, narg, func, deterministic=deterministic)

    def create_aggregate(self, name: str, n_arg: int, aggregate_class: Any) -> None:
        self._register("create_aggregate", name, n_arg, aggregate_class)

    def create_window_function(self, name: str, num_params: int, aggregate_class: Any, /) -> None:
        self._register("create_window_function", name, num_params, aggregate_class)

    def create_collation(self, name: str, callable: Callable[[str, str], int] | None, /) -> None:  # noqa: A002
        self._register("create_collation", name, callable)

    def set_trace_callback(self, trace_callback: Callable[[str], object] | None) -> None:
        self._check()
        self._trace = trace_callback
        self._recustom()

    def set_progress_handler(self, progress_handler: Callable[[], object] | None, n: int) -> None:
        self._check()
        self._progress = None if progress_handler is None else (progress_handler, n)
        self._recustom()

    def set_authorizer(self, authorizer_callback: Callable[..., int] | None) -> None:
        """Consult ``authorizer_callback`` for this connection's statements (after litegate's
        own authorizer, whose refusals stand)."""
        self._check()
        if authorizer_callback is not None and not callable(authorizer_callback):
            raise TypeError("parameter must be callable")
        self._authorizer = authorizer_callback
        self._recustom()

    def enable_load_extension(self, enabled: bool, /) -> None:
        self._check()
        raise sqlite3.NotSupportedError(
            "load extensions through litegate.connect(on_connect=...): an extension must be "
            "loaded on every connection of the shared engine"
        )

    def load_extension(self, name: str, /, *, entrypoint: str | None = None) -> None:
        self.enable_load_extension(True)

    def interrupt(self) -> None:
        """Interrupt the statements this connection is running (in any thread)."""
        self._check()
        with self._lock:
            running = list(self._running.values())
        for conn in running:
            conn.interrupt()

    # ---- whole-database operations -----------------------------------------------------------
    def iterdump(self, *, filter: str | None = None) -> Iterator[str]:  # noqa: A002
        """The database as SQL text (read on a reader, or in the calling thread's
        transaction). ``filter`` (Python 3.13+): a LIKE pattern of the tables to dump."""
        self._check()
        kwargs = {} if filter is None else {"filter": filter}
        lines: list[str] = self._read_job(lambda conn: list(conn.iterdump(**kwargs)))
        return iter(lines)

    def _read_job(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """``fn(conn)`` on a reader (in the calling thread's transaction: on the lane), with
        the registered functions and limits applied."""
        s = self._session()
        hooks = self._shared.hooks

        def job(conn: sqlite3.Connection) -> Any:
            if hooks.version:
                hooks.sync(conn)
            return fn(conn)

        try:
            if s.lease is not None:
                return s.lease.run(job, (), None, None)
            return self._engine.read(job, (), self._timeout, None)
        except Error as exc:
            raise translate(exc) from exc

    def backup(
        self,
        target: Any,
        *,
        pages: int = -1,
        progress: Callable[[int, int, int], object] | None = None,
        name: str = "main",
        sleep: float = 0.250,
    ) -> None:
        """Copy the database into ``target`` (a ``sqlite3`` or litegate connection)."""
        self._check()
        if isinstance(target, Connection):
            target._check()
            if target is self:
                raise ValueError("target cannot be the same connection instance")

            def copy(src: sqlite3.Connection) -> None:
                target._into(src, pages, progress, name, sleep)

            self._read_job(copy)
            return
        if not isinstance(target, sqlite3.Connection):
            raise TypeError(
                "backup() argument 'target' must be sqlite3.Connection, not "
                f"{type(target).__name__}"
            )
        self._read_job(
            lambda src: src.backup(target, pages=pages, progress=progress, name=name, sleep=sleep)
        )

    def _into(
        self,
        src: sqlite3.Connection,
        pages: int,
        progress: Callable[[int, int, int], object] | None,
        name: str,
        sleep: float,
    ) -> None:
        """Back ``src`` up into this connection's database, on the write lane."""
        s = self._session()
        if s.lease is not None:
            raise sqlite3.OperationalError("target is in transaction")
        try:
            lease = self._engine.lease(self._timeout, "the backup", s)
        except Error as exc:
            raise translate(exc) from exc
        try:
            lease.run(
                lambda dst: src.backup(dst, pages=pages, progress=progress, name=name, sleep=sleep),
                (),
                None,
                None,
            )
        finally:
            lease.release()

    def blobopen(
        self, table: str, column: str, row: int, /, *, readonly: bool = False, name: str = "main"
    ) -> sqlite3.Blob:
        """A blob handle, inside the calling thread's transaction (it is closed when the
        transaction ends)."""
        self._check()
        s = self._session()
        lease = s.lease
        if lease is None and self._autocommit is False:
            lease = self._begin(s, None)
        if lease is None:
            raise sqlite3.NotSupportedError(
                "blobopen() needs a transaction on litegate.sqlite3: a blob keeps its "
                "connection, and outside a transaction the engine's connections are shared; "
                "open it after BEGIN (or inside `with conn:` after a write) and use it before "
                "the COMMIT"
            )
        blob = lease.conn.blobopen(table, column, row, readonly=readonly, name=name)
        if s.blobs is None:
            s.blobs = []
        s.blobs.append(blob)
        return blob
