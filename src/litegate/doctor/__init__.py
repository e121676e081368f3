"""``litegate doctor``: find unsafe sqlite3 usage in Python code before it fails at request time.

The analysis is static (Python's :mod:`ast`, nothing is imported or run) and follows calls
within one module. Use it from the command line (``litegate doctor src/``) or from code::

    from litegate.doctor import analyze_paths

    report = analyze_paths(["src"])
    for finding in report.findings:
        print(finding.path, finding.line, finding.rule, finding.message)

``litegate doctor --fix`` (or :func:`fix_paths` and :func:`write_fix`) rewrites the modules
whose findings the ``litegate.sqlite3`` drop-in removes::

    from litegate.doctor import fix_paths, unified_diff, write_fix

    for fix in fix_paths(["src"]).fixes:
        print(unified_diff(fix), end="")
        write_fix(fix)

A finding is silenced by a comment on its line: ``# litegate: ignore[LG101]`` (several ids
separated by commas), or ``# litegate: ignore`` for every rule.
"""

from __future__ import annotations

from ._fix import Fix as Fix
from ._fix import FixReport as FixReport
from ._fix import fix_paths as fix_paths
from ._fix import fix_source as fix_source
from ._fix import unified_diff as unified_diff
from ._fix import write_fix as write_fix
from ._paths import Report as Report
from ._paths import analyze_paths as analyze_paths
from ._paths import analyze_source as analyze_source
from ._rules import RULES as RULES
from ._rules import Finding as Finding
from ._rules import Rule as Rule

__all__ = (
    "RULES",
    "Finding",
    "Fix",
    "FixReport",
    "Report",
    "Rule",
    "analyze_paths",
    "analyze_source",
    "fix_paths",
    "fix_source",
    "unified_diff",
    "write_fix",
)
