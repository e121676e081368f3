"""Tortoise ORM on ``litegate.aio`` put in aiosqlite's place (issue 13, point 4).

Tortoise's SQLite backend does ``import aiosqlite`` at module top
(``tortoise/backends/sqlite/client.py``; ``tortoise/contrib/sqlite/regex.py`` too, for a type
only). The ``on_litegate`` fixture points both modules' ``aiosqlite`` at ``litegate.aio`` for
the test (monkeypatch undoes it); neither Tortoise nor litegate is changed. Every test checks
that the connections Tortoise opened are ``litegate.aio`` ones.

Tortoise's ``create_connection`` sets ``self._connection._conn.row_factory = sqlite3.Row``
(aiosqlite's private ``sqlite3.Connection``): ``litegate.aio`` answers ``_conn`` with the
connection's own factories, which is what Tortoise means. One thing stands between Tortoise and
``litegate.aio``, which a test below pins:

- Tortoise's default pragmas include ``journal_size_limit=16384``; the shared engine has
  64 MiB and refuses another value from one connection (``NotSupportedError``). The URL asks
  for the engine's value (:data:`ENGINE_JOURNAL_LIMIT`), as a Tortoise user can.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import tortoise.backends.sqlite.client as sqlite_client
import tortoise.contrib.sqlite.regex as sqlite_regex
from tortoise import fields
from tortoise.context import TortoiseContext
from tortoise.models import Model
from tortoise.transactions import in_transaction

import litegate.aio
from litegate._config import DEFAULT_JOURNAL_SIZE_LIMIT

ENGINE_JOURNAL_LIMIT = f"?journal_size_limit={DEFAULT_JOURNAL_SIZE_LIMIT}"
"""Tortoise passes a sqlite URL's parameters as pragmas: ask for what the engine has."""

TASKS = 32


class Account(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50)
    balance = fields.IntField()

    class Meta:
        app = "models"


class Counter(Model):
    id = fields.IntField(primary_key=True)
    value = fields.IntField()

    class Meta:
        app = "models"


@pytest.fixture
def on_litegate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tortoise's sqlite backend on ``litegate.aio``."""
    monkeypatch.setattr(sqlite_client, "aiosqlite", litegate.aio)
    monkeypatch.setattr(sqlite_regex, "aiosqlite", litegate.aio)


@asynccontextmanager
async def _orm(
    path: Path, names: Sequence[str] = ("default",), query: str = ENGINE_JOURNAL_LIMIT
) -> AsyncIterator[TortoiseContext]:
    """Tortoise initialised on ``path`` (one Tortoise connection per name, all to that
    file), its tables created; its connections closed at the end."""
    url = f"sqlite://{path}{query}"
    config = {
        "connections": dict.fromkeys(names, url),
        "apps": {"models": {"models": [__name__], "default_connection": names[0]}},
    }
    async with TortoiseContext() as ctx:
        await ctx.init(config=config)
        await ctx.generate_schemas()
        yield ctx


def _on_litegate(ctx: TortoiseContext, names: Sequence[str] = ("default",)) -> None:
    """Every Tortoise connection of ``names`` is a ``litegate.aio`` one, on one engine."""
    conns = [ctx.connections.get(name)._connection for name in names]
    assert all(isinstance(c, litegate.aio.Connection) for c in conns), conns
    assert len({id(c.engine) for c in conns}) == 1


