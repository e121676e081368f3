"""The drop-in's connection: the standard ``sqlite3.Connection`` API over
:class:`~._core.ConnectionCore` (the state, its guards, and where statements run)."""

from __future__ import annotations

import inspect
import sqlite3
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self

from .._errors import Error
from .._types import ExcType, Tb
from ._core import LEGACY_TRANSACTION_CONTROL, ConnectionCore, Cursor
from ._session import Session, translate
from ._shared import check_registration, detach
from ._sql import check_level, check_mode

__all__ = ("LEGACY_TRANSACTION_CONTROL", "Connection")


class _Statement:
    """What ``Connection.__call__`` returns (sqlite3's ``Statement`` has no public API, and
    cannot be created directly either)."""

    __slots__ = ("sql",)
    sql: str

    def __new__(cls, *args: object, **kwargs: object) -> _Statement:
        raise TypeError(f"cannot create '{cls.__module__}.{cls.__qualname__}' instances")


def _statement(sql: str) -> _Statement:
    st = object.__new__(_Statement)
    st.sql = sql
    return st


class Connection(ConnectionCore):
    """A ``sqlite3.Connection`` that every thread may use at once.

    Each thread has its own transaction state on it, as if it had a connection of its own:
    its implicit or explicit transaction holds the write lane (``BEGIN IMMEDIATE``) until that
    thread commits or rolls back; another thread's ``commit()`` never commits it. Statements
    outside a transaction run as one group-committed write, or on a reader. Waits are bounded
    by ``timeout`` (then ``OperationalError: database is locked``).
    """

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
        level = check_level(value)
        if level is None and self._autocommit == LEGACY_TRANSACTION_CONTROL:
            self.commit()  # (as sqlite3 does: the calling thread's transaction)
        self._isolation_level = level

    @property
    def autocommit(self) -> bool | int:
        self._check()
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool | int) -> None:
        mode = check_mode(value)
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

    # ---- statements --------------------------------------------------------------------------
    def cursor(self, factory: Callable[[Connection], Any] = Cursor) -> Any:
        """A new cursor (``factory(self)``: a :class:`Cursor` subclass)."""
        self._check()
        cur = factory(self)
        if not issubclass(type(cur), Cursor):  # (its real type: a __class__ can pretend)
            raise TypeError("factory must return a cursor, not " + type(cur).__name__)
        return cur

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        """Run one statement on a new cursor: in the calling thread's transaction if it has
        one open (or opens one: the standard module's rules), else as one group-committed
        write or on a reader."""
        return Cursor(self).execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        return Cursor(self).executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> Cursor:
        return Cursor(self).executescript(sql_script)

    def commit(self) -> None:
        """Commit the calling thread's transaction (no-op without one, or with
        ``autocommit=True``). Returns after the (group's) COMMIT."""
        self._check()
        s = self._session()
        if self._autocommit is False:
            self._finish(s, commit=True, reopen=True)
        elif self._autocommit is not True or (s.lease is not None and not s.explicit):
            # (with autocommit=True only a BEGIN's transaction is left alone, as sqlite3
            # does; one opened implicitly before another thread switched the mode is ended)
            self._commit(s)

    def rollback(self) -> None:
        """Roll back the calling thread's transaction (no-op without one)."""
        self._check()
        s = self._session()
        if self._autocommit is False:
            self._finish(s, commit=False, reopen=True)
        elif self._autocommit is not True or (s.lease is not None and not s.explicit):
            try:
                self._end(s, commit=False)
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

    def _recustom(self) -> None:
        self._custom = bool(
            self._text_factory is not str
            or self._trace is not None
            or self._progress
            or self._authorizer is not None
        )

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
            try:
                if sys.version_info >= (3, 13):  # (as sqlite3 warns since 3.13)
                    warnings.warn(
                        f"unclosed database in {self!r}",
                        ResourceWarning,
                        source=self,
                        stacklevel=1,
                    )
            finally:  # (the warning may be an error: the engine is let go of all the same)
                detach(shared, 0, wait=False)

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
        return _statement(sql)

    __call__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
            inspect.Parameter("sql", inspect.Parameter.POSITIONAL_ONLY),
        ]
    )

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

    def create_collation(self, name: str, callable: Callable[[str, str], int] | None, /) -> None:
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
        for conn in self._running():
            conn.interrupt()

    # ---- whole-database operations -----------------------------------------------------------
    def iterdump(self, *, filter: str | None = None) -> Iterator[str]:
        """The database as SQL text (read on a reader, or in the calling thread's
        transaction). ``filter`` (Python 3.13+): a LIKE pattern of the tables to dump."""
        self._check()
        kwargs = {} if filter is None else {"filter": filter}
        lines: list[str] = self._read_job(lambda conn: list(conn.iterdump(**kwargs)))
        return iter(lines)

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
            target._into(None, pages, progress, name, sleep)  # (checks it first)
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
        src: sqlite3.Connection | None,
        pages: int,
        progress: Callable[[int, int, int], object] | None,
        name: str,
        sleep: float,
    ) -> None:
        """Back ``src`` up into this connection's database, on the write lane (``None``:
        only check that it can be)."""
        self._check()
        if src is None:
            return
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
