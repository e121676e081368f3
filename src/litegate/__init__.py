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

from ._async_transaction import AsyncSavepoint as AsyncSavepoint
from ._async_transaction import AsyncSnapshot as AsyncSnapshot
from ._async_transaction import AsyncTransaction as AsyncTransaction
from ._config import ConnectOptions as ConnectOptions
from ._config import Options as Options
from ._database import AsyncDatabase as AsyncDatabase
from ._database import Database as Database
from ._database import connect as connect
from ._database import connect_async as connect_async
from ._errors import Busy as Busy
from ._errors import Closed as Closed
from ._errors import Error as Error
from ._errors import MigrationError as MigrationError
from ._errors import Misuse as Misuse
from ._errors import OutcomeUnknown as OutcomeUnknown
from ._errors import PoolTimeout as PoolTimeout
from ._errors import QueryTimeout as QueryTimeout
from ._errors import Refused as Refused
from ._errors import RolledBack as RolledBack
from ._errors import Timeout as Timeout
from ._errors import Unavailable as Unavailable
from ._errors import WriteTimeout as WriteTimeout
from ._migrations import Migration as Migration
from ._statements import Result as Result
from ._stats import Stats as Stats
from ._transaction import Savepoint as Savepoint
from ._transaction import Snapshot as Snapshot
from ._transaction import Transaction as Transaction
from ._types import DEFAULT as DEFAULT
from ._types import Params as Params
from ._types import UseDefault as UseDefault
from ._version import __version__ as __version__

__all__ = (
    "AsyncDatabase",
    "AsyncSavepoint",
    "AsyncSnapshot",
    "AsyncTransaction",
    "Busy",
    "Closed",
    "ConnectOptions",
    "DEFAULT",
    "Database",
    "Error",
    "Migration",
    "MigrationError",
    "Misuse",
    "Options",
    "OutcomeUnknown",
    "Params",
    "PoolTimeout",
    "QueryTimeout",
    "Refused",
    "Result",
    "RolledBack",
    "Row",
    "Savepoint",
    "Snapshot",
    "Stats",
    "Timeout",
    "Transaction",
    "Unavailable",
    "UseDefault",
    "WriteTimeout",
    "__version__",
    "connect",
    "connect_async",
)

# Exported classes say they live in `litegate` (what users import), as httpx does.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("litegate."):
        _obj.__module__ = "litegate"
del _name, _obj

if _os.environ.get("LITEGATE_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off"):
    from . import debug as _debug  # noqa: F401  (importing it enables the misuse detector)
