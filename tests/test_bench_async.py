"""The async benchmark harness, run in-process for a fraction of a second (structure, not
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

TASKS = (1, 8)
HAVE_AIOSQLITE = abench.aiosqlite_version() is not None
NAMES = abench.contender_names("async", with_aiosqlite=HAVE_AIOSQLITE)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> BenchResult:
    directory = tmp_path_factory.mktemp("abench")
    return run_async_benchmark(seconds=0.3, tasks=TASKS, directory=str(directory))


def test_every_workload_and_task_count_runs_every_contender(result: BenchResult) -> None:
    expected = [(w, n) for w in ASYNC_WORKLOADS for n in TASKS]
    assert [(w.workload.name, w.workers) for w in result.cases] == expected
    for w in result.cases:
        assert [c.name for c in w.contenders] == NAMES
        for c in w.contenders:
            where = (w.workload.name, w.workers, c.name)
            assert c.ops > 0, where
            assert c.ops == c.reads + c.writes
            assert c.workers == w.workers
            assert c.ops_per_s > 0
            assert 0 < c.p50_ms <= c.p99_ms, where
            vs_raw = c.ratios["vs_raw"]
            assert vs_raw is not None and vs_raw > 0
            if HAVE_AIOSQLITE:
                assert c.ratios["vs_aiosqlite_full"] is not None
                assert c.ratios["vs_aiosqlite_normal"] is not None


def test_litegate_has_no_errors_and_exact_data(result: BenchResult) -> None:
    for w in result.cases:
        for c in w.contenders:
            if c.kind == "litegate":
                assert c.errors == 0, c.error_samples
                if w.workload.write_fraction:
                    assert c.writes > 0
                    assert c.extra["batches"] > 0
                    assert c.extra["jobs_failed"] == 0
            # Every contender's file holds exactly its acknowledged writes.
            assert c.data.ok, (w.workload.name, w.workers, c.name, c.data)
            assert c.data.found_inserts + c.data.found_updates == c.writes
    assert not result.problems("litegate")


def test_workload_shapes(result: BenchResult) -> None:
    for w in result.cases:
        for c in w.contenders:
            if w.workload.name == "reads":
                assert c.writes == 0
            elif w.workload.name == "writes":
                assert c.reads == 0
            else:
                assert c.reads > c.writes  # 90% reads
        if HAVE_AIOSQLITE:
            full = w.get(abench.AIOSQLITE_FULL)
            assert full is not None and full.ratios["vs_aiosqlite_full"] == 1.0
    assert [r.workload for r in result.reference] == list(ASYNC_WORKLOADS)
    assert all(r.ops > 0 for r in result.reference)


def test_targets_and_report(result: BenchResult) -> None:
    text = abench.format_report(result)
    lines = [t.text for t in result.targets]
    assert any(line.endswith("(target >= 0.5x)") and "reads x8" in line for line in lines)
    assert any("writes x8" in line and "aiosqlite FULL" in line for line in lines)
    assert any("writes x8" in line and "aiosqlite NORMAL" in line for line in lines)
    for w in ASYNC_WORKLOADS:
        assert any(line.split(":")[0].endswith(f"{w} x1 latency") for line in lines)
    assert len(lines) == 6
    for t in result.targets:
        if HAVE_AIOSQLITE or "aiosqlite" not in t.subject:
            assert t.ratio is not None and t.ratio > 0
            assert t.text.startswith("PASS" if t.passed else "FAIL")
        else:
            assert t.text.startswith("SKIP")
        assert f"  {t.text}" in text
    assert "\ntargets\n" in text
    for name in NAMES:
        assert name in text
    for r in result.reference:
        assert r.name in text
    for w in ASYNC_WORKLOADS:
        for n in TASKS:
            assert f"workload {w} x{n}:" in text
    data = json.loads(json.dumps(result.as_dict()))
    assert len(data["workloads"]) == len(ASYNC_WORKLOADS) * len(TASKS)
    assert len(data["targets"]) == 6
    assert data["meta"]["tasks"] == list(TASKS)


def test_skipped_target_and_data_mismatch_are_reported() -> None:
    skipped = Target("writes x64", "x vs aiosqlite FULL", None, 10.0, "not installed")
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
    case = CaseResult(WORKLOADS["writes"], 1, "writes x1", [res])
    bench = BenchResult(abench.ASYNC_LAYOUT, {}, [], [case], [skipped], [])
    assert bench.problems() == ["writes x1: peer: data MISMATCH rows 9 != acked 10"]
    assert bench.ok  # a skipped target and a peer's mismatch do not fail litegate
    bench.targets.append(failed)
    assert not bench.ok


def test_without_aiosqlite_its_contenders_are_skipped(tmp_path: Path) -> None:
    res = run_async_benchmark(
        seconds=0.05,
        tasks=(1,),
        workloads=("writes",),
        directory=str(tmp_path),
        reference=False,
        with_aiosqlite=False,
    )
    names = [c.name for c in res.cases[0].contenders]
    assert names == abench.contender_names("async", with_aiosqlite=False)
    assert all(t.passed is None for t in res.targets)  # all need aiosqlite or the reference
    assert res.ok


def test_bad_task_counts_are_rejected() -> None:
    with pytest.raises(ValueError):
        run_async_benchmark(seconds=0.05, tasks=(0,))


def test_cli_async_suite_saves_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = litegate.cli.main(
        [
            "bench",
            "--suite",
            "async",
            "--workload",
            "reads",
            "--tasks",
            "1,2",
            "--seconds",
            "0.1",
            "--dir",
            str(tmp_path),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "workload reads x1" in captured.out
    assert "workload reads x2" in captured.out
    assert "vs folk remedies" not in captured.out  # the sync suite did not run
    assert "[bench]" in captured.err
    data = json.loads(out.read_text())
    assert data["suite"] == "async"
    assert "workloads" not in data
    assert [w["workload"]["name"] for w in data["async"]["workloads"]] == ["reads", "reads"]


def test_cli_rejects_bad_suite_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert litegate.cli.main(["bench", "--tasks", "0"]) == 2
    assert "task counts must be >= 1" in capsys.readouterr().err
    assert litegate.cli.main(["bench", "--suite", "sync", "--workload", "reads"]) == 2
    assert "no workload 'reads'" in capsys.readouterr().err
    assert litegate.cli.main(["bench", "--suite", "nope"]) == 2


def test_report_and_json_keep_their_layout(result: BenchResult) -> None:
    """The async suite's text columns and JSON keys are what they were before the sync suite
    shared its types (readers of saved JSON depend on them)."""
    text = abench.format_report(result)
    assert (
        "  contender               ops/s   p50 ms   p99 ms errors  vs raw vs aio FULL "
        "vs aio NORMAL  data" in text
    )
    assert (
        "\nreference: raw synchronous sqlite3, one thread, no sharing (call-cost floor)\n" in text
    )
    assert "ceilings on this machine" not in text
    data = result.as_dict()
    assert list(data) == ["meta", "reference", "workloads", "targets", "notes", "problems", "ok"]
    for r in data["reference"]:
        assert list(r) == ["workload", "name", "ops", "ops_per_s", "p50_ms", "p99_ms"]
    for w in data["workloads"]:
        assert list(w) == ["workload", "tasks", "contenders"]
        assert list(w["workload"]) == ["name", "write_fraction", "description"]
        for c in w["contenders"]:
            assert list(c) == [
                "name", "kind", "workload", "tasks", "elapsed_s", "ops", "reads", "writes",
                "errors", "ops_per_s", "p50_ms", "p99_ms", "read_p50_ms", "read_p99_ms",
                "write_p50_ms", "write_p99_ms", "error_samples", "data", "extra", "vs_raw",
                "vs_aiosqlite_full", "vs_aiosqlite_normal",
            ]  # fmt: skip
            assert c["tasks"] == w["tasks"]
    for t in data["targets"]:
        assert list(t) == ["name", "subject", "ratio", "threshold", "note", "passed", "text"]
