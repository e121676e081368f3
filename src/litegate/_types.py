"""Type aliases shared by the facades and the engine, and the typed "use the default" sentinel.

``DEFAULT`` is a one-member :class:`enum.Enum` (the sentinel style PEP 484 recommends, as
httpx's ``USE_CLIENT_DEFAULT``): a type checker narrows ``timeout is DEFAULT`` properly, so every
``timeout: Seconds = DEFAULT`` parameter is checked, where ``DEFAULT: Any`` checked nothing.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias

__all__ = ("DEFAULT", "Params", "RowFactory", "Seconds", "UseDefault")


class UseDefault(enum.Enum):
    """The type of :data:`DEFAULT`: "argument not given, use the database's own setting"."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = UseDefault.DEFAULT
"""Pass (or leave) this to use the database's configured timeout or time limit."""

Params: TypeAlias = Sequence[Any] | dict[str, Any]
"""Statement parameters: a sequence for ``?`` placeholders, a dict for ``:name`` ones."""

Seconds: TypeAlias = float | None | UseDefault
"""A per-call bound in seconds: a number, ``None`` (no bound) or :data:`DEFAULT`."""

RowFactory: TypeAlias = Callable[[sqlite3.Cursor, tuple[Any, ...]], Any]
"""sqlite3's ``row_factory`` signature."""
