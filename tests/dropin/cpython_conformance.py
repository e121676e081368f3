"""Run CPython's own ``test_sqlite3`` suite against ``litegate.sqlite3`` in place of ``sqlite3``.

Run as a script by ``tests/dropin/test_conformance.py`` (a process of its own: the standard
module is swapped in ``sys.modules``). Writes one JSON object to the file named by its first argument: the ids of the tests that
failed or errored, the skipped ones, and how many ran.
"""

from __future__ import annotations

import io
import json
import sqlite3.dump as std_dump
import sys
import unittest

import litegate.sqlite3 as drop_in  # (before the swap: litegate binds the real sqlite3)
import litegate.sqlite3.dbapi2 as drop_in_dbapi2

MODULES = (
    "test_backup",
    "test_dbapi",
    "test_dump",
    "test_factory",
    "test_hooks",
    "test_regression",
    "test_transactions",
    "test_types",
    "test_userfunctions",
)


def _flatten(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    out: list[unittest.TestCase] = []
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def main() -> None:
    sys.modules["sqlite3"] = drop_in
    sys.modules["sqlite3.dbapi2"] = drop_in_dbapi2
    sys.modules["sqlite3.dump"] = std_dump  # (the tests import the standard module's helper)
    target, *picked = sys.argv[1:]
    names = picked or [f"test.test_sqlite3.{m}" for m in MODULES]
    suite = unittest.defaultTestLoader.loadTestsFromNames(names)
    ids = [t.id() for t in _flatten(suite)]
    result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
    out = {
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "run": result.testsRun,
        "ids": ids,
        "failed": sorted(t.id() for t, _ in result.failures + result.errors),
        "unexpected_success": sorted(t.id() for t in result.unexpectedSuccesses),
        "skipped": sorted(t.id() for t, _ in result.skipped),
        "details": {t.id(): tb[-2000:] for t, tb in result.failures + result.errors},
    }
    with open(target, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
