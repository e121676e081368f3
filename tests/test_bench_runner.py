"""The bench runner's pieces shared by both suites: operation streams, the two drivers, the
loop-lag ticker, error accounting, the data check, a run in a fresh process and the plot
(counts and structure, not speed)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from litegate._bench import (
    WORKLOADS,
    Case,
    acontenders,
    contenders,
    runner,
    session,
    sync_suite,
    workloads,
)
from litegate._bench.isolate import RunSpec, case_to_dict, run_in_child
from litegate._bench.workloads import INSERT, READ, SCAN, SLOW, TRANSFER, UPDATE


def _case(workload: str, workers: int = 1, **kw: Any) -> Case:
    return Case(WORKLOADS[workload], workers, f"{workload} x{workers}", **kw)


def _take(workload: str, n: int, *, seed: int = 1, worker: int = 0, **kw: Any) -> list[Any]:
    return list(itertools.islice(workloads.operations(_case(workload, **kw), seed, worker), n))


def test_operation_streams_are_seeded_per_worker() -> None:
    for w in ("mixed", "scans", "transfers"):
        assert _take(w, 500) == _take(w, 500)
        assert _take(w, 500) != _take(w, 500, worker=1)
        assert _take(w, 500) != _take(w, 500, seed=2)


def test_operation_kinds_follow_the_workload() -> None:
    assert {kind for kind, _ in _take("reads", 1000)} == {READ}
    writes = [kind for kind, _ in _take("writes", 1000)]
    assert writes == [UPDATE, INSERT] * 500  # alternating, UPDATE first
    mixed = [kind for kind, _ in _take("mixed", 2000)]
    assert mixed.count(READ) > mixed.count(UPDATE) + mixed.count(INSERT)
    assert 0 <= mixed.count(UPDATE) - mixed.count(INSERT) <= 1
    for kind, args in _take("mixed", 2000, worker=7, rows=300):
        key = args[0] if kind == READ else args[1][0]
        assert 1 <= key <= 300
        if kind == INSERT:
            assert args == (workloads.SQL_INSERT, (key, 7, workloads.PAD))
    for kind, (low,) in _take("scans", 2000, rows=300):
        assert kind == SCAN and 1 <= low <= 300 - workloads.SCAN_ROWS + 1
    pairs = set()
    for kind, (src, dst, amount) in _take("transfers", 5000):
        assert kind == TRANSFER and src != dst
        assert 1 <= src <= workloads.ACCOUNTS and 1 <= dst <= workloads.ACCOUNTS
        assert 1 <= amount <= workloads.MAX_AMOUNT
        pairs.add((src, dst))
    assert len(pairs) > 4000
    slow = _take("slow-tx", 3, workers=3, slow_rows=123)
    assert slow == [(SLOW, (workloads.SQL_SLOW, (123,)))] * 3  # worker 0: slow writes
    assert {k for k, _ in _take("slow-tx", 50, worker=1, workers=3)} == {TRANSFER}


class _Flaky(contenders.Raw):
    """Fails every third write or transfer before touching the file, so nothing of it is
    written."""

    name = "flaky"
    kind = "remedy"

    def open(self, path: str, case: Case) -> None:
        super().open(path, case)
        self.calls = itertools.count(1)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        if next(self.calls) % 3 == 0:
            raise RuntimeError("flaky write")
        super().write(sql, params)

    def transfer(self, src: int, dst: int, amount: int) -> bool:
        if next(self.calls) % 3 == 0:
            raise RuntimeError("flaky write")
        return super().transfer(src, dst, amount)


def _fresh(tmp_path: Path, rows: int = 500) -> str:
    template, path = str(tmp_path / "template.db"), str(tmp_path / "bench.db")
    workloads.seed_template(template, rows)
    workloads.reset(template, path)
    return path


@pytest.mark.parametrize("workload", ["writes", "transfers"])
@pytest.mark.parametrize("driver", ["threads", "tasks"])
def test_failed_writes_count_as_errors_and_never_as_done(
    tmp_path: Path, driver: str, workload: str
) -> None:
    path = _fresh(tmp_path)
    case = _case(workload, synchronous="NORMAL", rows=500)
    messages: list[str] = []
    if driver == "threads":
        r = runner.run_case(_Flaky(), case, runner.THREADS, path, 0.2, 1, messages.append)
        assert r.lag_p99_ms is None
    else:
        flaky = acontenders.ToThread(_Flaky(), "flaky via to_thread")
        r = runner.run_case(flaky, case, runner.TASKS, path, 0.2, 1, messages.append)
        assert r.lag_p99_ms is not None and r.lag_max_ms is not None
    assert r.writes > 0 and r.reads == 0
    assert r.ops == r.writes
    # One call in three failed: the failures are errors, the rest are done.
    assert r.errors == (r.ops + r.errors) // 3
    assert r.error_samples == {"RuntimeError: flaky write": r.errors}
    assert r.data.ok, r.data
    if workload == "writes":
        assert r.data.found_inserts + r.data.found_updates == r.writes
    else:
        assert 0 < r.data.found_transfers == r.data.expected_transfers <= r.writes
    assert r.extra == {"connections": 1}
    assert r.workers == 1 and r.workload == workload and r.synchronous == "NORMAL"
    noun = "thread" if driver == "threads" else "task"
    assert messages[0].startswith(f"{workload} x1 NORMAL: {r.name}: running 1 {noun} for 0.2s")
    assert "data ok" in messages[-1]


async def test_the_bare_ceilings_failed_commit_fails_its_whole_group(tmp_path: Path) -> None:
    """The async ceiling shares one COMMIT: when it fails (a deferred foreign key), every
    write of the group fails with it and nothing is stored; the next group commits."""

    # (Set-up and checks run off the loop: this test's loop is watched for stalls.)
    def schema() -> str:
        path = _fresh(tmp_path)
        conn = sqlite3.connect(path)
        conn.executescript(
            "CREATE TABLE parent(id INTEGER PRIMARY KEY);"
            "CREATE TABLE child(pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
        )
        conn.close()
        return path

    path = await asyncio.to_thread(schema)
    bare = acontenders.BareAsyncGroupCommit()
    await bare.open(path, _case("writes", synchronous="NORMAL"))
    try:
        bare._writer.execute("PRAGMA foreign_keys=ON")
        ok = "INSERT INTO parent VALUES (?)"
        results = await asyncio.gather(
            bare.write(ok, (1,)),
            bare.write("INSERT INTO child VALUES (?)", (42,)),  # no parent 42: COMMIT fails
            bare.write(ok, (2,)),
            return_exceptions=True,
        )
        assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
        await asyncio.gather(bare.write(ok, (3,)), bare.write(ok, (4,)))
    finally:
        figures = await bare.close()
    assert figures == {"connections": 2, "commits": 2}

    def stored() -> tuple[list[int], int]:
        conn = sqlite3.connect(path)
        try:
            parents = [r[0] for r in conn.execute("SELECT id FROM parent ORDER BY id")]
            return parents, conn.execute("SELECT count(*) FROM child").fetchone()[0]
        finally:
            conn.close()

    assert await asyncio.to_thread(stored) == ([3, 4], 0)


def _bare_group(bare: contenders.BareGroupCommit, sources: tuple[int, ...]) -> dict[int, object]:
    """Transfers from ``sources`` (to source + 100), queued at once behind the bare ceiling's
    held lock so that they run as one group; what each returned or raised."""
    outcomes: dict[int, object] = {}

    def transfer(src: int) -> None:
        try:
            outcomes[src] = bare.transfer(src, src + 100, 1)
        except Exception as exc:
            outcomes[src] = exc

    threads = [threading.Thread(target=transfer, args=(src,)) for src in sources]
    with bare._turn:  # held: all of them wait for it, then run as one group
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while bare._wanting < len(threads) and time.monotonic() < deadline:
            time.sleep(0.001)
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    return outcomes


def _moved(path: str) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM accounts WHERE moves > 0 ORDER BY id")]
    finally:
        conn.close()


def test_the_sync_bare_ceiling_groups_transfers_and_a_failed_commit_fails_the_group(
    tmp_path: Path,
) -> None:
    """The sync ceiling's transfers share a COMMIT while others wait for the connection: four
    queued at once run as one group, and when its COMMIT fails (a deferred foreign key, set off
    by one of them) all four fail and none is stored; later ones commit alone."""
    path = _fresh(tmp_path)
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE parent(id INTEGER PRIMARY KEY);"
        "CREATE TABLE child(pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
        "CREATE TRIGGER bad AFTER UPDATE ON accounts WHEN NEW.id = 13 "
        "BEGIN INSERT INTO child VALUES (42); END;"  # no parent 42: the COMMIT fails
    )
    conn.close()
    bare = contenders.BareGroupCommit()
    bare.open(path, _case("transfers", 4, synchronous="NORMAL"))
    bare._writer.execute("PRAGMA foreign_keys=ON")
    try:
        outcomes = _bare_group(bare, (1, 2, 13, 4))
        assert bare.transfer(5, 6, 1) is True
        assert bare.transfer(7, 8, 1) is True
    finally:
        figures = bare.close()
    assert all(isinstance(outcomes[src], sqlite3.IntegrityError) for src in (1, 2, 13, 4)), outcomes
    assert figures["commits"] == 2
    assert _moved(path) == [5, 6, 7, 8]


def test_the_sync_bare_ceiling_undoes_only_a_failing_transfer_of_a_group(tmp_path: Path) -> None:
    """Each transfer of the sync ceiling's group runs in its own savepoint (the isolation
    litegate keeps): one that fails (no such account) is undone alone, wherever it falls in
    the group, and the others commit together."""
    path = _fresh(tmp_path)
    bare = contenders.BareGroupCommit()
    bare.open(path, _case("transfers", 4, synchronous="NORMAL"))
    try:
        outcomes = _bare_group(bare, (1, 5000, 3, 4))  # (account 5000 does not exist)
    finally:
        figures = bare.close()
    assert isinstance(outcomes.pop(5000), TypeError)
    assert outcomes == {1: True, 3: True, 4: True}
    assert figures["commits"] == 1
    assert _moved(path) == [1, 3, 4, 101, 103, 104]


def test_the_data_check_catches_lost_money_and_half_transfers(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    assert workloads.check_data(path, 0, 0).ok
    conn = sqlite3.connect(path)
    conn.execute(workloads.SQL_DEBIT, (5, 1))  # half a transfer: money gone, one move
    conn.commit()
    conn.close()
    check = workloads.check_data(path, 0, 0)
    assert not check.ok
    assert "balances sum to 999995" in check.text and "transfers -1 != acked 0" in check.text


def test_every_task_runs_and_reaches_its_worker_exit(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    exits: list[int] = []

    class Counting(acontenders.ToThread):
        async def worker_exit(self) -> None:
            exits.append(1)

    locked = Counting(contenders.Locked(), "to_thread + Lock")
    r = runner.run_case(locked, _case("mixed", 5, rows=500), runner.TASKS, path, 0.2, 1, _quiet)
    assert len(exits) == 5
    assert r.errors == 0 and r.data.ok
    assert r.reads > r.writes > 0


def test_per_thread_connections_behind_to_thread_are_all_closed(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    inner = contenders.PerThread()
    per_thread = acontenders.ToThread(inner, "to_thread per-thread conn")
    r = runner.run_case(per_thread, _case("transfers", 8), runner.TASKS, path, 0.2, 1, _quiet)
    assert r.errors == 0 and r.data.ok
    assert 1 <= r.extra["connections"] and r.extra["retries"] >= 0
    assert not inner._open  # close() closed what the executor threads left open


def test_a_reference_runs_raw_sqlite3_on_one_thread(tmp_path: Path) -> None:
    files = session._Files(str(tmp_path))
    suite = sync_suite.sync_suite({})
    case = _case("transfers", 8, rows=500)
    ref = session._reference(_case("transfers", rows=500), case, files, 0.2, 1, False, suite)
    assert ref.name == session.REFERENCE_NAMES["transfers"]
    assert ref.workload == "transfers" and ref.synchronous == "FULL"
    assert ref.case == "transfers x8"
    assert ref.ops > 0 and ref.ops_per_s > 0
    assert 0 < ref.p50_ms <= ref.p99_ms


def test_each_case_runs_its_reference_in_its_own_rotation(tmp_path: Path) -> None:
    """The raw reference is measured with each case's contenders, at a rotating place, and each
    case's "vs raw" ratio uses its own run (one run per suite swung with the machine)."""
    from litegate._bench import run_async_benchmark

    said: list[str] = []
    res = run_async_benchmark(
        seconds=0.05,
        tasks=(1, 2),
        workloads=("reads",),
        directory=str(tmp_path),
        synchronous=("NORMAL",),
        isolate=False,
        with_aiosqlite=False,
        progress=said.append,
    )
    assert [(r.workload, r.case) for r in res.reference] == [
        ("reads", "reads x1"),
        ("reads", "reads x2"),
    ]
    starts = [m for m in said if ": running " in m or m.startswith("reference reads")]
    assert len(starts) == 2 * (len(res.cases[0].contenders) + 1), said
    places = {i % (len(starts) // 2) for i, m in enumerate(starts) if m.startswith("reference")}
    assert len(places) == 2  # not the same place in both rotations
    for case, ref in zip(res.cases, res.reference, strict=True):
        assert case.reference is ref
        for c in case.contenders:
            assert c.ratios["vs_raw"] == round(c.ops_per_s / ref.ops_per_s, 2)


@pytest.mark.parametrize("suite", ["sync", "async"])
def test_a_run_in_a_fresh_process_reports_back(tmp_path: Path, suite: str) -> None:
    path = _fresh(tmp_path)
    case = _case("transfers", 2, synchronous="NORMAL", rows=500)
    spec = RunSpec(suite, 0, case_to_dict(case), path, 0.2, 1, {"aiosqlite": False})
    r = run_in_child(spec, "?", "?")
    assert r.name == ("sqlite3 per-thread" if suite == "sync" else "litegate async")
    assert r.errors == 0 and r.ops > 0 and r.data.ok
    assert r.synchronous == "NORMAL" and r.workers == 2
    assert (r.lag_p99_ms is None) == (suite == "sync")


def test_a_child_that_dies_is_one_error(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    spec = RunSpec("nope", 0, case_to_dict(_case("writes")), path, 0.1, 1)
    r = run_in_child(spec, "lost", "peer")
    assert r.name == "lost" and r.errors == 1 and r.ops == 0
    assert list(r.error_samples) == ["child process exited with 1"]


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from litegate._bench import run_async_benchmark
    from litegate._bench.plot import plot

    res = run_async_benchmark(
        seconds=0.05,
        tasks=(1, 2),
        workloads=("reads", "transfers"),
        directory=str(tmp_path),
        reference=False,
        synchronous=("NORMAL", "FULL"),
        isolate=False,
    )
    out = tmp_path / "bench.png"
    plot([res], str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(ValueError):
        plot([], str(out))


def _quiet(message: str) -> None:
    pass
