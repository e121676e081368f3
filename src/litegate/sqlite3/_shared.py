"""One engine per database file per process, shared by every drop-in connection to it, and
the user functions registered on it.

=======================  =================================================================
shared field             guard
=======================  =================================================================
``_engines``             ``_lock`` (connect and close of any drop-in connection)
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
from collections.abc import Callable, Mapping
from typing import Any, cast

from .. import _config
from .._engine import Engine, open_engine

__all__ = ("Hooks", "Shared", "attach", "check_registration", "detach")

_lock = threading.Lock()
_engines: dict[tuple[str, int], Shared] = {}


class Hooks:
    """The functions, aggregates and collations registered through any drop-in connection to
    one engine. SQLite keeps them per connection; the engine has several (the writer, the
    readers), so each is brought up to date lazily, by whoever runs a statement on it next
    (that caller owns the connection at that moment)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.version = 0
        # id(conn) -> (items applied, conn): the connection is kept to tell a reused id apart
        # (engine connections are not weak-referenceable; a closed one is dropped in sync)
        self._applied: dict[int, tuple[int, sqlite3.Connection]] = {}

    def add(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        with self._lock:
            self._items.append((method, args, kwargs))
            self.version = len(self._items)

    def sync(self, conn: sqlite3.Connection) -> None:
        """Apply to ``conn`` what was registered since it last was (the caller owns it)."""
        with self._lock:
            seen = self._applied.get(id(conn))
            start = seen[0] if seen is not None and seen[1] is conn else 0
            todo = self._items[start:]
            if not todo:
                return
            if len(self._applied) > 64:
                self._forget_closed()
            self._applied[id(conn)] = (len(self._items), conn)
        for method, args, kwargs in todo:
            getattr(conn, method)(*args, **kwargs)

    def _forget_closed(self) -> None:
        for key, (_, conn) in list(self._applied.items()):
            try:
                conn.total_changes  # noqa: B018 (raises once closed)
            except sqlite3.ProgrammingError:
                del self._applied[key]


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
    if uri:
        return path
    return os.path.realpath(path)


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
    name = _key(path, uri)
    key = None if name is None else (name, detect_types)
    if key is not None:
        with _lock:
            shared = _engines.get(key)
            if shared is not None and not shared.engine.closed:
                _check_same(shared.engine, options)
                shared.users += 1
                return shared
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
    opts = _config.make_options(path, cast(_config.ConnectOptions, fields))
    engine = open_engine(opts)  # (blocks: outside the lock)
    if key is None:
        return Shared(None, engine)
    with _lock:
        shared = _engines.get(key)
        if shared is None or shared.engine.closed:
            shared = _engines[key] = Shared(key, engine)
            return shared
        shared.users += 1  # another thread opened it meanwhile: use theirs
    engine.close()
    return shared


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
    if last:
        if wait:
            shared.engine.close(timeout)
        else:
            shared.engine.start_close()


_scratch = sqlite3.Connection(":memory:", check_same_thread=False)
_scratch_lock = threading.Lock()


def check_registration(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise what the standard module raises for these arguments (a registration is checked
    on a private in-memory connection first, so a bad one fails at the call, not later)."""
    fn: Callable[..., Any]
    with _scratch_lock:
        fn = getattr(_scratch, method)
        fn(*args, **kwargs)
