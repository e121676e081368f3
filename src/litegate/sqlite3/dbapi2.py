"""``litegate.sqlite3.dbapi2``: the same module, under the name ``sqlite3.dbapi2`` has."""

from __future__ import annotations

from typing import Any

from litegate.sqlite3 import *  # noqa: F403
from litegate.sqlite3 import __all__ as __all__
from litegate.sqlite3._api import deprecated


def __getattr__(name: str) -> Any:
    return deprecated(name, 3)
