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

import sqlite3 as _std
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
from sqlite3 import Timestamp as Timestamp  # type: ignore[attr-defined,unused-ignore]
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
from typing import Any as _Any

from ._api import CONSTANTS, deprecated
from ._api import connect as connect
from ._connection import Connection as Connection
from ._core import LEGACY_TRANSACTION_CONTROL as LEGACY_TRANSACTION_CONTROL
from ._core import Cursor as Cursor

apilevel = "2.0"
paramstyle = "qmark"
threadsafety = 2
"""DB-API level 2: threads may share the module and connections (a cursor is one thread's at
a time)."""

globals().update({name: getattr(_std, name) for name in CONSTANTS})


def __getattr__(name: str) -> _Any:
    """The standard module's deprecated names (``version``, ``version_info``, ...), with its
    own deprecation warnings. (To a type checker, the SQLITE_* constants copied above are
    reached through this: typed ``Any``.)"""
    return deprecated(name, 3)


__all__ = (
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
    *CONSTANTS,
)

for _cls in (Connection, Cursor):
    _cls.__module__ = "litegate.sqlite3"
del _cls
