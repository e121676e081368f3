"""``litegate doctor``: find unsafe sqlite3 usage in Python code before it fails at request time.

The analysis is static (Python's :mod:`ast`, nothing is imported or run) and follows calls
within one module. Use it from the command line (``litegate doctor src/``) or from code::

    from litegate.doctor import analyze_paths

    report = analyze_paths(["src"])
    for finding in report.findings:
        print(finding.path, finding.line, finding.rule, finding.message)

A finding is silenced by a comment on its line: ``# litegate: ignore[LG101]`` (several ids
separated by commas), or ``# litegate: ignore`` for every rule.
"""

from __future__ import annotations

from ._paths import Report as Report
from ._paths import analyze_paths as analyze_paths
from ._paths import analyze_source as analyze_source
from ._rules import RULES as RULES
from ._rules import Finding as Finding
from ._rules import Rule as Rule

__all__ = ("RULES", "Finding", "Report", "Rule", "analyze_paths", "analyze_source")
