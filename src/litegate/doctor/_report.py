"""Render a doctor :class:`~litegate.doctor.Report` as text, JSON or SARIF 2.1.0."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Collection
from itertools import groupby
from typing import Any

from .._version import __version__
from ._fix import FixReport, why_left
from ._paths import Report
from ._rules import RULES

__all__ = ("to_fix_text", "to_json", "to_sarif", "to_text")

_SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def to_text(report: Report) -> str:
    """Findings grouped by file, each with its fix, then a one-line summary."""
    out: list[str] = []
    for path, group in groupby(report.findings, key=lambda f: f.path):
        out.append(path)
        for f in group:
            out.append(f"  {f.line}:{f.col}  {f.rule}  {f.message}")
            out.append(f"      fix: {f.fix}")
        out.append("")
    for path, reason in report.skipped:
        out.append(f"skipped {path}: {reason}")
    n = len(report.findings)
    files = len({f.path for f in report.findings})
    if n:
        summary = f"{n} finding{'s' * (n != 1)} in {files} file{'s' * (files != 1)}"
    else:
        summary = "no findings"
    out.append(f"{summary} ({report.files} file{'s' * (report.files != 1)} checked)")
    return "\n".join(out) + "\n"


def to_fix_text(report: FixReport, *, written: bool, failed: Collection[str] = ()) -> str:
    """What ``--fix`` changed (or would change) per file, then each finding it leaves, with
    why, then a summary. Line numbers are those of the files as they are on disk afterwards.

    :param written: the fixes were written (``--write``); else the files are unchanged
    :param failed: paths whose fix could not be written
    """
    out: list[str] = []
    changed = [f for f in report.fixes if f.changed and f.path not in failed]
    verb = "fixed" if written else "would fix"
    for fix in changed:
        rules = Counter(f.rule for f in fix.before) - Counter(f.rule for f in fix.after)
        names = ", ".join(r if n == 1 else f"{r} x{n}" for r, n in sorted(rules.items()))
        out.append(f"{verb} {fix.path}: {_count(fix.fixed)} ({names})")
    if changed:
        out.append("")
    left = 0
    for fix in report.fixes:
        applied = fix.changed and fix.path not in failed
        findings = fix.after if applied else fix.before
        if not findings:
            continue
        out.append(f"{fix.path} (left by --fix)")
        for f in findings:
            line, col = f.line, f.col
            if applied and not written:
                line, col = fix.old_position(line, col)
            out.append(f"  {line}:{col}  {f.rule}  {f.message}")
            out.append(f"      not fixed: {why_left(f)}")
            out.append(f"      fix: {f.fix}")
            left += 1
        out.append("")
    for path, reason in report.skipped:
        out.append(f"skipped {path}: {reason}")
    fixed = sum(f.fixed for f in changed)
    files = len(changed)
    where = f"in {files} file{'s' * (files != 1)}"
    checked = f"{report.files} file{'s' * (report.files != 1)} checked"
    if written:
        out.append(f"{_count(fixed)} fixed {where}, {_count(left)} left ({checked})")
    else:
        out.append(f"{_count(fixed)} fixable {where}, {_count(left)} left ({checked})")
        if changed:
            out.append("nothing was written: run with --write to apply the diff")
    return "\n".join(out) + "\n"


def _count(n: int) -> str:
    return f"{n} finding{'s' * (n != 1)}"


def to_json(report: Report) -> str:
    """A JSON document: ``findings`` (with ``fix``), ``files``, ``skipped``."""
    doc = {
        "version": 1,
        "files": report.files,
        "findings": [
            {
                "rule": f.rule,
                "name": RULES[f.rule].name,
                "path": f.path,
                "line": f.line,
                "col": f.col,
                "message": f.message,
                "fix": f.fix,
            }
            for f in report.findings
        ],
        "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
    }
    return json.dumps(doc, indent=2) + "\n"


def to_sarif(report: Report) -> str:
    """A SARIF 2.1.0 log with one run, for code-scanning UIs (GitHub, GitLab, IDEs)."""
    ids = list(RULES)
    rules: list[dict[str, Any]] = [
        {
            "id": r.id,
            "name": r.name,
            "shortDescription": {"text": r.summary},
            "fullDescription": {"text": f"{r.summary}. Fix: {r.fix}"},
            "help": {"text": r.fix},
            "defaultConfiguration": {"level": r.level},
        }
        for r in RULES.values()
    ]
    results = [
        {
            "ruleId": f.rule,
            "ruleIndex": ids.index(f.rule),
            "level": RULES[f.rule].level,
            "message": {"text": f"{f.message}. Fix: {f.fix}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _uri(f.path)},
                        "region": {"startLine": f.line, "startColumn": f.col},
                    }
                }
            ],
        }
        for f in report.findings
    ]
    notifications = [
        {"level": "warning", "message": {"text": f"skipped {path}: {reason}"}}
        for path, reason in report.skipped
    ]
    log = {
        "$schema": _SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "litegate doctor",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


def _uri(path: str) -> str:
    """A relative URI with forward slashes (what code-scanning UIs match against the repo)."""
    if os.path.isabs(path):
        try:
            path = os.path.relpath(path)
        except ValueError:  # pragma: no cover - other drive on Windows
            pass
    return path.replace(os.sep, "/").removeprefix("./")
