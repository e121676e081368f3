"""``litegate doctor PATH...``: the command-line front end of :mod:`litegate.doctor`."""

from __future__ import annotations

import argparse
import sys

from ._fix import fix_paths, unified_diff, write_fix
from ._paths import analyze_paths
from ._report import to_fix_text, to_json, to_sarif, to_text
from ._rules import RULES

__all__ = ("configure", "run")

_EPILOG = """\
examples:
  litegate doctor src/
  litegate doctor app.py --json
  litegate doctor . --sarif > doctor.sarif     # upload to code scanning
  litegate doctor . --select LG101,LG103 --exclude 'tests/*'
  litegate doctor --fix src/ > fix.patch        # the diff on stdout, what is left on stderr
  litegate doctor --fix --write src/            # rewrite the files

silence one finding with a comment on its line:  # litegate: ignore[LG101]

--fix switches modules with a fixable finding (LG101, LG102, LG104, LG105) to
`import litegate.sqlite3 as sqlite3` and drops check_same_thread=False.

exit status: 0 no findings, 1 findings, 2 usage error (bad path or option).
With --fix the status is the one a plain run would give right after it: without
--write 1 if anything is found (fixable or not); with --write 0 once every finding
was fixed, 1 if some are left (or a file could not be written).
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the doctor's arguments to its subcommand parser."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or directories to check")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print findings as JSON")
    fmt.add_argument("--sarif", action="store_true", help="print a SARIF 2.1.0 log")
    parser.add_argument(
        "--select", metavar="IDS", help="comma-separated rule ids to report (default: all)"
    )
    parser.add_argument(
        "--exclude",
        metavar="GLOB",
        action="append",
        default=[],
        help="skip files or directories matching GLOB (repeatable)",
    )
    parser.add_argument(
        "--list-rules", action="store_true", help="list the rules and their fixes, then exit"
    )
    parser.add_argument(
        "--fix",
        action="store_true",
        help="print a unified diff that switches modules with a fixable finding to the "
        "litegate.sqlite3 drop-in; list what it cannot fix on stderr",
    )
    parser.add_argument(
        "--write", action="store_true", help="with --fix: write the fixed files (atomically)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the doctor; returns 0 (clean), 1 (findings) or 2 (usage error)."""
    if args.list_rules:
        for r in RULES.values():
            level = f"{r.level}, fixable by --fix" if r.fixable else r.level
            sys.stdout.write(f"{r.id}  {r.name}  [{level}]\n    {r.summary}\n")
            sys.stdout.write(f"    fix: {r.fix}\n")
        return 0
    if not args.paths:
        sys.stderr.write("litegate doctor: error: give at least one PATH\n")
        return 2
    if args.write and not args.fix:
        sys.stderr.write("litegate doctor: error: --write only goes with --fix\n")
        return 2
    if args.fix and (args.json or args.sarif):
        sys.stderr.write("litegate doctor: error: --fix prints a diff, not --json or --sarif\n")
        return 2
    select = None
    if args.select:
        select = [s.strip() for s in args.select.split(",") if s.strip()]
    if args.fix:
        return _fix(args.paths, args.exclude, select, write=args.write)
    try:
        report = analyze_paths(args.paths, exclude=args.exclude, select=select)
    except (FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"litegate doctor: error: {exc}\n")
        return 2
    if args.json:
        sys.stdout.write(to_json(report))
    elif args.sarif:
        sys.stdout.write(to_sarif(report))
    else:
        sys.stdout.write(to_text(report))
    return 1 if report.findings else 0


def _fix(paths: list[str], exclude: list[str], select: list[str] | None, *, write: bool) -> int:
    """``--fix [--write]``: the diff on stdout, what was fixed and what is left on stderr."""
    try:
        report = fix_paths(paths, exclude=exclude, select=select)
    except (FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"litegate doctor: error: {exc}\n")
        return 2
    failed: set[str] = set()
    for fix in report.fixes:
        if not fix.changed:
            continue
        sys.stdout.write(unified_diff(fix))
        if write:
            try:
                write_fix(fix)
            except OSError as exc:
                sys.stderr.write(f"litegate doctor: error: {fix.path} not written: {exc}\n")
                failed.add(fix.path)
    sys.stdout.flush()
    sys.stderr.write(to_fix_text(report, written=write, failed=failed))
    if not write:
        return 1 if report.fixes else 0  # the files on disk still have every finding
    left = any(fix.after or fix.path in failed for fix in report.fixes)
    return 1 if left else 0
