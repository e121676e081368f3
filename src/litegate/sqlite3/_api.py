"""``connect``, and the standard module's deprecated names."""

from __future__ import annotations

import os
import sqlite3 as _std
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ._connection import Connection
from ._core import LEGACY_TRANSACTION_CONTROL

__all__ = ("CONSTANTS", "connect", "deprecated")

CONSTANTS = tuple(name for name in dir(_std) if name.startswith("SQLITE_"))
"""The SQLITE_* constants of the running Python's sqlite3 (they vary by version)."""
_DEPRECATED = frozenset({"version", "version_info", "enable_shared_cache", "OptimizedUnicode"})


def deprecated(name: str, stacklevel: int) -> Any:
    """``name`` of the standard module; the warnings it gives are re-raised ``stacklevel``
    frames up (the caller's line, where sqlite3 puts them)."""
    if name not in _DEPRECATED:
        raise AttributeError(f"module 'litegate.sqlite3' has no attribute {name!r}")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        value = getattr(_std, name)
    for w in seen:
        warnings.warn(w.message, w.category, stacklevel=stacklevel)
    return value


def connect(
    database: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    timeout: float = 5.0,
    detect_types: int = 0,
    isolation_level: str | None = "",
    check_same_thread: bool = True,
    factory: Callable[..., Connection] = Connection,
    cached_statements: int = 128,
    uri: bool = False,
    *,
    autocommit: bool | int = LEGACY_TRANSACTION_CONTROL,
    litegate: Mapping[str, Any] | None = None,
) -> Connection:
    """Open a connection that every thread may share.

    The arguments are the standard module's. ``timeout`` bounds every wait (for the write lane,
    a reader, or another process's lock); ``check_same_thread`` and ``cached_statements`` are
    accepted and have no effect (the connection is safe to share; the engine caches its own
    statements). ``litegate``: options of the engine (``synchronous``, ``readers``, ... as
    :func:`litegate.connect`), taken by the first connection to the file; a later one that
    asks for different values raises ``ProgrammingError``.

    Blocks while the file is opened (at most ``timeout`` when another process holds it).
    """
    if not callable(factory):
        raise TypeError("factory must be callable (a litegate.sqlite3.Connection subclass)")
    extra: dict[str, Any] = {}
    if autocommit != LEGACY_TRANSACTION_CONTROL:
        extra["autocommit"] = autocommit
    if litegate is not None:
        extra["litegate"] = litegate
    return factory(
        database,
        timeout=timeout,
        detect_types=detect_types,
        isolation_level=isolation_level,
        check_same_thread=check_same_thread,
        factory=factory,
        cached_statements=cached_statements,
        uri=uri,
        **extra,
    )
