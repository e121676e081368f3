"""Rows of one INSERT statement, written together: a group's one-row INSERTs of the same text
sent as one multi-row INSERT -- one round trip to the leader for all of them.

On a dqlite cluster every statement is a round trip to the leader (0.4-0.5 ms measured on
loopback, most of it the client's own work), so a group of 40 one-row INSERTs spent ~20 ms
in round trips before its one COMMIT. Each caller still gets what its own statement would
have given -- ``rowcount`` 1 and the ``lastrowid`` of its row -- and that is *proven*, not
assumed, or the rows are not written together:

- the statement is a plain ``INSERT INTO t(cols) VALUES (?, …)`` (no conflict clause, no
  ``RETURNING``, no ``SELECT``, positional parameters only);
- ``t`` is an ordinary rowid table (not ``WITHOUT ROWID``, not virtual), with no trigger, and
  the columns named do not include its rowid (an ``INTEGER PRIMARY KEY``, ``rowid``, ``oid``,
  ``_rowid_``): SQLite then gives each new row the table's largest rowid plus one, in order;
- after the statement, ``changes()`` is the number of rows and the last rowid is the largest
  rowid before it (read in the same transaction, with the schema's version) plus that number.
  If not (an ``AUTOINCREMENT`` table whose sequence is ahead of its rows, the largest rowid
  reached), the caller rolls the group back, writes it row by row, and never joins that
  statement's rows again.

The facts about a table are cached per schema version (a changed schema reads them again).
Used by the writer thread only.
"""

from __future__ import annotations

import re
from typing import Any

from .._statements import Result
from ._link import Link

__all__ = ("MAX_ROWS", "RowsWriter", "Unproven", "insert_shape")

MAX_ROWS = 500
"""Most rows in one statement (and at most SQLite's default 32,766 parameters)."""
_MAX_PARAMS = 32_766

_NAME = r'(?:"(?:[^"]|"")+"|\[[^\]]+\]|`[^`]+`|[A-Za-z_][A-Za-z0-9_$]*)'
_INSERT = re.compile(
    rf"\s*INSERT\s+INTO\s+(?:({_NAME})\s*\.\s*)?({_NAME})\s*\(([^()]*)\)\s*VALUES\s*"
    r"(\(\s*\?(?:\s*,\s*\?)*\s*\))\s*;?\s*",
    re.I,
)
_ROWID_NAMES = frozenset({"rowid", "oid", "_rowid_"})
_WITHOUT_ROWID = re.compile(r"\bWITHOUT\s+ROWID\b", re.I)


def _unquote(name: str) -> str:
    if name[:1] in ('"', "[", "`"):
        return name[1:-1].replace('""', '"')
    return name


def insert_shape(sql: str) -> tuple[str, str, tuple[str, ...], str, int] | None:
    """For a plain one-row ``INSERT INTO t(cols) VALUES (?, …)``: (schema, table, columns,
    the text before ``VALUES``' tuple, parameters per row); else None."""
    m = _INSERT.fullmatch(sql)
    if m is None:
        return None
    schema = _unquote(m.group(1)) if m.group(1) else "main"
    columns = tuple(_unquote(c.strip()).lower() for c in m.group(3).split(","))
    n = m.group(4).count("?")
    if n != len(columns) or n == 0:
        return None
    head = sql[: m.start(4)]
    return schema, _unquote(m.group(2)), columns, head, n


class Unproven(Exception):
    """The rows were written but their rowids could not be proven (see the module docstring):
    roll the group back and write them one by one (the statement is refused from now on)."""


class RowsWriter:
    """Writes runs of one-row INSERTs as multi-row ones (see the module docstring)."""

    def __init__(self) -> None:
        self._facts: dict[tuple[str, str], tuple[int, str | None]] = {}  # table: version, alias
        self._refused: set[str] = set()  # statements whose rows are never written together

    def joinable(self, sql: str, params: Any) -> bool:
        """May this job's statement be written with others of the same text?"""
        if sql in self._refused or type(params) not in (tuple, list):
            return False
        shape = insert_shape(sql)
        return shape is not None and len(params) == shape[4]

    def refuse(self, sql: str) -> None:
        self._refused.add(sql)

    def write(self, link: Link, sql: str, rows: list[Any]) -> list[Result] | None:
        """Insert ``rows`` (each one's parameters) with one statement per :data:`MAX_ROWS`:
        each row's :class:`Result`; None when the statement may not be used for them (nothing
        was written: write them one by one). Raises :class:`Unproven`, what a statement raised
        (a chunk before it may have been written: roll back, then write them one by one to
        tell which row failed) and :class:`~._link.LinkLost`."""
        shape = insert_shape(sql)
        assert shape is not None
        schema, table, columns, head, n = shape
        if schema.lower() != "main":
            self._refused.add(sql)
            return None
        found = link.execute(
            "SELECT (SELECT schema_version FROM pragma_schema_version), "
            f"(SELECT max(rowid) FROM {_q(table)})"
        ).fetchone()
        version, top = int(found[0]), int(found[1] or 0)
        alias = self._alias(link, schema, table, version)
        if alias is None or alias in columns or _ROWID_NAMES.intersection(columns):
            self._refused.add(sql)
            return None
        per = max(1, min(MAX_ROWS, _MAX_PARAMS // n))
        results: list[Result] = []
        one = "(" + ", ".join("?" * n) + ")"
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            cur = link.execute(head + ", ".join([one] * len(chunk)), [v for r in chunk for v in r])
            if cur.rowcount != len(chunk) or cur.lastrowid != top + len(chunk):
                self._refused.add(sql)
                raise Unproven(sql)
            results.extend(_result(top + i + 1) for i in range(len(chunk)))
            top += len(chunk)
        return results

    def _alias(self, link: Link, schema: str, table: str, version: int) -> str | None:
        """The table's rowid alias ("" if none) when its rows may be written together; None
        if they may not (not an ordinary rowid table, or it has triggers)."""
        key = (schema, table.lower())
        cached = self._facts.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        master = "sqlite_master"
        row = link.execute(
            f"SELECT sql, (SELECT count(*) FROM {master} WHERE type = 'trigger' "
            f"AND tbl_name = ? COLLATE NOCASE) FROM {master} WHERE type = 'table' "
            "AND name = ? COLLATE NOCASE",
            (table, table),  # (not ?1 twice: the driver counts the marks, not the numbers)
        ).fetchone()
        alias: str | None = None
        if row is not None and row[0] and not row[1]:
            ddl = str(row[0])
            if not _WITHOUT_ROWID.search(ddl) and not ddl.lstrip().upper().startswith(
                "CREATE VIRTUAL"
            ):
                pks = [
                    (str(r[0]).lower(), str(r[1]).upper())
                    for r in link.execute(
                        "SELECT name, type, pk FROM pragma_table_info(?) WHERE pk > 0",
                        (table,),
                    ).fetchall()
                ]
                alias = pks[0][0] if len(pks) == 1 and pks[0][1] == "INTEGER" else ""
        self._facts[key] = (version, alias)
        return alias


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _result(rowid: int) -> Result:
    return Result(1, rowid, [])
