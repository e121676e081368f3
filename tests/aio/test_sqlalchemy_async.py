"""The SQLAlchemy asyncio dialect ``sqlite+litegate_async://`` (on ``litegate.aio``): Core and
ORM CRUD, 64 tasks of ORM read-modify-write transfers lose no update, a read-only session runs
on a reader while another task holds the write lane, AUTOCOMMIT works."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

sqlalchemy = pytest.importorskip("sqlalchemy", reason="the sqlalchemy extra is not installed")
pytest.importorskip("greenlet", reason="SQLAlchemy's asyncio layer needs greenlet")

from sqlalchemy import (  # noqa: E402
    Column,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    pool,
    select,
    text,
    update,
)
from sqlalchemy.exc import OperationalError  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column  # noqa: E402

import litegate.aio  # noqa: E402
from litegate.sqlalchemy import AsyncHandlePool, LitegateAsyncDialect  # noqa: E402

ACCOUNTS = 10
BALANCE = 100


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "account"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    balance: Mapped[int] = mapped_column(Integer)


class Counter_(Base):
    __tablename__ = "counter"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(f"sqlite+litegate_async:///{tmp_path / 'orm.db'}")
    async with eng.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(eng) as s, s.begin():
        s.add_all([Account(id=i, balance=BALANCE) for i in range(1, ACCOUNTS + 1)])
        s.add(Counter_(name="transfers", value=0))
    try:
        yield eng
    finally:
        await eng.dispose()


async def test_the_url_finds_the_dialect_through_its_entry_point(engine: AsyncEngine) -> None:
    assert isinstance(engine.dialect, LitegateAsyncDialect)
    assert isinstance(engine.pool, AsyncHandlePool)
    async with engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection, litegate.aio.Connection)
    memory = create_async_engine("sqlite+litegate_async://")
    try:
        assert isinstance(memory.pool, pool.StaticPool)
        async with memory.connect() as conn:
            assert (await conn.execute(text("SELECT 1 + 1"))).scalar() == 2
    finally:
        await memory.dispose()


async def test_core_crud(tmp_path: Path) -> None:
    eng = create_async_engine(f"sqlite+litegate_async:///{tmp_path / 'core.db'}")
    items = Table(
        "items", MetaData(), Column("id", Integer, primary_key=True), Column("name", String)
    )
    try:
        async with eng.begin() as conn:
            await conn.run_sync(items.metadata.create_all)
            res = await conn.execute(insert(items).values(name="a"))
            assert res.inserted_primary_key == (1,)
            await conn.execute(insert(items), [{"name": "b"}, {"name": "c"}])
        async with eng.begin() as conn:
            await conn.execute(update(items).where(items.c.name == "b").values(name="B"))
            await conn.execute(delete(items).where(items.c.name == "c"))
        async with eng.connect() as conn:  # (a rolled-back transaction leaves nothing)
            await conn.execute(insert(items).values(name="gone"))
            await conn.rollback()
        async with eng.connect() as conn:
            rows = (await conn.execute(select(items.c.name).order_by(items.c.id))).all()
            assert [r.name for r in rows] == ["a", "B"]
            streamed = await conn.stream(select(items.c.id).order_by(items.c.id))
            assert [i async for i in streamed.scalars()] == [1, 2]  # (server-side cursor)
            assert (await conn.execute(text("SELECT :s REGEXP 'B'"), {"s": "xBx"})).scalar() == 1
    finally:
        await eng.dispose()


async def test_orm_crud(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as s, s.begin():
        s.add(Account(id=50, balance=7))
    async with AsyncSession(engine) as s:
        acct = await s.get(Account, 50)
        assert acct is not None and acct.balance == 7
        acct.balance = 8
        await s.commit()
    async with AsyncSession(engine) as s, s.begin():
        acct = await s.get(Account, 50)
        assert acct is not None and acct.balance == 8
        await s.delete(acct)
    async with AsyncSession(engine) as s:
        assert await s.get(Account, 50) is None
        n = await s.scalar(select(func.count()).select_from(Account))
        assert n == ACCOUNTS


@pytest.mark.no_debug_loop("64 tasks x 10 ORM transactions: too slow under asyncio debug mode")
@pytest.mark.blocks_loop(
    "SQLAlchemy's ORM runs on the loop (~1.5-2 ms of CPU per transfer, in its greenlets): "
    "under CI's load a stall of 48 ms was seen inside session.begin/_connection_for_bind, "
    "none in litegate (its own lag is checked by tests/aio/test_aio.py)"
)
async def test_orm_transfers_on_64_tasks_lose_no_update(engine: AsyncEngine) -> None:
    committed: list[tuple[int, int]] = []

    async def worker(i: int) -> None:
        rnd = random.Random(i)
        for _ in range(10):
            a, b = rnd.sample(range(1, ACCOUNTS + 1), 2)
            async with AsyncSession(engine) as s, s.begin():
                x, y = await s.get(Account, a), await s.get(Account, b)
                c = await s.get(Counter_, "transfers")
                assert x is not None and y is not None and c is not None
                x.balance -= 1
                y.balance += 1
                c.value += 1  # read, add, write back: a lost update would show
            committed.append((a, b))

    # (any error, `database is locked` included, fails the test through the task group)
    async with asyncio.TaskGroup() as tg:
        for i in range(64):
            tg.create_task(worker(i))

    assert len(committed) == 640
    expected = Counter(dict.fromkeys(range(1, ACCOUNTS + 1), BALANCE))
    for a, b in committed:
        expected[a] -= 1
        expected[b] += 1
    async with AsyncSession(engine) as s:
        assert await s.scalar(select(func.sum(Account.balance))) == ACCOUNTS * BALANCE
        rows = (await s.execute(select(Account.id, Account.balance))).all()
        balances = {r.id: r.balance for r in rows}
        assert balances == dict(expected)
        counter = await s.get(Counter_, "transfers")
        assert counter is not None and counter.value == len(committed)


async def test_read_only_session_runs_on_a_reader_while_a_writer_holds_the_lane(
    engine: AsyncEngine,
) -> None:
    readonly = engine.execution_options(litegate_read_only=True)
    holding, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with AsyncSession(engine) as s, s.begin():  # (BEGIN IMMEDIATE: the lane is held)
            acct = await s.get(Account, 1)
            assert acct is not None
            acct.balance = 5
            await s.flush()
            holding.set()
            await release.wait()

    async def plain_reader() -> int | None:  # a writing session: it waits for the lane
        async with AsyncSession(engine) as s:
            return await s.scalar(select(Account.balance).where(Account.id == 1))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(writer())
        await holding.wait()
        blocked = tg.create_task(plain_reader())
        with anyio.fail_after(5):  # completes while the writer still holds its transaction
            async with AsyncSession(readonly) as s:
                first = await s.scalar(select(Account.balance).where(Account.id == 1))
                conn = await s.connection()
                raw = await conn.get_raw_connection()
                assert raw.driver_connection is not None
                assert raw.driver_connection.read_only  # (this task's next transactions)
        assert first == 100  # (the writer's uncommitted 5 is not seen)
        await asyncio.sleep(0.2)
        assert not blocked.done()  # (the control: a writing session waits for the lane)
        release.set()
    assert blocked.result() == 5

    async with AsyncSession(readonly) as s:  # one snapshot per session...
        before = await s.scalar(select(Account.balance).where(Account.id == 2))
        async with AsyncSession(engine) as w, w.begin():  # (a writer is not blocked by it)
            acct = await w.get(Account, 2)
            assert acct is not None
            acct.balance = 1
        assert await s.scalar(select(Account.balance).where(Account.id == 2)) == before == 100
        s.add(Account(id=99, balance=1))  # ... and a write in it fails
        with pytest.raises(OperationalError, match="readonly"):
            await s.flush()


async def test_autocommit_isolation_level(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        assert await conn.get_isolation_level() == "AUTOCOMMIT"
        await conn.execute(text("UPDATE account SET balance = 0 WHERE id = 1"))
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None and not raw.driver_connection.in_transaction
    async with engine.connect() as conn:  # (reset on return: transactions again)
        assert (await conn.execute(text("SELECT balance FROM account WHERE id = 1"))).scalar() == 0
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None and raw.driver_connection.in_transaction
        assert await conn.get_isolation_level() == "SERIALIZABLE"


async def test_an_invalidated_connection_is_stopped(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, litegate.aio.Connection) and not driver.closed
        await conn.invalidate()
        assert driver.closed
    async with engine.connect() as conn:  # (the pool opens another)
        assert (await conn.execute(text("SELECT count(*) FROM account"))).scalar() == ACCOUNTS


async def test_a_closed_driver_connection_is_a_disconnect(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, litegate.aio.Connection)
        await driver.close()
        with pytest.raises(OperationalError, match="no active connection") as info:
            await conn.execute(text("SELECT 1"))
        assert info.value.connection_invalidated
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1


async def test_a_transaction_begun_in_a_child_task_is_the_sessions(engine: AsyncEngine) -> None:
    # (asyncio.wait_for runs its awaitable in a task of its own on Python 3.11: a pooled
    # handle's transaction is the handle's, so the session's first statement stays in it)
    async with AsyncSession(engine) as s:
        await asyncio.create_task(s.execute(text("UPDATE account SET balance=1 WHERE id=1")))
        await s.execute(text("UPDATE account SET balance=2 WHERE id=2"))
        await s.commit()
    async with AsyncSession(engine) as s:
        rows = (await s.execute(select(Account.balance).where(Account.id <= 2))).scalars()
        assert list(rows) == [1, 2]


async def test_in_memory_sessions_of_concurrent_tasks_do_not_stall_each_other() -> None:
    # (StaticPool's one handle is every task's: a task whose BEGIN waits for the lane must not
    # hold anything the transaction it waits for needs -- SQLAlchemy's per-connection lock did)
    memory = create_async_engine("sqlite+litegate_async://", connect_args={"timeout": 2})
    try:
        async with memory.begin() as conn:
            await conn.execute(text("CREATE TABLE n(x INTEGER)"))
        a_began = asyncio.Event()

        async def a() -> float:
            async with memory.begin() as conn:
                await conn.execute(text("INSERT INTO n VALUES (1)"))
                a_began.set()
                await asyncio.sleep(0.2)  # (b's BEGIN waits for the lane meanwhile)
                t0 = time.monotonic()
                await conn.execute(text("INSERT INTO n VALUES (2)"))
                return time.monotonic() - t0

        async def b() -> None:
            await a_began.wait()
            async with memory.begin() as conn:
                await conn.execute(text("INSERT INTO n VALUES (3)"))

        waited, _ = await asyncio.gather(a(), b())
        assert waited < 0.5
        async with memory.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM n"))).scalar() == 3
    finally:
        await memory.dispose()