def _rows(path: Path, sql: str) -> list[Any]:
    """``sql``'s rows as the file has them, read by the standard module (committed rows
    only; call it in a thread)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _balances(path: Path) -> dict[str, int]:
    return dict(_rows(path, "SELECT name, balance FROM account"))


async def test_crud_and_transactions(tmp_path: Path, on_litegate: None) -> None:
    path = tmp_path / "tortoise.db"
    async with _orm(path) as ctx:
        # create, read
        alice = await Account.create(name="alice", balance=100)
        bob = await Account.create(name="bob", balance=100)
        _on_litegate(ctx)
        assert (alice.id, bob.id) == (1, 2)
        assert (await Account.get(name="bob")).balance == 100
        assert [a.name for a in await Account.all().order_by("id")] == ["alice", "bob"]
        assert await Account.filter(balance__gte=100).count() == 2
        # update: an instance, then a queryset (Tortoise's row count: total_changes' delta)
        alice.balance = 90
        await alice.save()
        assert await Account.filter(name="bob").update(balance=110) == 1
        assert await Account.all().order_by("id").values("name", "balance") == [
            {"name": "alice", "balance": 90},
            {"name": "bob", "balance": 110},
        ]
        # delete: a queryset, then an instance
        carol = await Account.create(name="carol", balance=5)
        assert await Account.filter(name="carol").delete() == 1
        assert not await Account.exists(id=carol.id)
        dave = await Account.create(name="dave", balance=1)
        await dave.delete()
        assert await Account.all().count() == 2
        assert await asyncio.to_thread(_balances, path) == {"alice": 90, "bob": 110}

        # a transaction that commits
        async with in_transaction():
            a = await Account.get(name="alice")
            b = await Account.get(name="bob")
            a.balance -= 40
            b.balance += 40
            await a.save()
            await b.save()
        assert await asyncio.to_thread(_balances, path) == {"alice": 50, "bob": 150}

        # a transaction that rolls back on an exception; inside, it sees its own writes
        with pytest.raises(RuntimeError, match="boom"):
            async with in_transaction():
                await Account.filter(name="alice").update(balance=0)
                await Account.create(name="eve", balance=7)
                assert (await Account.get(name="alice")).balance == 0
                assert await Account.all().count() == 3
                raise RuntimeError("boom")
        assert await asyncio.to_thread(_balances, path) == {"alice": 50, "bob": 150}
        assert await Account.all().count() == 2

        # a nested transaction (a savepoint) rolled back inside an outer one that commits
        async with in_transaction():
            await Account.filter(name="alice").update(balance=60)
            with pytest.raises(RuntimeError, match="inner"):
                async with in_transaction():
                    await Account.filter(name="bob").update(balance=0)
                    raise RuntimeError("inner")
        assert await asyncio.to_thread(_balances, path) == {"alice": 60, "bob": 150}


@pytest.mark.parametrize("connections", [1, 4], ids=["one-connection", "four-connections"])
async def test_concurrent_read_modify_write(
    tmp_path: Path, on_litegate: None, connections: int
) -> None:
    """32 tasks each add 1 to one counter row, read then write inside ``in_transaction()``.

    With one Tortoise connection, Tortoise's own lock runs the transactions one at a time.
    With four (four clients to the same file, each with its lock and its own aiosqlite
    connection; a task uses ``i % 4``), four transactions at once meet in SQLite: on
    aiosqlite, four writers to one file, their deferred ``BEGIN`` upgrading to a write after
    the read; on ``litegate.aio``, one engine whose write lane each transaction holds from its
    ``BEGIN`` (immediate). A lost update shows as a final count below 32.

    Measured when written: on aiosqlite (the redirect removed) the four-connection case fails
    with 21-26 of 32 "database is locked"; on litegate with Tortoise's ``BEGIN`` skipped
    (transactions broken) it ends at 9-11 of 32. The one-connection case cannot see broken
    transactions (Tortoise's lock serialises them): it checks that Tortoise's way of running
    them works on ``litegate.aio``, without error or hang."""
    path = tmp_path / "counter.db"
    names = [f"c{i}" for i in range(connections)]
    async with _orm(path, names) as ctx:
        counter = await Counter.create(value=0)
        for name in names:  # (each client opens its connection)
            assert await Counter.all().using_db(ctx.connections.get(name)).count() == 1
        _on_litegate(ctx, names)

        async def add_one(i: int) -> None:
            async with in_transaction(names[i % connections]) as conn:
                c = await Counter.get(id=counter.id, using_db=conn)
                await asyncio.sleep(0)  # (another task's turn between the read and the write)
                c.value += 1
                await c.save(using_db=conn, update_fields=["value"])

        outcomes = await asyncio.gather(*(add_one(i) for i in range(TASKS)), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        locked = [e for e in errors if "database is locked" in str(e)]
        assert not locked, f"{len(locked)} 'database is locked' of {TASKS}"
        assert not errors, errors
        await counter.refresh_from_db()
        assert counter.value == TASKS
    assert await asyncio.to_thread(_rows, path, "SELECT value FROM counter") == [(TASKS,)]


async def test_what_stops_it_journal_size_limit(tmp_path: Path, on_litegate: None) -> None:
    """Tortoise's default pragmas: ``journal_size_limit=16384`` is refused by the engine."""
    async with TortoiseContext() as ctx:
        await ctx.init(db_url=f"sqlite://{tmp_path / 'b.db'}", modules={"models": [__name__]})
        with pytest.raises(
            sqlite3.NotSupportedError,
            match=r"PRAGMA journal_size_limit=16384 is not supported by litegate\.sqlite3",
        ):
            await ctx.generate_schemas()
