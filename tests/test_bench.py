"""The sync benchmark suite, run in-process for a fraction of a second (structure, not speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import litegate.cli
from litegate import _bench
from litegate._bench import SYNC_THREADS, run_benchmark, sync_suite

CONTENDERS = _bench.contender_names("sync")
MODES = ("NORMAL", "FULL")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> _bench.BenchResult:
    directory = tmp_path_factory.mktemp("bench")
    return run_benchmark(seconds=0.08, directory=str(directory), rows=2_000, isolate=False)


def test_every_workload_runs_every_contender_that_can(result: _bench.BenchResult) -> None:
    assert [(w.workload.name, w.synchronous) for w in result.cases] == [
        (name, mode) for mode in MODES for name in SYNC_THREADS
    ]
    for w in result.cases:
        assert [c.name for c in w.contenders] == CONTENDERS
        assert w.workers == SYNC_THREADS[w.workload.name]
        for c in w.contenders:
            assert c.ops > 0, (w.workload.name, c.name)
            assert c.ops == c.reads + c.writes
            assert c.workers == w.workers and c.synchronous == w.synchronous
            assert c.ops_per_s > 0
            assert 0 < c.p50_ms <= c.p99_ms
            assert sum(int(k["ops"]) for k in c.by_kind.values()) == c.ops
            assert c.lag_p99_ms is None  # threads: no loop
            ratio = c.ratios["ratio"]
            assert ratio is not None and ratio > 0


def test_every_file_holds_exactly_the_acknowledged_work(result: _bench.BenchResult) -> None:
    for w in result.cases:
        for c in w.contenders:
            if c.kind == "litegate":
                assert c.errors == 0, c.error_samples
                assert c.writes > 0
                if w.workload.name != "transfers":
                    assert c.extra["batches"] > 0
            assert c.data.ok, (c.name, c.data)
            d = c.data
            assert (
                d.found_inserts + d.found_updates + c.by_kind.get("transfer", {}).get("ops", 0)
                == c.writes
            )
            if w.workload.name == "transfers":
                # every transfer committed; those that moved money are counted exactly
                assert 0 < d.found_transfers == d.expected_transfers <= c.writes
                assert d.balance_sum == 1_000_000 and d.min_balance >= 0
    assert not result.problems("litegate")


def test_workload_shapes(result: _bench.BenchResult) -> None:
    for w in result.cases:
        if w.workload.name == "mixed":
            for c in w.contenders:
                assert c.reads > c.writes  # 90% reads
                # Writes alternate UPDATE, INSERT (workloads._points): a contender that made
                # two writes has both kinds. (A 0.08 s case on a slow machine made one write.)
                kinds = {"read"} | ({"update"} if c.writes else set())
                assert set(c.by_kind) == kinds | ({"insert"} if c.writes >= 2 else set())
        elif w.workload.name == "writes":
            assert w.baseline == "sqlite3 + Lock"
            assert all(c.reads == 0 for c in w.contenders)
        else:
            assert all(set(c.by_kind) == {"transfer"} for c in w.contenders)
        if w.workload.name != "writes":
            remedies = [c for c in w.contenders if c.kind == "remedy"]
            assert w.baseline == max(remedies, key=lambda c: c.ops_per_s).name
            assert max(c.ratios["ratio"] or 0 for c in remedies) == 1.0


def test_targets_and_report(result: _bench.BenchResult) -> None:
    lg = [n for n in CONTENDERS if n.startswith("litegate")]
    expected = {
        (f"{w} {m}", n)
        for m in MODES
        for w in SYNC_THREADS
        for n in lg
        if (w, m) in sync_suite.TARGETS
    }
    assert {(t.name, t.subject) for t in result.targets} == expected
    for t in result.targets:
        w, m = t.name.split()
        assert t.threshold == sync_suite.TARGETS[(w, m)]
        assert t.text.startswith("PASS" if t.passed else "FAIL")
        assert "ceiling bare group commit = " in t.note
        if w == "transfers":
            assert "raw one-thread = " in t.note
    text = _bench.format_report(result)
    for name in CONTENDERS:
        assert name in text
    for r in result.reference:
        assert r.name in text
    assert [(r.workload, r.synchronous) for r in result.reference] == [
        (w, m) for m in MODES for w in SYNC_THREADS
    ] + [("", "FULL")]
    assert result.reference[-1].name == _bench.HANDOFF_FLOOR
    assert "ceilings on this machine" in text
    assert "writes FULL (vs sqlite3 + Lock): ceiling bare group commit = " in text
    assert "hand-off floor = " in text
    assert "workload transfers, synchronous=NORMAL: 8 threads" in text
    assert "(litegate readers=4, ms by kind: read " in text


def test_ceiling_is_reported_but_never_a_baseline_or_a_target(
    result: _bench.BenchResult,
) -> None:
    for w in result.cases:
        for ceiling in (c for c in w.contenders if c.kind == "ceiling"):
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
    check = _bench.DataCheck(
        ok=False,
        expected_inserts=0,
        found_inserts=0,
        expected_updates=0,
        found_updates=0,
        integrity="ok",
        expected_transfers=3,
        found_transfers=2,
        balance_sum=999_990,
        min_balance=-10,
    )
    assert check.text == (
        "MISMATCH transfers 2 != acked 3; balances sum to 999990, not 1000000; "
        "a balance is negative (-10)"
    )


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
            "0.1",
            "--workload",
            "transfers,reads",  # (reads: async only, so not in this sync run)
            "--synchronous",
            "normal",
            "--no-reference",
            "--in-process",
            "--dir",
            str(tmp_path),
            "--json",
            str(out),
        ]
    )
    assert code == 0  # targets are reported, not enforced, without --check
    captured = capsys.readouterr()
    assert "workload transfers, synchronous=NORMAL" in captured.out
    assert "synchronous=FULL" not in captured.out
    assert "[bench]" in captured.err
    data = json.loads(out.read_text())
    assert data["suite"] == "sync" and "async" not in data
    sync = data["sync"]
    assert [(w["workload"]["name"], w["synchronous"]) for w in sync["workloads"]] == [
        ("transfers", "NORMAL")
    ]
    assert sync["reference"] == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seconds", "0"], "must be > 0"),
        (["--synchronous", "off"], "expected normal, full or normal,full"),
        (["--synchronous", ""], "expected normal, full or normal,full"),
        (["--workload", "writes,transfer"], "expected all or a comma list of mixed, reads"),
        (["--workload", ","], "expected all or a comma list of"),
        (["--suite", "sync", "--workload", "reads,scans"], "the sync suite has no workload"),
    ],
)
def test_cli_rejects_bad_options(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert litegate.cli.main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_report_and_json_keep_their_layout(result: _bench.BenchResult) -> None:
    """The text columns and JSON keys (readers of saved JSON depend on them)."""
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
    data = json.loads(json.dumps(result.as_dict()))
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
    writes = data["workloads"][1]
    assert list(writes) == ["workload", "threads", "synchronous", "baseline", "contenders"]
    assert writes["workload"]["name"] == "writes" and writes["threads"] == 64
    for c in writes["contenders"]:
        assert list(c) == [
            "name", "kind", "workload", "threads", "elapsed_s", "ops", "reads", "writes",
            "errors", "ops_per_s", "p50_ms", "p99_ms", "read_p50_ms", "read_p99_ms",
            "write_p50_ms", "write_p99_ms", "error_samples", "data", "extra", "synchronous",
            "by_kind", "lag_p99_ms", "lag_max_ms", "ratio",
        ]  # fmt: skip
        assert c["threads"] == 64 and c["data"]["text"] == "ok"
    for t in data["targets"]:
        assert list(t) == [
            "name", "subject", "ratio", "threshold", "note", "versus", "unit", "at_most",
            "passed", "text",
        ]  # fmt: skip
