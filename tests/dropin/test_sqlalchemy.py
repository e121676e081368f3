"""The SQLAlchemy dialect ``sqlite+litegate://``: ORM read-modify-write on 8 threads keeps its
invariants, read-only sessions run on readers in parallel, AUTOCOMMIT works."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy", reason="the sqlalchemy extra is not installed")

from sqlalchemy import Engine, Integer, String, create_engine, func, select, text  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column  # noqa: E402

from litegate.sqlalchemy import HandlePool, LitegateDialect  # noqa: E402


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "account"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    balance: Mapped[int] = mapped_column(Integer)


class Counter(Base):
    __tablename__ = "counter"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


def _engine(tmp_path: Path) -> Engine:
    engine = create_engine(f"sqlite+litegate:///{tmp_path / 'orm.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([Account(id=i, balance=100) for i in range(1, 11)])
        s.add(Counter(name="transfers", value=0))
    return engine


def test_the_url_finds_the_dialect_through_its_entry_point(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:
        assert isinstance(engine.dialect, LitegateDialect)
        assert isinstance(engine.pool, HandlePool)
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        engine.dispose()


def test_orm_transfers_on_8_threads_lose_no_update(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    done = [0] * 8
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        rnd = random.Random(i)
        try:
            for _ in range(60):
                a, b = rnd.sample(range(1, 11), 2)
                with Session(engine) as s, s.begin():
                    x, y = s.get(Account, a), s.get(Account, b)
                    c = s.get(Counter, "transfers")
                    assert x is not None and y is not None and c is not None
                    x.balance -= 1
                    y.balance += 1
                    c.value += 1  # read, add, write back: a lost update would show
                done[i] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not errors, errors[:3]
        with Session(engine) as s:
            assert s.scalar(select(func.sum(Account.balance))) == 1000
            counter = s.get(Counter, "transfers")
            assert counter is not None and counter.value == sum(done) == 480
    finally:
        engine.dispose()


def test_read_only_sessions_are_snapshots_on_readers(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    readonly = engine.execution_options(litegate_read_only=True)
    try:
        inside = [threading.Event() for _ in range(3)]
        release = threading.Event()
        seen: list[int | None] = []

        def reader(i: int) -> None:
            with Session(readonly) as s:
                first = s.scalar(select(Account.balance).where(Account.id == 1))
                inside[i].set()
                assert release.wait(10)
                # the same snapshot: the write committed meanwhile is not seen
                again = s.scalar(select(Account.balance).where(Account.id == 1))
                seen.append(None if again != first else again)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for e in inside:
            assert e.wait(10)  # three read-only sessions open at once: none holds the lane
        with Session(engine) as s, s.begin():  # ... so a writer is not blocked by them
            acct = s.get(Account, 1)
            assert acct is not None
            acct.balance = 5
        release.set()
        for t in threads:
            t.join(10)
        assert seen == [100, 100, 100]
        with Session(readonly) as s:
            s.add(Account(id=99, balance=1))
            with pytest.raises(OperationalError, match="readonly"):
                s.flush()
    finally:
        engine.dispose()


def test_autocommit_isolation_level(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("UPDATE account SET balance = 0 WHERE id = 1"))
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None and not dbapi.in_transaction
        with engine.connect() as conn:  # (reset on return: transactions again)
            assert conn.execute(text("SELECT balance FROM account WHERE id = 1")).scalar() == 0
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None and dbapi.in_transaction
    finally:
        engine.dispose()
