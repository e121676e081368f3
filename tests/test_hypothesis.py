"""Property tests: values round-trip; transactions and savepoints behave like a model."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import litegate

VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(VALUES, max_size=20))
def test_values_round_trip(tmp_path: Path, values: list[Any]) -> None:
    with (
        tempfile.TemporaryDirectory(dir=tmp_path) as d,
        litegate.connect(str(Path(d) / "h.db")) as db,
    ):
        db.execute("CREATE TABLE t(i INTEGER PRIMARY KEY, v)")
        db.executemany("INSERT INTO t(i, v) VALUES (?, ?)", list(enumerate(values)))
        got = [r[0] for r in db.query("SELECT v FROM t ORDER BY i")]
        assert len(got) == len(values)
        for a, b in zip(got, values, strict=True):
            if isinstance(b, float) and math.isinf(b):
                assert a == b
            else:
                assert a == b and type(a) is type(b)


class Rollback(Exception):
    pass


class TransactionModel(RuleBasedStateMachine):
    """The database's rows always equal a dict model, through commits, rollbacks and nested
    savepoints, in every read mode."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.db = litegate.connect(str(Path(self.dir.name) / "m.db"), readers=2)
        self.db.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v INT)")
        self.model: dict[int, int] = {}

    keys = st.integers(0, 9)
    vals = st.integers(-1000, 1000)

    @rule(k=keys, v=vals)
    def upsert(self, k: int, v: int) -> None:
        self.db.execute(
            "INSERT INTO kv VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", (k, v)
        )
        self.model[k] = v

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        k = data.draw(st.sampled_from(sorted(self.model)))
        self.db.execute("DELETE FROM kv WHERE k = ?", (k,))
        del self.model[k]

    @rule(
        ops=st.lists(st.tuples(keys, vals), max_size=4),
        inner=st.lists(st.tuples(keys, vals), max_size=4),
        inner_fails=st.booleans(),
        commit=st.booleans(),
    )
    def transaction(
        self,
        ops: list[tuple[int, int]],
        inner: list[tuple[int, int]],
        inner_fails: bool,
        commit: bool,
    ) -> None:
        staged = dict(self.model)
        sql = "INSERT INTO kv VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v"
        try:
            with self.db.transaction() as tx:
                for k, v in ops:
                    tx.execute(sql, (k, v))
                    staged[k] = v
                try:
                    with tx.savepoint():
                        for k, v in inner:
                            tx.execute(sql, (k, v))
                        if inner_fails:
                            raise Rollback
                    for k, v in inner:
                        staged[k] = v
                except Rollback:
                    pass
                assert dict(tx.query("SELECT k, v FROM kv")) == staged  # sees its own writes
                if not commit:
                    raise Rollback
        except Rollback:
            return
        self.model = staged

    @invariant()
    def matches_the_model(self) -> None:
        assert {r[0]: r[1] for r in self.db.query("SELECT k, v FROM kv")} == self.model
        with self.db.snapshot() as snap:
            assert {r[0]: r[1] for r in snap.query("SELECT k, v FROM kv")} == self.model

    def teardown(self) -> None:
        self.db.close()
        self.dir.cleanup()


TestTransactionModel = TransactionModel.TestCase
TestTransactionModel.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
