"""One engine per database file per process, shared by every drop-in connection to it, and
the user functions registered on it.

=======================  =================================================================
shared field             guard
=======================  =================================================================
``_engines``             ``_lock`` (connect and close of any drop-in connection)
``_closing``             ``_lock``
``Shared.users``         ``_lock``
``Hooks._items``,        ``Hooks._lock``; ``version`` is also read without it on every
``Hooks.version``,       statement (a stale read only misses a registration made at the
``Hooks._applied``       same moment as that statement, which no ordering promised)
=======================  =================================================================
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, cast

from .. import _config
from .._engine import Engine, open_engine, use_authorizer

__all__ = (
    "Hooks",
    "Shared",
    "attach",
    "attach_if_open",
    "check_registration",
    "check_statement",
    "detach",
    "detach_unless_last",
    "install_settings",
    "remove_settings",
)

_lock = threading.Lock()
_engines: dict[tuple[str, int], Shared] = {}
# (path as given, uri, detect_types) -> an engine of _engines (see _remember); guarded by _lock
_given: dict[tuple[str, bool, int], Shared] = {}
# key -> an engine its last connection's __del__ began to close (it closes on its writer
# thread); gone once the engine is; guarded by _lock
_closing: weakref.WeakValueDictionary[tuple[str, int], Engine] = weakref.WeakValueDictionary()
# attach() waits at most this long for such an engine to let go of the file
_CLOSING_WAIT_SECONDS = 10.0


class Hooks:
    """The functions, aggregates, collations and limits registered through any drop-in
    connection to one engine. SQLite keeps them per connection; the engine has several (the
    writer, the readers), so each is brought up to date lazily, by whoever runs a statement on
    it next (that caller owns the connection at that moment). A registration replaces the one
    of the same name (and argument count): an app that registers its functions on every new
    connection (Django does) keeps one of each."""

    def __init__(self) -> None:
        # Guards _items, version and _applied. version and _applied are also read without
        # it, by sync's first check: a whole int and a whole tuple (dict reads are safe
        # against a concurrent write); a stale pair only sends the caller to the locked path,
        # and a registration made before the caller's statement (in its thread, or handed
        # to it through anything that orders them) is seen.
        self._lock = threading.Lock()
        # (method, name, arity) -> (method, args, kwargs), in registration order
        self._items: dict[tuple[Any, ...], tuple[str, tuple[Any, ...], dict[str, Any]]] = {}
        self.version = 0
        # id(conn) -> (version applied, conn): the connection is kept to tell a reused id
        # apart (engine connections are not weak-referenceable; closed ones are dropped)
        self._applied: dict[int, tuple[int, sqlite3.Connection]] = {}

    def add(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # One SQLite slot per function name and argument count, whichever method filled it;
        # one per collation name, limit category, config option
        if method in _WITH_ARITY:
            key: tuple[Any, ...] = ("function", str(args[0]).lower(), args[1])
        else:
            key = (method, str(args[0]).lower() if isinstance(args[0], str) else args[0])
        entry = (method, args, kwargs)
        with self._lock:
            if self._items.get(key) == entry:
                return  # (the same again: nothing to apply)
            self._items.pop(key, None)
            self._items[key] = entry
            self.version += 1

    def sync(self, conn: sqlite3.Connection) -> None:
        """Apply to ``conn`` the registrations it has not had (the caller owns it)."""
        seen = self._applied.get(id(conn))  # (up to date: no lock, see __init__)
        if seen is not None and seen[1] is conn and seen[0] == self.version:
            return
        with self._lock:
            seen = self._applied.get(id(conn))
            if seen is not None and seen[1] is conn and seen[0] == self.version:
                return
            todo = list(self._items.values())
            if len(self._applied) > 64:
                self._forget_closed()
            self._applied[id(conn)] = (self.version, conn)
        for method, args, kwargs in todo:  # (all of them again: idempotent, and rare)
            getattr(conn, method)(*args, **kwargs)

    def _forget_closed(self) -> None:
        for key, (_, conn) in list(self._applied.items()):
            try:
                conn.total_changes  # noqa: B018 (raises once closed)
            except sqlite3.ProgrammingError:
                del self._applied[key]


_WITH_ARITY = frozenset({"create_function", "create_aggregate", "create_window_function"})


class Shared:
    """An engine and who uses it."""

    def __init__(self, key: tuple[str, int] | None, engine: Engine) -> None:
        self.key = key  # None: not shared (an in-memory database of its own)
        self.engine = engine
        self.users = 1
        self.hooks = Hooks()


def _key(path: str, uri: bool) -> str | None:
    """Who shares an engine: the same file (its real path), or the same named shared-cache
    in-memory database (its URI); ``None``: a private database (``:memory:``, ``""``)."""
    if _config.is_memory_path(path, uri):
        return path if uri and "cache=shared" in path else None
    if uri and path.startswith("file:"):
        return path
    return os.path.realpath(path)  # (a plain path, also with uri=True: Django passes it so)


def attach(
    path: str,
    *,
    uri: bool,
    detect_types: int,
    timeout: float,
    options: Mapping[str, Any] | None,
) -> Shared:
    """The engine for ``path``, opened on the first use.

    :raises sqlite3.ProgrammingError: ``options`` differ from those the open engine has
    :raises sqlite3.Error: the file cannot be opened
    """
    given = path
    shared = attach_if_open(path, uri=uri, detect_types=detect_types, options=options)
    if shared is not None:
        _remember(given, uri, detect_types, shared)
        return shared
    name = _key(path, uri)
    key = None if name is None else (name, detect_types)
    if key is not None:
        _wait_closed(key)
    fields: dict[str, Any] = {
        "timeout": timeout,
        "busy_timeout": timeout,
        "row_factory": None,
        "uri": uri,
        "detect_types": detect_types,
    }
    fields.update(options or {})
    fields["pragmas"] = _pragmas(options)
    if _config.is_memory_path(path, uri):
        fields["readers"] = 0
    elif not (uri and path.startswith("file:")):
        path = os.path.abspath(path)  # (VACUUM's side connection, after a chdir, finds it)
    opts = _config.make_options(path, cast(_config.ConnectOptions, fields))
    engine = open_engine(opts)  # (blocks: outside the lock)
    if key is None:
        return Shared(None, engine)
    with _lock:
        theirs = _engines.get(key)
        mine = theirs is None or theirs.engine.closed
        if theirs is None or mine:
            shared = _engines[key] = Shared(key, engine)
        else:
            shared = theirs
            shared.users += 1  # another thread opened it meanwhile: use theirs
    _remember(given, uri, detect_types, shared)
    if not mine:
        engine.close()
    return shared


def _wait_closed(key: tuple[str, int]) -> None:
    """Let an engine of ``key`` that is still closing (its last connection was dropped, not
    closed) finish first. The standard module closes a dropped connection at once; an engine
    closes on its writer thread, later -- and if the file was deleted and made anew meanwhile,
    that late close checkpoints into and deletes the new file's WAL (measured: a test suite
    that drops connections and deletes the file lost committed tables)."""
    with _lock:
        old = _closing.get(key)
    if old is None:
        return
    # (the first caller takes the close over; one at the same moment waits for it there)
    old.close(_CLOSING_WAIT_SECONDS)
    with _lock:
        if _closing.get(key) is old:
            del _closing[key]


def _remember(path: str, uri: bool, detect_types: int, shared: Shared) -> None:
    """Note the engine under the path as given, for :func:`attach_if_open` without
    ``resolve`` (absolute paths and ``file:`` URIs only: a relative one depends on the working
    directory)."""
    if shared.key is not None and (os.path.isabs(path) or (uri and path.startswith("file:"))):
        with _lock:
            _given[(path, uri, shared.key[1])] = shared


def attach_if_open(
    path: str,
    *,
    uri: bool,
    detect_types: int,
    options: Mapping[str, Any] | None,
    resolve: bool = True,
) -> Shared | None:
    """:func:`attach` when the engine is open already (no file is opened); ``None`` when it
    is not. ``resolve=False``: not even the path is resolved (``realpath`` makes a system call
    per component, and each gives up the GIL: an event loop under load waited 43 ms for it) --
    only a path that an earlier :func:`attach` was given, as it was given, is found.

    :raises sqlite3.ProgrammingError: ``options`` differ from those the open engine has
    """
    if not resolve:
        with _lock:
            shared = _given.get((path, uri, detect_types))
            key = None if shared is None else shared.key
            if shared is None or key is None or _engines.get(key) is not shared:
                return None
            if shared.engine.closed:
                return None
            _check_same(shared.engine, options)
            shared.users += 1
            return shared
    name = _key(path, uri)
    if name is None:
        return None
    with _lock:
        shared = _engines.get((name, detect_types))
        if shared is not None and not shared.engine.closed:
            _check_same(shared.engine, options)
            shared.users += 1
            return shared
    return None


def detach_unless_last(shared: Shared) -> bool:
    """:func:`detach` if another user remains (never blocks); False, and nothing done, if
    this is the last one (then :func:`detach` closes the engine)."""
    with _lock:
        if shared.users <= 1:
            return False
        shared.users -= 1
        return True


Settings = tuple[Any, Any, Any, Any]
"""A drop-in connection's own hooks and text factory: (trace, progress, authorizer,
text_factory); ``progress`` is ``(handler, n)`` or ``None``."""


def install_settings(conn: sqlite3.Connection, settings: Settings) -> None:
    """Before a statement on engine connection ``conn`` (the caller owns it): a drop-in
    connection's own settings, as a connection of its own would have them."""
    trace, progress, authorizer, text_factory = settings
    conn.text_factory = text_factory
    if trace is not None:
        conn.set_trace_callback(trace)
    if progress is not None:
        conn.set_progress_handler(*progress)
    if authorizer is not None:
        use_authorizer(conn, authorizer)


