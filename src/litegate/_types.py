"""Type aliases shared by the facades and the engine, and the typed "use the default" sentinel.

``DEFAULT`` is a one-member :class:`enum.Enum` (the sentinel style PEP 484 recommends, as
httpx's ``USE_CLIENT_DEFAULT``): a type checker narrows ``timeout is DEFAULT`` properly, so every
``timeout: Wait = DEFAULT`` parameter is checked, where ``DEFAULT: Any`` checked nothing.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, TypeAlias, TypeVar

__all__ = (
    "DEFAULT",
    "Args",
    "Bound",
    "ExcType",
    "Fn",
    "ParamSeq",
    "Params",
    "RowFactory",
    "Limit",
    "Tb",
    "UseDefault",
    "Wait",
)


class UseDefault(enum.Enum):
    """The type of :data:`DEFAULT`: "argument not given, use the database's own setting"."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = UseDefault.DEFAULT
"""Pass (or leave) this to use the database's configured timeout or time limit."""

Params: TypeAlias = Sequence[Any] | dict[str, Any]
"""Statement parameters: a sequence for ``?`` placeholders, a dict for ``:name`` ones."""

ParamSeq: TypeAlias = Iterable[Params]
"""``executemany``'s parameter sets."""

Wait: TypeAlias = float | None | UseDefault
"""A per-call ``timeout`` in seconds: a number, ``None`` (no bound) or :data:`DEFAULT`."""

Limit: TypeAlias = float | None | UseDefault
"""A per-call ``time_limit`` in seconds: a number, ``None`` (no limit) or :data:`DEFAULT`."""

RowFactory: TypeAlias = Callable[[sqlite3.Cursor, tuple[Any, ...]], Any]
"""sqlite3's ``row_factory`` signature."""

Bound: TypeAlias = float | None
"""A resolved bound in seconds (``None``: no bound), as the engine receives it."""

_T = TypeVar("_T")

Fn: TypeAlias = Callable[..., _T]
"""A job function ``fn(conn, *args) -> T`` (``Fn[T]``)."""

Args: TypeAlias = tuple[Any, ...]
"""The extra positional arguments of a job function ``fn(conn, *args)``."""

ExcType: TypeAlias = type[BaseException] | None
Tb: TypeAlias = TracebackType | None
"""``__exit__`` / ``__aexit__`` parameter types, so those signatures fit on one line."""
