from __future__ import annotations

import importlib
import sqlite3

import litegate


def test_all_is_sorted_and_complete() -> None:
    names = list(litegate.__all__)
    assert names == sorted(names)
    public = {n for n in dir(litegate) if not n.startswith("_") and n[0].isupper()}
    public |= {"connect"}
    assert public <= set(names), public - set(names)
    for name in names:
        assert hasattr(litegate, name)


def test_public_classes_live_in_litegate() -> None:
    for name in ("Database", "Transaction", "Snapshot", "Stats", "Error", "Closed", "Busy"):
        assert getattr(litegate, name).__module__ == "litegate"


def test_modules_have_tuple_all() -> None:
    for module in ("litegate._errors", "litegate._database", "litegate._engine"):
        mod = importlib.import_module(module)
        assert isinstance(mod.__all__, tuple)


def test_error_tree() -> None:
    assert issubclass(litegate.PoolTimeout, litegate.Timeout)
    assert issubclass(litegate.WriteTimeout, litegate.Timeout)
    assert issubclass(litegate.QueryTimeout, litegate.Timeout)
    assert issubclass(litegate.Timeout, TimeoutError)
    for exc in (
        litegate.Closed,
        litegate.Busy,
        litegate.Misuse,
        litegate.MigrationError,
        litegate.RolledBack,
    ):
        assert issubclass(exc, litegate.Error)
    assert not issubclass(litegate.RolledBack, litegate.Misuse)  # SQLite's rollback is no misuse
    # a refused statement: litegate's Misuse, and the DatabaseError SQLite's refusal always was
    assert issubclass(litegate.Refused, litegate.Misuse)
    assert issubclass(litegate.Refused, sqlite3.DatabaseError)
    assert "Refused" in (litegate._errors.__doc__ or "")
    from litegate import debug

    for detector_error in (debug.CrossThreadUse, debug.ConcurrentUse):
        assert issubclass(detector_error, litegate.Misuse)
        assert issubclass(detector_error, sqlite3.ProgrammingError)
        assert detector_error.__name__ in (
            litegate._errors.__doc__ or ""
        )  # drawn in the documented tree


def test_core_imports_only_stdlib() -> None:
    """``import litegate`` pulls in no third-party package (checked in a fresh interpreter:
    this test session imports the optional integrations too)."""
    import subprocess
    import sys

    code = (
        "import sys, litegate, litegate.migrate; "
        "print(sorted(m for m in ('starlette', 'fastapi', 'uvicorn', 'aiosqlite', 'httpx', "
        "'anyio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
