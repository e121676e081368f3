"""litegate: one SQLite database, shared safely and fast by threads, tasks and processes.

>>> import litegate
>>> with litegate.connect(":memory:") as db:
...     _ = db.execute("CREATE TABLE t(x)")
...     _ = db.execute("INSERT INTO t VALUES (?)", (1,))
...     db.query_value("SELECT x FROM t")
1
"""

from __future__ import annotations

import os as _os
from sqlite3 import Row as Row

from ._async import AsyncDatabase as AsyncDatabase
from ._async import connect_async as connect_async
from ._async_transaction import AsyncSavepoint as AsyncSavepoint
from ._async_transaction import AsyncSnapshot as AsyncSnapshot
from ._async_transaction import AsyncTransaction as AsyncTransaction
from ._config import DEFAULT as DEFAULT
from ._config import Options as Options
from ._connection import Result as Result
from ._database import Database as Database
from ._database import connect as connect
from ._errors import Busy as Busy
from ._errors import Closed as Closed
from ._errors import Error as Error
from ._errors import MigrationError as MigrationError
from ._errors import Misuse as Misuse
from ._errors import PoolTimeout as PoolTimeout
from ._errors import QueryTimeout as QueryTimeout
from ._errors import Timeout as Timeout
from ._errors import WriteTimeout as WriteTimeout
from ._migrations import Migration as Migration
from ._stats import Stats as Stats
from ._transaction import Savepoint as Savepoint
from ._transaction import Snapshot as Snapshot
from ._transaction import Transaction as Transaction
from ._version import __version__ as __version__

__all__ = (
    "AsyncDatabase",
    "AsyncSavepoint",
    "AsyncSnapshot",
    "AsyncTransaction",
    "Busy",
    "Closed",
    "DEFAULT",
    "Database",
    "Error",
    "Migration",
    "MigrationError",
    "Misuse",
    "Options",
    "PoolTimeout",
    "QueryTimeout",
    "Result",
    "Row",
    "Savepoint",
    "Snapshot",
    "Stats",
    "Timeout",
    "Transaction",
    "WriteTimeout",
    "__version__",
    "connect",
    "connect_async",
)

for _name in (
    "AsyncDatabase",
    "AsyncSavepoint",
    "AsyncSnapshot",
    "AsyncTransaction",
    "Busy",
    "Closed",
    "Database",
    "Error",
    "MigrationError",
    "Misuse",
    "Options",
    "PoolTimeout",
    "QueryTimeout",
    "Result",
    "Savepoint",
    "Snapshot",
    "Stats",
    "Timeout",
    "Transaction",
    "WriteTimeout",
):
    globals()[_name].__module__ = "litegate"
del _name

if _os.environ.get("LITEGATE_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off"):
    from . import debug as _debug  # noqa: F401  (importing it enables the misuse detector)
