from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import litegate
from litegate._engine import live

# Every test body that can runs in every read mode.
READ_MODES = [
    pytest.param(2, id="readers=2"),
    pytest.param("per-thread", id="per-thread"),
    pytest.param(0, id="readers=0"),
]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "test.db")


@pytest.fixture(params=READ_MODES)
def readers(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture
def db(db_path: str, readers: Any) -> Iterator[litegate.Database]:
    database = litegate.connect(db_path, readers=readers)
    database.executescript(
        """
        CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, qty INT DEFAULT 0);
        CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL CHECK (balance >= 0));
        """
    )
    try:
        yield database
    finally:
        database.close()


@pytest.fixture(autouse=True)
def _no_leaked_engines() -> Iterator[None]:
    """Fail a test that leaves a database open (instead of silently closing it)."""
    before = set(map(id, live()))
    threads_before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [e for e in live() if id(e) not in before]
    for e in leaked:
        e.close(timeout=5)
    assert not leaked, f"test left {len(leaked)} litegate database(s) open"
    writers = [
        t
        for t in threading.enumerate()
        if t.name.startswith("litegate-writer") and t.ident not in threads_before
    ]
    for t in writers:
        t.join(5)
    assert not [t for t in writers if t.is_alive()], "a writer thread outlived its database"
