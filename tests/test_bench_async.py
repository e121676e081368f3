"""The async benchmark suite, run in-process for a fraction of a second (structure, not
speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import litegate.cli
from litegate import _bench as abench
from litegate._bench import (
    ASYNC_WORKLOADS,
    WORKLOADS,
    BenchResult,
    CaseResult,
    ContenderResult,
    DataCheck,
    Target,
    run_async_benchmark,
)
from litegate._bench.async_suite import SLOW_AT_LEAST
from litegate._bench.async_targets import BARE_TO_THREAD

TASKS = (1, 4)
HAVE_AIOSQLITE = abench.aiosqlite_version() is not None
NAMES = abench.contender_names("async", with_aiosqlite=HAVE_AIOSQLITE)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> BenchResult:
    directory = tmp_path_factory.mktemp("abench")
    return run_async_benchmark(
        seconds=0.06, tasks=TASKS, directory=str(directory), synchronous=("FULL",), isolate=False
    )


def _expected_cases() -> list[tuple[str, int]]:
    return [(w, n) for w in ASYNC_WORKLOADS for n in TASKS if w != "slow-tx" or n > 1]


def test_every_workload_and_task_count_runs_every_contender(result: BenchResult) -> None:
    assert [(w.workload.name, w.workers) for w in result.cases] == _expected_cases()
    for w in result.cases:
        assert w.synchronous == "FULL"
        ceiling = "slow-tx" not in w.label and "scans" not in w.label
        assert [c.name for c in w.contenders] == [
            n
            for n in NAMES
            if (ceiling or not n.startswith("ceiling"))
            and (n != BARE_TO_THREAD or w.workload.name == "transfers")
        ]
        for c in w.contenders:
            where = (w.workload.name, w.workers, c.name)
            assert c.ops > 0, where
            assert c.ops == c.reads + c.writes
            assert c.workers == w.workers
            assert c.ops_per_s > 0
            assert 0 < c.p50_ms <= c.p99_ms, where
            # every task row measures the loop's lag
            assert c.lag_p99_ms is not None and c.lag_max_ms is not None
            assert 0 <= c.lag_p99_ms <= c.lag_max_ms, where
            if w.workload.name != "slow-tx":
                vs_raw = c.ratios["vs_raw"]
                assert vs_raw is not None and vs_raw > 0
            assert c.ratios["vs_best_peer"] is not None
            if HAVE_AIOSQLITE:
                assert c.ratios["vs_aiosqlite"] is not None


def test_every_file_holds_exactly_the_acknowledged_work(result: BenchResult) -> None:
    for w in result.cases:
        for c in w.contenders:
            where = (w.workload.name, w.workers, c.name)
            if c.kind == "litegate":
                assert c.errors == 0, c.error_samples
                if w.workload.shape == "point" and w.workload.write_fraction:
                    assert c.writes > 0
                    assert c.extra["batches"] > 0
                    assert c.extra["jobs_failed"] == 0
            assert c.data.ok, (*where, c.data)
            d = c.data
            kinds = {k: int(v["ops"]) for k, v in c.by_kind.items()}
            assert d.found_inserts == kinds.get("insert", 0)
            assert d.found_updates == kinds.get("update", 0)
            assert d.found_slow == kinds.get("slow", 0)
            assert d.found_transfers == d.expected_transfers <= kinds.get("transfer", 0)
            assert d.balance_sum == 1_000_000 and d.min_balance >= 0
    assert not result.problems("litegate")


def test_the_bare_ceiling_shares_its_commits(result: BenchResult) -> None:
    """The async ceiling is a group commit: at 4 tasks its transfers share COMMITs (the data
    check of every row, above, proves none was lost or half-applied)."""
    for n in TASKS:
        case = result.case("transfers", n)
        assert case is not None
        bare = case.get("ceiling: bare group commit")
        assert bare is not None and bare.kind == "ceiling" and bare.data.ok
        assert 0 < bare.extra["commits"] <= bare.ops
        if n > 1:
            assert bare.extra["commits"] < bare.ops


def test_workload_shapes(result: BenchResult) -> None:
    shapes = {
        "reads": {"read"},
        "writes": {"update", "insert"},
        "scans": {"scan"},
        "transfers": {"transfer"},
    }
    for w in result.cases:
        for c in w.contenders:
            if w.workload.name in shapes:
                assert set(c.by_kind) == shapes[w.workload.name], (w.label, c.name)
            elif w.workload.name == "mixed":
                assert c.reads > c.writes  # 90% reads
            else:  # slow-tx: one task's slow writes (each >= the calibrated time), transfers
                assert set(c.by_kind) <= {"slow", "transfer"} and "slow" in c.by_kind
                assert c.by_kind["slow"]["p50_ms"] >= 0.5 * SLOW_AT_LEAST * 1000
        if HAVE_AIOSQLITE:
            aio = w.get(abench.AIOSQLITE)
            assert aio is not None and aio.ratios["vs_aiosqlite"] == 1.0
    assert [(r.workload, r.case) for r in result.reference] == [
        (w.workload.name, w.label) for w in result.cases if w.workload.name != "slow-tx"
    ]
    assert all(r.ops > 0 for r in result.reference)
    assert all(
        w.reference in result.reference for w in result.cases if w.workload.name != "slow-tx"
    )
    assert result.meta["slow_rows"] > 0 and result.meta["slow_ms"] > 0


def test_targets_and_report(result: BenchResult) -> None:
    text = abench.format_report(result)
    wanted = [
        "transfers x4 FULL: litegate async ops/s vs aiosqlite",
        "transfers x4 FULL: litegate async ops/s vs to_thread per-thread conn",
        "transfers x4 FULL: litegate Database via to_thread ops/s vs best peer",
        "reads x4 FULL: litegate async ops/s vs raw sqlite3 point read (one thread)",
        "scans x4 FULL: aiosqlite p99 / litegate async p99",
        "writes x4 FULL: litegate async ops/s vs aiosqlite",
        "transfers x1 FULL: litegate async ops/s vs aiosqlite",
        "writes x1 FULL: aiosqlite p50 / litegate async p50",
        "loop lag FULL: litegate async loop lag p99",
        "loop lag FULL: litegate async loop lag max",
        "slow-tx lag FULL: litegate async loop lag p99",
        "slow-tx lag FULL: litegate async loop lag max",
    ]
    assert [f"{t.name}: {t.subject}" for t in result.targets] == wanted
    for t in result.targets:
        if HAVE_AIOSQLITE or "aiosqlite" not in t.subject:
            assert t.ratio is not None and t.ratio >= 0
            assert t.text.startswith("PASS" if t.passed else "FAIL")
        else:
            assert t.text.startswith("SKIP")
        assert f"  {t.text}" in text
        if "lag" in t.name:
            assert t.at_most and t.unit == " ms"
            assert t.threshold == (2.0 if "p99" in t.subject else 20.0)
    assert "\ntargets\n" in text
    for name in NAMES:
        assert name in text
    for r in result.reference:
        assert r.name in text
    for w, n in _expected_cases():
        assert f"workload {w} x{n}, synchronous=FULL:" in text
    data = json.loads(json.dumps(result.as_dict()))
    assert len(data["workloads"]) == len(_expected_cases())
    assert len(data["targets"]) == len(wanted)
    assert data["meta"]["tasks"] == list(TASKS)


def test_lag_targets_pass_and_fail_at_most() -> None:
    ok = Target("loop lag", "x loop lag p99", 1.5, 2.0, unit=" ms", at_most=True)
    assert ok.passed and ok.text == "PASS  loop lag: x loop lag p99 = 1.50 ms (target <= 2 ms)"
    bad = Target("loop lag", "x loop lag max", 25.0, 20.0, unit=" ms", at_most=True)
    assert bad.passed is False and bad.text.startswith("FAIL")


def test_skipped_target_and_data_mismatch_are_reported() -> None:
    skipped = Target("writes x64", "x vs aiosqlite", None, 10.0, "not installed")
    assert skipped.passed is None
    assert skipped.text.startswith("SKIP")
    failed = Target("writes x64", "x vs y", 3.0, 10.0)
    assert failed.text == "FAIL  writes x64: x vs y = 3.00x (target >= 10x)"
    check = DataCheck(
        ok=False,
        expected_inserts=10,
        found_inserts=9,
        expected_updates=5,
        found_updates=5,
        integrity="ok",
    )
    res = ContenderResult(
        name="peer",
        kind="peer",
        workload="writes",
        workers=1,
        elapsed_s=1.0,
        ops=15,
        reads=0,
        writes=15,
        errors=0,
        ops_per_s=15.0,
        p50_ms=1.0,
        p99_ms=1.0,
        read_p50_ms=0.0,
        read_p99_ms=0.0,
        write_p50_ms=1.0,
        write_p99_ms=1.0,
        error_samples={},
        data=check,
    )
    assert ContenderResult.from_dict(json.loads(json.dumps(res.as_dict()))) == res
    case = CaseResult(WORKLOADS["writes"], 1, "writes x1", [res])
    bench = BenchResult(abench.ASYNC_LAYOUT, {}, [], [case], [skipped], [])
    assert bench.problems() == ["writes x1: peer: data MISMATCH rows 9 != acked 10"]
    assert bench.ok  # a skipped target and a peer's mismatch do not fail litegate
    bench.targets.append(failed)
    assert not bench.ok


def test_without_aiosqlite_its_contender_is_skipped(tmp_path: Path) -> None:
    res = run_async_benchmark(
        seconds=0.05,
        tasks=(1,),
        workloads=("writes",),
        directory=str(tmp_path),
        reference=False,
        with_aiosqlite=False,
        synchronous=("NORMAL",),
        isolate=False,
    )
    names = [c.name for c in res.cases[0].contenders]
    everyone = abench.contender_names("async", with_aiosqlite=False)
    assert names == [n for n in everyone if n != BARE_TO_THREAD]  # (transfers only)
    assert abench.AIOSQLITE not in names
    latency = next(t for t in res.targets if "p50" in t.subject)
    assert latency.passed is None and "not installed" in latency.note


def test_bad_task_counts_and_workloads_are_rejected() -> None:
    with pytest.raises(ValueError):
        run_async_benchmark(seconds=0.05, tasks=(0,))
    with pytest.raises(KeyError):
        run_async_benchmark(seconds=0.05, workloads=("nope",))


def test_cli_async_suite_saves_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = litegate.cli.main(
        [
            "bench",
            "--suite",
            "async",
            "--workload",
            "scans",
            "--tasks",
            "1,2",
            "--seconds",
            "0.1",
            "--synchronous",
            "full",
            "--in-process",
            "--dir",
            str(tmp_path),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "workload scans x1, synchronous=FULL" in captured.out
    assert "workload scans x2, synchronous=FULL" in captured.out
    assert "vs folk remedies" not in captured.out  # the sync suite did not run
    assert "[bench]" in captured.err
    data = json.loads(out.read_text())
    assert data["suite"] == "async"
    assert "sync" not in data
    assert [w["workload"]["name"] for w in data["async"]["workloads"]] == ["scans", "scans"]


def test_cli_rejects_bad_suite_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert litegate.cli.main(["bench", "--tasks", "0"]) == 2
    assert "task counts must be >= 1" in capsys.readouterr().err
    assert litegate.cli.main(["bench", "--suite", "sync", "--workload", "reads"]) == 2
    assert "no workload 'reads'" in capsys.readouterr().err
    assert litegate.cli.main(["bench", "--suite", "nope"]) == 2


def test_report_and_json_keep_their_layout(result: BenchResult) -> None:
    """The async suite's text columns and JSON keys (readers of saved JSON depend on them)."""
    text = abench.format_report(result)
    assert (
        "  contender                         ops/s   p50 ms   p99 ms errors  lag p99  lag max"
        "  vs raw  vs aio vs best peer  data" in text
    )
    assert (
        "\nreference: raw synchronous sqlite3, one thread, no sharing (call-cost floor)\n" in text
    )
    assert "ceilings on this machine" not in text
    data = result.as_dict()
    assert list(data) == ["meta", "reference", "workloads", "targets", "notes", "problems", "ok"]
    for r in data["reference"]:
        assert list(r) == [
            "workload",
            "name",
            "ops",
            "ops_per_s",
            "p50_ms",
            "p99_ms",
            "synchronous",
            "case",
        ]
    for w in data["workloads"]:
        assert list(w) == ["workload", "tasks", "synchronous", "baseline", "contenders"]
        assert list(w["workload"]) == ["name", "write_fraction", "description", "shape"]
        for c in w["contenders"]:
            assert list(c) == [
                "name", "kind", "workload", "tasks", "elapsed_s", "ops", "reads", "writes",
                "errors", "ops_per_s", "p50_ms", "p99_ms", "read_p50_ms", "read_p99_ms",
                "write_p50_ms", "write_p99_ms", "error_samples", "data", "extra", "synchronous",
                "by_kind", "lag_p99_ms", "lag_max_ms", "vs_raw", "vs_aiosqlite", "vs_best_peer",
            ]  # fmt: skip
            assert c["tasks"] == w["tasks"]
