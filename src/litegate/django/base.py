"""The Django database backend ``litegate.django`` (Django loads ``DatabaseWrapper`` from here).

It subclasses Django's own SQLite backend and changes what is needed to run it on
:mod:`litegate.sqlite3`: the DB-API module, the cursor class (Django's is a subclass of the
standard module's cursor), ``BEGIN IMMEDIATE`` for atomic blocks, and foreign-key checks
asked of the shared engine when it opens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import tee
from typing import Any

from django.db.backends.sqlite3 import base as sqlite_base
from django.utils.asyncio import async_unsafe

from .. import sqlite3 as Database

__all__ = ("Database", "DatabaseWrapper", "LitegateCursorWrapper")


class LitegateCursorWrapper(Database.Cursor):
    """Django's ``SQLiteCursorWrapper`` on a litegate cursor: Django's ``format``/``pyformat``
    placeholders turned into ``qmark``/``named`` ones."""

    def execute(self, query: str, params: Any = None) -> Any:
        if params is None:
            return super().execute(query)
        param_names = list(params) if isinstance(params, Mapping) else None
        return super().execute(self.convert_query(query, param_names=param_names), params)

    def executemany(self, query: str, param_list: Iterable[Any]) -> Any:
        peekable, param_list = tee(iter(param_list))
        params = next(peekable, None)
        param_names = list(params) if params and isinstance(params, Mapping) else None
        return super().executemany(self.convert_query(query, param_names=param_names), param_list)

    def convert_query(self, query: str, *, param_names: list[str] | None = None) -> str:
        if param_names is None:
            return sqlite_base.FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")  # type: ignore[no-any-return]
        return query % {name: f":{name}" for name in param_names}


class DatabaseWrapper(sqlite_base.DatabaseWrapper):  # type: ignore[misc]
    """Django's SQLite ``DatabaseWrapper`` on :mod:`litegate.sqlite3`."""

    display_name = "SQLite (litegate)"
    Database = Database

    def get_connection_params(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = super().get_connection_params()
        # Atomic blocks take the write lane at once (litegate's transactions are immediate
        # anyway; this makes Django's BEGIN say so).
        self.transaction_mode = "IMMEDIATE"
        options = dict(kwargs.pop("litegate", None) or {})
        options["pragmas"] = {"foreign_keys": 1, **options.get("pragmas", {})}
        kwargs["litegate"] = options
        return kwargs

    @async_unsafe  # type: ignore[untyped-decorator,unused-ignore]
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        conn = Database.connect(**conn_params)
        sqlite_base.register_functions(conn)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA legacy_alter_table = OFF")
        for command in self.init_commands:
            if command := command.strip():
                conn.execute(command)
        return conn

    def create_cursor(self, name: str | None = None) -> Any:
        return self.connection.cursor(factory=LitegateCursorWrapper)
