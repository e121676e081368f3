"""Run aiosqlite's own test suite (``aiosqlite.tests.smoke``) against ``litegate.aio``.

Run as a script by ``tests/aio/test_conformance.py`` (a process of its own). The suite lives
inside the aiosqlite package and names the module through one global, ``aiosqlite``, which is
pointed at ``litegate.aio`` here. Writes one JSON object to the file named by its first
argument: the ids of the tests that failed or errored, the skipped ones, and how many ran.
"""

from __future__ import annotations

import io
import json
import sys
import unittest

import aiosqlite.tests.smoke as smoke

import litegate.aio


def main() -> None:
    smoke.aiosqlite = litegate.aio  # type: ignore[attr-defined]
    target, *picked = sys.argv[1:]
    loader = unittest.defaultTestLoader
    if picked:
        suite = loader.loadTestsFromNames([f"aiosqlite.tests.smoke.SmokeTest.{p}" for p in picked])
    else:
        suite = loader.loadTestsFromTestCase(smoke.SmokeTest)
    ids = [t.id() for t in suite if isinstance(t, unittest.TestCase)]
    stream = io.StringIO()
    result = unittest.TextTestRunner(stream=stream, verbosity=2).run(suite)
    out = {
        "run": result.testsRun,
        "ids": ids,
        "failed": sorted(t.id() for t, _ in result.failures + result.errors),
        "skipped": sorted(t.id() for t, _ in result.skipped),
        "details": {t.id(): tb[-3000:] for t, tb in result.failures + result.errors},
    }
    with open(target, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
