"""Runtime misuse detector for plain :mod:`sqlite3` connections.

``litegate.debug.enable()`` (or ``LITEGATE_DEBUG=1`` in the environment when this module is
imported) replaces :func:`sqlite3.connect` with a wrapper that passes a tracking
``factory=`` subclass of the requested connection class. Each connection then remembers the
thread and the stack that created it, and every call on it (and on its cursors) checks:

* a connection opened with ``check_same_thread=True`` (the default) used from another
  thread raises :class:`CrossThreadUse`, instead of sqlite3's bare ``ProgrammingError``,
  showing where the connection was made, where it is used now, and which thread owns it;
* a connection opened with ``check_same_thread=False`` raises :class:`ConcurrentUse` when a
  second thread calls it while another thread is inside a call, or while another thread has
  an open transaction on it (its statements would join that transaction).

Both errors subclass :class:`litegate.Misuse` and :class:`sqlite3.ProgrammingError`, so
existing ``except sqlite3.ProgrammingError`` handlers still catch them.

Nothing is patched until :func:`enable` is called: importing this module costs nothing else.
Connections made before :func:`enable` are not tracked; connections made while enabled keep
checking after :func:`disable`. Code that did ``from sqlite3 import connect`` before
:func:`enable` keeps the original function.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from ._errors import ConcurrentUse as ConcurrentUse
from ._errors import CrossThreadUse as CrossThreadUse
from ._errors import Origin as Origin

__all__ = (
    "ConcurrentUse",
    "CrossThreadUse",
    "ENV_VAR",
    "Origin",
    "disable",
    "enable",
    "is_enabled",
    "origin",
)

ENV_VAR = "LITEGATE_DEBUG"
"""Set to ``1`` to enable the detector when :mod:`litegate.debug` is imported."""

MAX_FRAMES = 30

_FIX_CROSS = (
    "Fix: open one connection per thread (threading.local, or open it inside the worker), "
    "or share a litegate.Database, which runs each call on a connection that thread may use."
)
_FIX_CONCURRENT = (
    "Fix: hold one threading.Lock from a unit of work's first statement to its commit, "
    "or share a litegate.Database, which serialises writes on one writer thread."
)


_lock = threading.Lock()
_original_connect: Callable[..., sqlite3.Connection] | None = None
_connection_classes: dict[type, type] = {}
_cursor_classes: dict[type, type] = {}


def enable() -> None:
    """Start tracking connections made by :func:`sqlite3.connect` from now on. Idempotent."""
    global _original_connect
    with _lock:
        if _original_connect is not None:
            return
        _original_connect = sqlite3.connect
        # setattr: the module attribute is typed as sqlite3.connect's overloads
        setattr(sqlite3, "connect", _connect)  # noqa: B010
        setattr(sqlite3.dbapi2, "connect", _connect)  # noqa: B010


def disable() -> None:
    """Restore the original :func:`sqlite3.connect`. Idempotent."""
    global _original_connect
    with _lock:
        if _original_connect is None:
            return
        setattr(sqlite3, "connect", _original_connect)  # noqa: B010
        setattr(sqlite3.dbapi2, "connect", _original_connect)  # noqa: B010
        _original_connect = None


def is_enabled() -> bool:
    """Whether :func:`sqlite3.connect` is currently wrapped."""
    return _original_connect is not None


def origin(conn: sqlite3.Connection) -> Origin | None:
    """Where ``conn`` was made, or ``None`` if it is not tracked."""
    found = getattr(conn, "_lg_origin", None)
    return found if isinstance(found, Origin) else None


def _connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    original = _original_connect
    if original is None:  # disabled between lookup and call
        plain: sqlite3.Connection = sqlite3.connect(*args, **kwargs)
        return plain
    if len(args) > 5:
        positional = list(args)
        positional[5] = _connection_class(positional[5])
        return original(*positional, **kwargs)
    kwargs["factory"] = _connection_class(kwargs.get("factory") or sqlite3.Connection)
    return original(*args, **kwargs)


def _connection_class(base: type) -> type:
    if base is sqlite3.Connection:
        return _TrackedConnection
    return _tracked(base, _TrackedConnection, _connection_classes)


def _cursor_class(base: Any) -> Any:
    if not isinstance(base, type):
        return base  # a factory function: its cursors stay untracked
    if base is sqlite3.Cursor:
        return _TrackedCursor
    return _tracked(base, _TrackedCursor, _cursor_classes)


def _tracked(base: type, tracked: type, cache: dict[type, type]) -> type:
    """``base``'s tracked subclass (made once per class; ``base`` if it is tracked)."""
    if issubclass(base, tracked):
        return base
    with _lock:
        cls = cache.get(base)
        if cls is None:
            cls = type(f"Tracked{base.__name__}", (tracked, base), {})
            cache[base] = cls
        return cls


