"""Tests against a real dqlite cluster (issue 14). A package so that its conftest is
``dqlite.conftest``, not a second top-level ``conftest`` (mypy checks tests/ as one tree)."""
