"""`litegate demo` (the web demo): both apps under uvicorn, side by side; exit 0 only if
litegate's run had no error and its data check passed."""

from __future__ import annotations

import argparse
import re
import sys

import pytest

import litegate.cli
from litegate._demo import cli as demo_cli

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httptools")

from litegate._demo import web
from litegate._demo.load import LoadResult


def _cells(out: str, row: str) -> list[str]:
    """The cells of a table row (after its name)."""
    line = next(line for line in out.splitlines() if line.strip().startswith(row))
    return line.strip()[len(row) :].split()


def test_web_demo_passes_and_prints_both_apps(capsys: pytest.CaptureFixture[str]) -> None:
    code = litegate.cli.main(["demo", "--requests", "600", "--seed", "3"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out + captured.err
    header = next(line for line in out.splitlines() if "litegate" in line and "naive" in line)
    assert header.index("litegate") < header.index("naive sqlite3")
    for row in (
        "requests",
        "2xx",
        "500",
        "requests/s",
        "latency p50 ms",
        "latency p99 ms",
        "data check",
    ):
        assert row in out, row
    # what serves and what loads is said: uvicorn[standard], and the generator's processes
    assert "2 workers, uvloop loop, httptools parser" in out
    assert "from 256 keep-alive connections in 2 load processes" in out
    assert "Nagle" not in out  # uvloop is installed: no stall to warn about
    assert _cells(out, "requests")[0] == "600"
    assert _cells(out, "transport errors")[0] == "0"
    done, written = _cells(out, "read back intact")[0].split("/")
    assert done == written and int(written) > 0
    assert "SQLite objects created in a thread" in out  # the naive app's errors are shown
    assert int(_cells(out, "500")[1]) > 0  # ... and counted
    assert re.search(r"PASS: litegate served 600 requests .* all \d+ acknowledged writes", out)
    assert "[" in captured.err and "600/600" in captured.err  # the progress bar


def test_web_demo_without_the_extra_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    assert litegate.cli.main(["demo", "--requests", "10"]) == 2
    err = capsys.readouterr().err
    assert "uvicorn" in err and "pip install 'litegate[starlette]'" in err


def test_formatting_a_failed_litegate_run_says_fail() -> None:
    bad = LoadResult(requests=10)
    bad.status[200] = 9
    bad.status[500] = 1
    bad.retrievals_recorded = 0
    good = LoadResult(requests=10)
    good.status[200] = 10
    good.retrievals_recorded = 0
    assert web.verdict(web.AppRun("litegate", "x", good, 1, ""))
    text = web.format_side_by_side([web.AppRun("litegate", "x", bad, 1, "")])
    assert "FAIL: litegate had 1 error(s)" in text
    lost = LoadResult(requests=10, marks_ok=5)
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