def _stack(skip: int = 2) -> tuple[str, ...]:
    frames = [f for f in traceback.extract_stack(sys._getframe(skip)) if f.filename != __file__][
        -MAX_FRAMES:
    ]
    return tuple(traceback.format_list(frames))


def _thread_name(ident: int | None) -> str:
    for t in threading.enumerate():
        if t.ident == ident:
            return t.name
    return f"<finished thread {ident}>"


def _indent(lines: tuple[str, ...] | list[str]) -> str:
    return "".join("  " + line.replace("\n", "\n  ").rstrip(" ") for line in lines)


class _TrackedConnection(sqlite3.Connection):
    """A :class:`sqlite3.Connection` that checks which thread uses it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        same = kwargs.get("check_same_thread", args[4] if len(args) > 4 else True)
        current = threading.current_thread()
        self._lg_origin = Origin(current.name, threading.get_ident(), _stack(), bool(same))
        self._lg_state = threading.Lock()
        # Thread objects, not idents: a finished thread's ident is reused by new threads.
        self._lg_active: threading.Thread | None = None
        self._lg_depth = 0
        self._lg_txn_thread: threading.Thread | None = None
        self._lg_txn_stack: tuple[str, ...] = ()

    # Called by every guarded method, in the calling thread.
    def _lg_enter(self, op: str) -> None:
        made = self._lg_origin
        if made.check_same_thread:
            if threading.get_ident() != made.thread_id:
                raise self._cross_thread(op)
            return
        me = threading.current_thread()
        with self._lg_state:
            active = self._lg_active
            if active is not None and active != me:
                raise self._concurrent(op, active, "is inside a call on it right now", None)
            owner = self._lg_txn_thread
            if op != "close" and owner is not None and owner != me and self._in_txn():
                raise self._concurrent(
                    op, owner, "has an open transaction on it", self._lg_txn_stack
                )
            self._lg_active = me
            self._lg_depth += 1

    def _lg_exit(self) -> None:
        if self._lg_origin.check_same_thread:
            return
        with self._lg_state:
            self._lg_depth -= 1
            if self._lg_depth == 0:
                self._lg_active = None
            if not self._in_txn():
                self._lg_txn_thread = None
                self._lg_txn_stack = ()
            elif self._lg_txn_thread is None:
                self._lg_txn_thread = threading.current_thread()
                self._lg_txn_stack = _stack(3)

    def _in_txn(self) -> bool:
        try:
            return self.in_transaction
        except sqlite3.ProgrammingError:  # closed
            return False

    def _cross_thread(self, op: str) -> CrossThreadUse:
        made = self._lg_origin
        me = threading.current_thread()
        owner = _thread_name(made.thread_id)
        message = (
            f"sqlite3 connection used from thread {me.name!r} ({op}()) but it was created in "
            f"thread {made.thread_name!r}, which owns it (check_same_thread=True).\n\n"
            f"Connection created here, in thread {made.thread_name!r}:\n{_indent(made.stack)}\n"
            f"Used now here, in thread {me.name!r}:\n{_indent(_stack(3))}\n"
            f"Held by: thread {owner!r} (the creating thread).\n\n{_FIX_CROSS}"
        )
        return CrossThreadUse(message, made)

    def _concurrent(
        self, op: str, holder: threading.Thread, doing: str, since: tuple[str, ...] | None
    ) -> ConcurrentUse:
        made = self._lg_origin
        me = threading.current_thread()
        name = holder.name if holder.is_alive() else f"{holder.name} (finished)"
        if since:
            held = f"Transaction opened here, in thread {name!r}:\n{_indent(since)}"
        else:
            frame = sys._current_frames().get(holder.ident or 0)
            where = traceback.format_stack(frame)[-MAX_FRAMES:] if frame is not None else []
            held = f"Thread {name!r} is now here:\n{_indent(where)}"
        message = (
            f"sqlite3 connection used from thread {me.name!r} ({op}()) while thread {name!r} "
            f"{doing}: with check_same_thread=False nothing stops the two from interleaving.\n\n"
            f"Connection created here, in thread {made.thread_name!r}:\n{_indent(made.stack)}\n"
            f"Used now here, in thread {me.name!r}:\n{_indent(_stack(3))}\n"
            f"Held by: thread {name!r}. {held}\n{_FIX_CONCURRENT}"
        )
        return ConcurrentUse(message, made, name)


class _TrackedCursor(sqlite3.Cursor):
    """A :class:`sqlite3.Cursor` whose calls are checked against its connection's owner."""


