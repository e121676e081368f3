"""`litegate demo`: runs for a second and proves its invariants; its checker can fail."""

from __future__ import annotations

import dataclasses

import pytest

import litegate.cli
from litegate._demo.threads import TOTAL, Observed, check_invariants, run_demo


def _good() -> Observed:
    return Observed(
        final_total=TOTAL,
        negative_balances=0,
        ledger_rows=42,
        acknowledged_inserts=42,
        snapshots=7,
        bad_snapshots=0,
        errors=0,
        integrity="ok",
    )


def test_demo_cli_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code = litegate.cli.main(["demo", "--threads", "--seconds", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS: all 6 invariants hold" in out
    assert "FAIL" not in out
    for op in ("transfer", "read", "insert", "snapshot"):
        assert op in out
    assert "group commits" in out


@pytest.mark.parametrize("readers", [pytest.param(0, id="readers=0"), "per-thread"])
def test_demo_holds_in_other_read_modes(readers: int | str) -> None:
    report = run_demo(seconds=0.5, threads=8, readers=readers, seed=3)
    assert report.ok, [c for c in report.checks if not c.ok]
    assert all(report.counts[op] > 0 for op in ("transfer", "read", "insert"))
    assert report.observed.ledger_rows == report.counts["insert"]


def test_checker_accepts_a_good_run() -> None:
    assert all(c.ok for c in check_invariants(_good()))


def test_checker_fails_on_a_wrong_total() -> None:
    checks = check_invariants(_good(), expected_total=TOTAL + 1)
    failed = [c.name for c in checks if not c.ok]
    assert failed == ["total balance unchanged"]


@pytest.mark.parametrize(
    ("change", "broken"),
    [
        pytest.param({"ledger_rows": 41}, "ledger rows == acknowledged inserts", id="lost-insert"),
        pytest.param({"bad_snapshots": 1}, "every snapshot summed to the total", id="torn-read"),
        pytest.param({"errors": 2}, "zero errors", id="errors"),
        pytest.param({"negative_balances": 1}, "no negative balance", id="overdrawn"),
        pytest.param({"integrity": "corrupt"}, "integrity_check", id="integrity"),
    ],
)
def test_checker_catches_each_broken_invariant(change: dict[str, object], broken: str) -> None:
    checks = check_invariants(dataclasses.replace(_good(), **change))  # type: ignore[arg-type]
    assert [c.name for c in checks if not c.ok] == [broken]
