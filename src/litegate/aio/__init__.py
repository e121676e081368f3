"""``import litegate.aio as aiosqlite``: aiosqlite's API on litegate's shared engine.

Every connection to one file in a process shares one engine (one write lane, one read pool,
group commit; shared with ``litegate.sqlite3``'s connections to it). Transaction state
belongs to the calling asyncio task: a task's transaction (implicit, as the standard module's
``isolation_level`` opens them, or explicit) holds the write lane until that task's
``commit()``/``rollback()``, and another task's ``commit()`` never commits it. Reads outside a
transaction run on the read pool, inline on the loop when an idle reader answers quickly. See
docs/aio.md for what differs from aiosqlite.
"""

from sqlite3 import (
    DatabaseError,
    Error,
    IntegrityError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Row,
    Warning,
    paramstyle,
    register_adapter,
    register_converter,
    sqlite_version,
    sqlite_version_info,
)

from .._version import __version__
from ._connection import Connection, connect
from ._cursor import Cursor

__all__ = (
    "Connection",
    "Cursor",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "Row",
    "Warning",
    "__version__",
    "connect",
    "paramstyle",
    "register_adapter",
    "register_converter",
    "sqlite_version",
    "sqlite_version_info",
)