def remove_settings(conn: sqlite3.Connection, settings: Settings) -> None:
    """After it: take off what :func:`install_settings` put on (the connection is the
    engine's, shared)."""
    trace, progress, authorizer, _ = settings
    conn.text_factory = str
    if trace is not None:
        conn.set_trace_callback(None)
    if progress is not None:
        conn.set_progress_handler(None, 0)
    if authorizer is not None:
        use_authorizer(conn, None)


def _pragmas(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The engine's ``pragmas``: ``foreign_keys`` off unless asked for -- SQLite's own default,
    as a sqlite3 connection has it (litegate.connect turns it on)."""
    return {"foreign_keys": 0, **(options or {}).get("pragmas", {})}


def _check_same(engine: Engine, options: Mapping[str, Any] | None) -> None:
    if options and "pragmas" in options:
        options = {**options, "pragmas": _pragmas(options)}
    for name, value in (options or {}).items():
        have = getattr(engine.opts, name, None)
        if have != value:
            raise sqlite3.ProgrammingError(
                f"litegate option {name}={value!r} differs from {have!r}, which the open "
                f"connections to {engine.opts.path!r} share (one engine per file per process: "
                "the first connection sets its options); close them first, or pass the same"
            )


def detach(shared: Shared, timeout: float | None, *, wait: bool = True) -> None:
    """One user fewer; the last closes the engine (draining its writes, at most ``timeout``;
    ``wait=False``: only starts closing it, never blocks -- for ``__del__``)."""
    with _lock:
        shared.users -= 1
        last = shared.users <= 0
        if last and shared.key is not None and _engines.get(shared.key) is shared:
            del _engines[shared.key]
            for given in [k for k, v in _given.items() if v is shared]:
                del _given[given]
        if last and not wait and shared.key is not None:
            _closing[shared.key] = shared.engine  # (attach waits for it: _wait_closed)
    if last:
        if wait:
            shared.engine.close(timeout)
        else:
            shared.engine.start_close()


# Private in-memory connections to check arguments on: one for registrations (which change
# it: a limit set there stays), one for statements. Each guarded by its lock.
_scratch = sqlite3.Connection(":memory:", check_same_thread=False)
_scratch_lock = threading.Lock()
_compiler = sqlite3.Connection(":memory:", check_same_thread=False)
_compiler_lock = threading.Lock()
_compiled: set[str] = set()  # texts that compiled (guarded by _compiler_lock)


def check_statement(sql: str) -> None:
    """Raise what SQLite raises for ``sql`` (transaction control, which the drop-in carries out
    itself): compiled, not run, on a private in-memory connection."""
    with _compiler_lock:
        if sql in _compiled:
            return  # (every transaction sends the same few texts: compiled once each)
        _compiler.execute("EXPLAIN " + sql).fetchall()
        if len(_compiled) >= 4096:
            _compiled.clear()
        _compiled.add(sql)


def check_registration(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise what the standard module raises for these arguments (a registration is checked
    on a private in-memory connection first, so a bad one fails at the call, not later)."""
    fn: Callable[..., Any]
    with _scratch_lock:
        fn = getattr(_scratch, method)
        fn(*args, **kwargs)
