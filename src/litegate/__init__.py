"""litegate: one SQLite database, shared safely and fast by threads, tasks and processes."""

from __future__ import annotations

from ._errors import Busy as Busy
from ._errors import Closed as Closed
from ._errors import Error as Error
from ._errors import MigrationError as MigrationError
from ._errors import Misuse as Misuse
from ._errors import PoolTimeout as PoolTimeout
from ._errors import QueryTimeout as QueryTimeout
from ._errors import Timeout as Timeout
from ._errors import WriteTimeout as WriteTimeout
from ._version import __version__ as __version__

__all__ = (
    "Busy",
    "Closed",
    "Error",
    "MigrationError",
    "Misuse",
    "PoolTimeout",
    "QueryTimeout",
    "Timeout",
    "WriteTimeout",
    "__version__",
)
