from __future__ import annotations

import sqlite3

import pytest

import litegate

STEPS: list[litegate.Migration] = [
    "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT)",
    "ALTER TABLE docs ADD COLUMN status TEXT DEFAULT 'new'; CREATE INDEX docs_status ON docs(status);",
    lambda conn: conn.execute("INSERT INTO docs(body) VALUES ('seed')"),
]


def test_applies_in_order_and_only_once(db_path: str, readers: object) -> None:
    with litegate.connect(db_path, readers=readers) as db:  # type: ignore[arg-type]
        assert db.migrate(STEPS[:1]) == 1
        assert db.migrate(STEPS) == 3
        assert db.migrate(STEPS) == 3
        assert db.query_value("SELECT count(*) FROM docs") == 1
        assert db.query_value("PRAGMA user_version") == 3


def test_failing_step_applies_nothing(db_path: str) -> None:
    with litegate.connect(db_path) as db:
        db.migrate(STEPS[:1])
        broken = [*STEPS[:1], "CREATE TABLE extra(x)", "INSERT INTO missing VALUES (1)"]
        with pytest.raises(litegate.MigrationError, match="migration 3 of 3 failed") as info:
            db.migrate(broken)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert db.query_value("PRAGMA user_version") == 1
        assert db.query_value("SELECT count(*) FROM sqlite_schema WHERE name = 'extra'") == 0


def test_database_newer_than_the_code(db_path: str) -> None:
    with litegate.connect(db_path) as db:
        db.migrate(STEPS)
        with pytest.raises(litegate.MigrationError, match="newer"):
            db.migrate(STEPS[:2])


def test_a_string_is_not_a_list_of_steps(db_path: str) -> None:
    with litegate.connect(db_path) as db, pytest.raises(TypeError):
        db.migrate("CREATE TABLE t(x)")  # (a str is a Sequence to a type checker too)
