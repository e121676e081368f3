"""`litegate demo` (the web demo): both apps under uvicorn, side by side; exit 0 only if
litegate's run had no error and its data check passed."""

from __future__ import annotations

import argparse

import pytest

import litegate.cli
from litegate._demo import cli as demo_cli

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from litegate._demo import web


@pytest.mark.skipif(web.examples_dir() is None, reason="needs the repository's examples/")
def test_web_demo_passes_and_prints_both_apps(capsys: pytest.CaptureFixture[str]) -> None:
    code = litegate.cli.main(["demo", "--requests", "600", "--seed", "3"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out + captured.err
    header = next(line for line in out.splitlines() if "litegate" in line and "naive" in line)
    assert header.index("litegate") < header.index("naive sqlite3")
    for row in ("requests", "2xx", "500", "latency p50 ms", "latency p99 ms", "data check"):
        assert row in out, row
    assert "SQLite objects created in a thread" in out  # the naive app's errors are shown
    assert "PASS: litegate served 600 requests" in out
    assert "[" in captured.err and "600/600" in captured.err  # the progress bar


def test_web_demo_without_examples_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(web, "examples_dir", lambda: None)
    assert litegate.cli.main(["demo", "--requests", "10"]) == 2
    assert "examples/" in capsys.readouterr().err


def test_formatting_a_failed_litegate_run_says_fail() -> None:
    bad = web.LoadResult(requests=10)
    bad.status[200] = 9
    bad.status[500] = 1
    bad.retrievals_recorded = 0
    good = web.LoadResult(requests=10)
    good.status[200] = 10
    good.retrievals_recorded = 0
    assert web.verdict(web.AppRun("litegate", "x", good, 1, ""))
    text = web.format_side_by_side([web.AppRun("litegate", "x", bad, 1, "")])
    assert "FAIL: litegate had 1 error(s)" in text
    lost = web.LoadResult(requests=10, marks_ok=5)
    lost.status[200] = 10
    lost.retrievals_recorded = 3
    assert not lost.data_ok and lost.lost_updates == 2


@pytest.mark.parametrize(
    ("argv", "threads"),
    [([], None), (["--threads"], 16), (["--threads", "4"], 4)],
)
def test_threads_flag_selects_the_thread_demo(argv: list[str], threads: int | None) -> None:
    parser = argparse.ArgumentParser()
    demo_cli.configure(parser)
    assert parser.parse_args(argv).threads == threads