def _guard_connection(name: str) -> Callable[..., Any]:
    def method(self: _TrackedConnection, *args: Any, **kwargs: Any) -> Any:
        self._lg_enter(name)
        try:
            return getattr(super(_TrackedConnection, self), name)(*args, **kwargs)
        finally:
            self._lg_exit()

    method.__name__ = name
    return method


def _cursor(self: _TrackedConnection, factory: Any = sqlite3.Cursor) -> sqlite3.Cursor:
    self._lg_enter("cursor")
    try:
        cursor: sqlite3.Cursor = super(_TrackedConnection, self).cursor(_cursor_class(factory))
        return cursor
    finally:
        self._lg_exit()


def _execute_via_cursor(name: str) -> Callable[..., Any]:
    # sqlite3's own Connection.execute makes a plain cursor; make a tracked one instead.
    def method(self: _TrackedConnection, *args: Any, **kwargs: Any) -> Any:
        self._lg_enter(name)
        try:
            cursor = self.cursor()
            return getattr(cursor, name)(*args, **kwargs)
        finally:
            self._lg_exit()

    method.__name__ = name
    return method


def _guard_cursor(name: str) -> Callable[..., Any]:
    def method(self: _TrackedCursor, *args: Any, **kwargs: Any) -> Any:
        conn = self.connection
        if not isinstance(conn, _TrackedConnection):
            return getattr(super(_TrackedCursor, self), name)(*args, **kwargs)
        conn._lg_enter(name)
        try:
            return getattr(super(_TrackedCursor, self), name)(*args, **kwargs)
        finally:
            conn._lg_exit()

    method.__name__ = name
    return method


for _name in (
    "commit",
    "rollback",
    "close",
    "backup",
    "iterdump",
    "blobopen",
    "create_function",
    "create_aggregate",
    "create_collation",
    "create_window_function",
    "serialize",
    "deserialize",
    "__enter__",
    "__exit__",
):
    if hasattr(sqlite3.Connection, _name):
        setattr(_TrackedConnection, _name, _guard_connection(_name))
for _name in ("execute", "executemany", "executescript"):
    setattr(_TrackedConnection, _name, _execute_via_cursor(_name))
_TrackedConnection.cursor = _cursor  # type: ignore[method-assign,assignment]
for _name in (
    "execute",
    "executemany",
    "executescript",
    "fetchone",
    "fetchmany",
    "fetchall",
    "close",
    "__next__",
):
    setattr(_TrackedCursor, _name, _guard_cursor(_name))
del _name

if os.environ.get(ENV_VAR, "").strip().lower() not in ("", "0", "false", "no", "off"):
    enable()
