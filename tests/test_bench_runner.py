"""The bench runner's pieces shared by both suites: operation streams, the two drivers, error
accounting and the data check (counts, not speed)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from litegate._bench import WORKLOADS, Case, contenders, runner, workloads
from litegate._bench.workloads import INSERT, READ, UPDATE


def _take(workload: str, n: int, *, seed: int = 1, worker: int = 0) -> list[workloads.Op]:
    return list(itertools.islice(workloads.operations(WORKLOADS[workload], seed, worker), n))


def test_operation_streams_are_seeded_per_worker() -> None:
    assert _take("mixed", 500) == _take("mixed", 500)
    assert _take("mixed", 500) != _take("mixed", 500, worker=1)
    assert _take("mixed", 500) != _take("mixed", 500, seed=2)


def test_operation_kinds_follow_the_workload() -> None:
    assert {kind for kind, _ in _take("reads", 1000)} == {READ}
    writes = [kind for kind, _ in _take("writes", 1000)]
    assert writes == [UPDATE, INSERT] * 500  # alternating, UPDATE first
    mixed = [kind for kind, _ in _take("mixed", 2000)]
    assert mixed.count(READ) > mixed.count(UPDATE) + mixed.count(INSERT)
    assert 0 <= mixed.count(UPDATE) - mixed.count(INSERT) <= 1
    for kind, args in _take("mixed", 2000, worker=7):
        key = args[0] if kind == READ else args[1][0]
        assert 1 <= key <= workloads.ROWS
        if kind == INSERT:
            assert args == (workloads.SQL_INSERT, (key, 7, workloads.PAD))


class _Flaky(contenders.Raw):
    """Fails every third write before touching the file, so nothing of it is written."""

    name = "flaky"
    kind = "remedy"

    def open(self, path: str, case: Case) -> None:
        super().open(path, case)
        self.calls = itertools.count(1)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        if next(self.calls) % 3 == 0:
            raise RuntimeError("flaky write")
        super().write(sql, params)


def _fresh(tmp_path: Path) -> str:
    template, path = str(tmp_path / "template.db"), str(tmp_path / "bench.db")
    workloads.seed_template(template)
    workloads.reset(template, path)
    return path


@pytest.mark.parametrize("driver", ["threads", "tasks"])
def test_failed_writes_count_as_errors_and_never_as_done(tmp_path: Path, driver: str) -> None:
    path = _fresh(tmp_path)
    case = Case(WORKLOADS["writes"], 1, "writes x1")
    messages: list[str] = []
    if driver == "threads":
        r = runner.run_case(_Flaky(), case, runner.THREADS, path, 0.2, 1, messages.append)
    else:
        flaky = contenders.ToThread(_Flaky(), "flaky via to_thread")
        r = runner.run_case(flaky, case, runner.TASKS, path, 0.2, 1, messages.append)
    assert r.writes > 0 and r.reads == 0
    assert r.ops == r.writes
    # One call in three failed: the failures are errors, the rest are done.
    assert r.errors == (r.ops + r.errors) // 3
    assert r.error_samples == {"RuntimeError: flaky write": r.errors}
    assert r.data.ok, r.data
    assert r.data.found_inserts + r.data.found_updates == r.writes
    assert r.extra == {"connections": 1}
    assert r.workers == 1 and r.workload == "writes"
    noun = "thread" if driver == "threads" else "task"
    assert messages[0].startswith(f"writes x1: {r.name}: running 1 {noun} for 0.2s")
    assert "data ok" in messages[-1]


def test_every_task_runs_and_reaches_its_worker_exit(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    exits: list[int] = []

    class Counting(contenders.ToThread):
        async def worker_exit(self) -> None:
            exits.append(1)

    locked = Counting(contenders.Locked(), "to_thread + Lock")
    r = runner.run_case(
        locked, Case(WORKLOADS["mixed"], 5, "mixed x5"), runner.TASKS, path, 0.2, 1, _quiet
    )
    assert len(exits) == 5
    assert r.errors == 0 and r.data.ok
    assert r.reads > r.writes > 0


def test_a_reference_runs_raw_sqlite3_on_one_thread(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    ref = runner._reference(WORKLOADS["writes"], path, 0.2, 1)
    assert ref.name == runner.REFERENCE_NAMES["writes"]
    assert ref.workload == "writes"
    assert ref.ops > 0 and ref.ops_per_s > 0
    assert 0 < ref.p50_ms <= ref.p99_ms
    assert os.path.exists(path)


def _quiet(message: str) -> None:
    pass
