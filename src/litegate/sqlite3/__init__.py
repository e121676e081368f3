"""``import litegate.sqlite3 as sqlite3``: the standard ``sqlite3`` module, safe to share.

One :class:`Connection` may be used by every thread at once. Each thread has its own
transaction state on it, as if it had a connection of its own; every connection to a file in
this process shares one litegate engine (one write lane with group commit, one read pool), so
``database is locked`` does not happen inside the process and every wait is bounded by
``timeout``. The exception classes, ``Row``, ``Blob``, the adapters and converters and the
constants are the standard module's own objects. See docs/sqlite3.md for what differs.

>>> import litegate.sqlite3 as sqlite3
>>> con = sqlite3.connect(":memory:")
>>> con.execute("CREATE TABLE t(x)").rowcount
-1
>>> with con:
...     _ = con.execute("INSERT INTO t VALUES (1)")
>>> con.execute("SELECT x FROM t").fetchall()
[(1,)]
>>> con.close()
"""

from __future__ import annotations

import os as _os
import warnings as _warnings
import sqlite3 as _std
from collections.abc import Callable as _Callable
from collections.abc import Mapping as _Mapping
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._connection import LEGACY_TRANSACTION_CONTROL as LEGACY_TRANSACTION_CONTROL
from ._connection import Connection as Connection
from ._cursor import Cursor as Cursor

if _TYPE_CHECKING:
    from sqlite3 import *  # noqa: F403 (the constants, for type checkers; copied below)
from sqlite3 import PARSE_COLNAMES as PARSE_COLNAMES
from sqlite3 import PARSE_DECLTYPES as PARSE_DECLTYPES
from sqlite3 import Binary as Binary
from sqlite3 import Blob as Blob
from sqlite3 import DatabaseError as DatabaseError
from sqlite3 import DataError as DataError
from sqlite3 import Date as Date
from sqlite3 import DateFromTicks as DateFromTicks
from sqlite3 import Error as Error
from sqlite3 import IntegrityError as IntegrityError
from sqlite3 import InterfaceError as InterfaceError
from sqlite3 import InternalError as InternalError
from sqlite3 import NotSupportedError as NotSupportedError
from sqlite3 import OperationalError as OperationalError
from sqlite3 import PrepareProtocol as PrepareProtocol
from sqlite3 import ProgrammingError as ProgrammingError
from sqlite3 import Row as Row
from sqlite3 import Time as Time
from sqlite3 import TimeFromTicks as TimeFromTicks
from sqlite3 import Timestamp as Timestamp
from sqlite3 import TimestampFromTicks as TimestampFromTicks
from sqlite3 import Warning as Warning
from sqlite3 import adapt as adapt
from sqlite3 import adapters as adapters
from sqlite3 import complete_statement as complete_statement
from sqlite3 import converters as converters
from sqlite3 import enable_callback_tracebacks as enable_callback_tracebacks
from sqlite3 import register_adapter as register_adapter
from sqlite3 import register_converter as register_converter
from sqlite3 import sqlite_version as sqlite_version
from sqlite3 import sqlite_version_info as sqlite_version_info

apilevel = "2.0"
paramstyle = "qmark"
threadsafety = 2
"""DB-API level 2: threads may share the module and connections (a cursor is one thread's at
a time)."""

# The SQLITE_* constants of the running Python's sqlite3 (they vary by version).
_CONSTANTS = tuple(name for name in dir(_std) if name.startswith("SQLITE_"))
globals().update({name: getattr(_std, name) for name in _CONSTANTS})
_DEPRECATED = frozenset({"version", "version_info", "enable_shared_cache", "OptimizedUnicode"})


def __getattr__(name: str) -> _Any:
    """The standard module's deprecated names (``version``, ``version_info``, ...), with its
    own deprecation warnings."""
    if name in _DEPRECATED:
        with _warnings.catch_warnings(record=True) as seen:
            _warnings.simplefilter("always")
            value = getattr(_std, name)
        for w in seen:  # (re-raised as the caller's, where sqlite3 puts them)
            _warnings.warn(w.message, w.category, stacklevel=2)
        return value
    raise AttributeError(f"module 'litegate.sqlite3' has no attribute {name!r}")


def connect(
    database: str | bytes | _os.PathLike[str] | _os.PathLike[bytes],
    timeout: float = 5.0,
    detect_types: int = 0,
    isolation_level: str | None = "",
    check_same_thread: bool = True,
    factory: _Callable[..., Connection] = Connection,
    cached_statements: int = 128,
    uri: bool = False,
    *,
    autocommit: bool | int = LEGACY_TRANSACTION_CONTROL,
    litegate: _Mapping[str, _Any] | None = None,
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
    extra: dict[str, _Any] = {}
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


__all__ = (  # noqa: PLE0604 (the SQLITE_* constants are added at import)
    "Binary",
    "Blob",
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "LEGACY_TRANSACTION_CONTROL",
    "NotSupportedError",
    "OperationalError",
    "PARSE_COLNAMES",
    "PARSE_DECLTYPES",
    "PrepareProtocol",
    "ProgrammingError",
    "Row",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "Warning",
    "adapt",
    "adapters",
    "apilevel",
    "complete_statement",
    "connect",
    "converters",
    "enable_callback_tracebacks",
    "paramstyle",
    "register_adapter",
    "register_converter",
    "sqlite_version",
    "sqlite_version_info",
    "threadsafety",
    *_CONSTANTS,
)

for _cls in (Connection, Cursor):
    _cls.__module__ = "litegate.sqlite3"
del _cls
