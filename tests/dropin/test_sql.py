"""``litegate.sqlite3._sql``: what a statement is, read from its text."""

from __future__ import annotations

import pytest

from litegate.sqlite3 import _sql


@pytest.mark.parametrize(
    ("sql", "want"),
    [
        ("INSERT INTO t VALUES (1)", True),
        ("  replace into t values (1)", True),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", True),
        (
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5) "
            "INSERT INTO t(v) SELECT i FROM c",
            True,
        ),
        ("WITH a AS (SELECT 1), b AS MATERIALIZED (SELECT 2) REPLACE INTO t VALUES (1, 2)", True),
        ("WITH x AS (SELECT 'it''s ) insert') INSERT INTO t SELECT * FROM x", True),
        ("WITH [a b] AS (SELECT 1) /* (insert */ INSERT INTO t SELECT * FROM [a b]", True),
        ("WITH x AS (SELECT 1) -- (\n INSERT INTO t SELECT 1", True),
        ("WITH x AS (SELECT 'insert') UPDATE t SET v = 1", False),
        ('WITH "insert" AS (SELECT 1) DELETE FROM t WHERE id IN "insert"', False),
        ("/* c */ WITH x AS (SELECT 1) -- insert\n SELECT * FROM x", False),
        ("UPDATE t SET v = 1", False),
        ("CREATE TABLE x(y)", False),
        ("SELECT 'INSERT'", False),
    ],
)
def test_inserts_tells_the_statements_that_set_the_last_inserted_row(sql: str, want: bool) -> None:
    assert _sql.inserts(sql) is want
