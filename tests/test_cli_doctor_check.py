"""`litegate doctor` and `litegate check` through the CLI entry point."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from litegate.cli import main

CASES = Path(__file__).parent / "doctor" / "cases"


def test_doctor_findings_exit_1_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", str(CASES / "global_threads.py")]) == 1
    out = capsys.readouterr().out
    assert "LG104" in out and "LG102" in out and "fix:" in out
    assert out.rstrip().endswith("4 findings in 1 file (1 file checked)")


def test_doctor_clean_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(p) for p in sorted(CASES.glob("ok_*.py"))]
    assert main(["doctor", *paths]) == 0
    assert "no findings (3 files checked)" in capsys.readouterr().out


def test_doctor_json_and_sarif(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json", str(CASES / "starlette_store.py")]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(f["rule"], f["line"]) for f in doc["findings"]] == [
        ("LG101", 23),
        ("LG101", 26),
        ("LG101", 29),
    ]
    assert main(["doctor", "--sarif", str(CASES)]) == 1
    log = json.loads(capsys.readouterr().out)
    assert log["version"] == "2.1.0"
    assert {r["ruleId"] for r in log["runs"][0]["results"]} >= {"LG101", "LG103"}


def test_doctor_select(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json", "--select", "LG103", str(CASES)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert {f["rule"] for f in doc["findings"]} == {"LG103"}


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["doctor"], id="no-path"),
        pytest.param(["doctor", "does/not/exist"], id="missing-path"),
        pytest.param(["doctor", "--select", "LG999", "."], id="bad-rule"),
        pytest.param(["doctor", "--json", "--sarif", "."], id="two-formats"),
        pytest.param(["check"], id="check-no-db"),
        pytest.param(["check", "does-not-exist.db"], id="check-missing"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_doctor_list_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--list-rules"]) == 0
    out = capsys.readouterr().out
    for rule in ("LG101", "LG102", "LG103", "LG104", "LG105", "LG106", "LG107"):
        assert rule in out


def _db(path: Path, *, wal: bool) -> Path:
    with closing(sqlite3.connect(path)) as conn:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
    return path


def test_check_healthy_and_rollback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(_db(tmp_path / "wal.db", wal=True))]) == 0
    out = capsys.readouterr().out
    assert "journal_mode:   wal" in out and out.rstrip().endswith("healthy")
    assert main(["check", str(_db(tmp_path / "old.db", wal=False))]) == 1
    out = capsys.readouterr().out
    assert "warning: journal_mode is DELETE" in out
    assert out.rstrip().endswith("problems found")


def test_check_corrupted_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00garbage" * 100)
    assert main(["check", "--json", str(bad)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert doc["problems"][0]["code"] == "not-a-database"


def test_check_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _db(tmp_path / "old.db", wal=False)
    assert main(["check", "--fix", str(path)]) == 0
    assert "fixed:          journal_mode set to WAL" in capsys.readouterr().out


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("doctor", "check"):
        assert main([command, "-h"]) == 0
        assert "examples:" in capsys.readouterr().out


def test_subprocess_smoke() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "litegate", "doctor", str(CASES / "async_routes.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "LG103" in out.stdout
