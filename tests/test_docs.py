"""Docs stay complete: every CLI command and every option is documented."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import litegate
from litegate import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# The README plus the topic pages under docs/ (docs/litestream.md documents `litegate
# replicate`, `litegate restore` and the `checkpoints` option it needs).
DOCS = "\n".join([README, *(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))])


@pytest.mark.parametrize("command", sorted(cli._COMMANDS))
def test_every_command_is_documented_and_has_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert f"litegate {command}" in DOCS
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: litegate " + command)


def test_every_option_is_documented() -> None:
    doc = litegate.Options.__doc__ or ""
    for field in dataclasses.fields(litegate.Options):
        assert f":param {field.name}:" in doc, field.name
        if field.name not in (
            "path",
            "readers",
            "synchronous",
            "timeout",
            "busy_timeout",
            "time_limit",
        ):
            assert f"`{field.name}`" in DOCS, field.name


def test_every_public_callable_has_a_docstring() -> None:
    for name in litegate.__all__:
        obj = getattr(litegate, name)
        if callable(obj) and name != "Row":  # Row is sqlite3.Row itself
            assert obj.__doc__, name
    for cls in (
        litegate.Database,
        litegate.AsyncDatabase,
        litegate.Transaction,
        litegate.AsyncTransaction,
    ):
        for attr, value in vars(cls).items():
            if not attr.startswith("_") and callable(value):
                assert value.__doc__, f"{cls.__name__}.{attr}"


def test_version_and_usage_errors() -> None:
    assert cli.main(["--version"]) == 0
    assert cli.main([]) == 2
    assert cli.main(["no-such-command"]) == 2


def test_python_dash_m_smoke() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "litegate", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == f"litegate {litegate.__version__}"


def test_a_command_that_cannot_import_does_not_break_the_others(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli._COMMANDS, "broken", ("litegate._no_such_module", "a broken command"))
    assert cli.main(["broken"]) == 2
    assert "not installed" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
