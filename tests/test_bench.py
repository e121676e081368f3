"""The benchmark harness, run in-process for a fraction of a second (structure, not speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import litegate.cli
from litegate import _bench
from litegate._bench import SYNC_THREADS, run_benchmark

CONTENDERS = _bench.contender_names("sync")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> _bench.BenchResult:
    directory = tmp_path_factory.mktemp("bench")
    return run_benchmark(seconds=0.3, directory=str(directory))


def test_every_workload_runs_every_contender(result: _bench.BenchResult) -> None:
    assert [w.workload.name for w in result.cases] == list(SYNC_THREADS)
    for w in result.cases:
        assert [c.name for c in w.contenders] == list(CONTENDERS)
        assert w.workers == SYNC_THREADS[w.workload.name]
        for c in w.contenders:
            assert c.ops > 0, (w.workload.name, c.name)
            assert c.ops == c.reads + c.writes
            assert c.workers == w.workers
            assert c.ops_per_s > 0
            assert 0 < c.p50_ms <= c.p99_ms
            ratio = c.ratios["ratio"]
            assert ratio is not None and ratio > 0


def test_litegate_has_no_errors_and_exact_data(result: _bench.BenchResult) -> None:
    for w in result.cases:
        for c in w.contenders:
            if c.kind == "litegate":
                assert c.errors == 0, c.error_samples
                assert c.writes > 0
                assert c.extra["batches"] > 0
            # Every contender's file holds exactly its acknowledged writes.
            assert c.data.ok, (c.name, c.data)
            assert c.data.found_inserts + c.data.found_updates == c.writes
    assert not result.problems("litegate")


def test_workload_shapes(result: _bench.BenchResult) -> None:
    mixed, writes = result.cases
    for c in mixed.contenders:
        assert c.reads > c.writes  # 90% reads
    for c in writes.contenders:
        assert c.reads == 0
    assert writes.baseline == "sqlite3 + Lock"
    assert mixed.baseline in {c.name for c in mixed.contenders if c.kind == "remedy"}
    best = max(c.ops_per_s for c in mixed.contenders if c.kind == "remedy")
    assert max(c.ratios["ratio"] or 0 for c in mixed.contenders if c.kind == "remedy") == 1.0
    assert best > 0


def test_targets_and_report(result: _bench.BenchResult) -> None:
    targets = result.targets
    assert {(t.name, t.subject) for t in targets} == {
        (w, name) for w in SYNC_THREADS for name in CONTENDERS if name.startswith("litegate")
    }
    for t in targets:
        assert t.threshold == (1.5 if t.name == "mixed" else 10.0)
        assert t.text.startswith("PASS" if t.passed else "FAIL")
    text = _bench.format_report(result)
    for name in CONTENDERS:
        assert name in text
    assert "raw sqlite3 point read" in text
    assert "raw sqlite3 FULL single-row commit" in text
    data = json.loads(json.dumps(result.as_dict()))
    assert set(data["workloads"]) == set(SYNC_THREADS)
    assert [r["name"] for r in data["reference"]] == [
        "raw sqlite3 point read",
        "raw sqlite3 FULL single-row commit",
        _bench.HANDOFF_FLOOR,
    ]
    assert all(r["ops"] > 0 for r in data["reference"])
    # The ceilings block relates the ceiling contender and the hand-off floor to the baselines.
    assert "ceilings on this machine" in text
    assert f"writes: {_bench.HANDOFF_FLOOR} = " in text
    for w in SYNC_THREADS:
        assert f"{w}: ceiling: bare group commit = " in text


def test_ceiling_is_reported_but_never_a_baseline_or_a_target(
    result: _bench.BenchResult,
) -> None:
    for w in result.cases:
        ceiling = next(c for c in w.contenders if c.kind == "ceiling")
        assert ceiling.errors == 0 and ceiling.data.ok
        assert w.baseline != ceiling.name
    assert all(t.subject != ceiling.name for t in result.targets)


def test_handoff_floor_counts_every_handoff() -> None:
    n, elapsed, lat = _bench.handoff_floor(4, 0.2)
    assert n == len(lat) > 0
    assert 0.2 <= elapsed < 5.0
    assert all(x > 0 for x in lat)


def test_a_data_mismatch_is_reported() -> None:
    check = _bench.DataCheck(
        ok=False,
        expected_inserts=10,
        found_inserts=9,
        expected_updates=5,
        found_updates=5,
        integrity="ok",
    )
    assert check.text == "MISMATCH rows 9 != acked 10"


def test_cli_runs_one_workload_and_saves_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    code = litegate.cli.main(
        [
            "bench",
            "--suite",
            "sync",
            "--seconds",
            "0.2",
            "--workload",
            "writes",
            "--no-reference",
            "--dir",
            str(tmp_path),
            "--json",
            str(out),
        ]
    )
    assert code == 0  # targets are reported, not enforced, without --check
    captured = capsys.readouterr()
    assert "workload writes" in captured.out
    assert "[bench]" in captured.err
    data = json.loads(out.read_text())
    assert list(data["workloads"]) == ["writes"]
    assert data["reference"] == []


def test_cli_rejects_a_bad_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert litegate.cli.main(["bench", "--seconds", "0"]) == 2
    assert "must be > 0" in capsys.readouterr().err


def test_report_and_json_keep_their_layout(result: _bench.BenchResult) -> None:
    """The text columns and JSON keys of the sync suite are what they were before the async
    suite shared its types (readers of saved JSON depend on them)."""
    text = _bench.format_report(result)
    assert text.startswith("litegate ") and " vs folk remedies: " in text.splitlines()[0]
    assert "\nreference (one thread, no sharing)\n" in text
    assert (
        "  contender                         ops/s   p50 ms   p99 ms  errors  vs best remedy  data"
        in text
    )
    assert (
        "  contender                         ops/s   p50 ms   p99 ms  errors         vs lock  data"
        in text
    )
    data = result.as_dict()
    assert list(data) == ["meta", "reference", "workloads", "targets", "problems", "ok"]
    assert [list(r) for r in data["reference"]] == [
        ["name", "ops", "ops_per_s", "p50_ms", "p99_ms"]
    ] * 3
    writes = data["workloads"]["writes"]
    assert list(writes) == ["workload", "baseline", "contenders"]
    assert writes["workload"] == {
        "name": "writes",
        "threads": 64,
        "write_fraction": 1.0,
        "description": "64 threads, single-row write transactions",
    }
    for c in writes["contenders"]:
        assert list(c) == [
            "name", "kind", "workload", "threads", "elapsed_s", "ops", "reads", "writes",
            "errors", "ops_per_s", "p50_ms", "p99_ms", "read_p50_ms", "read_p99_ms",
            "write_p50_ms", "write_p99_ms", "error_samples", "data", "extra", "ratio",
        ]  # fmt: skip
        assert c["threads"] == 64 and c["data"]["text"] == "ok"
    for t in data["targets"]:
        assert list(t) == ["workload", "contender", "baseline", "ratio", "threshold", "passed"]
