"""``litegate doctor PATH...``: the command-line front end of :mod:`litegate.doctor`."""

from __future__ import annotations

import argparse
import sys

from ._paths import analyze_paths
from ._report import to_json, to_sarif, to_text
from ._rules import RULES

__all__ = ("configure", "run")

_EPILOG = """\
examples:
  litegate doctor src/
  litegate doctor app.py --json
  litegate doctor . --sarif > doctor.sarif     # upload to code scanning
  litegate doctor . --select LG101,LG103 --exclude 'tests/*'

silence one finding with a comment on its line:  # litegate: ignore[LG101]

exit status: 0 no findings, 1 findings, 2 usage error (bad path or option)
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


def run(args: argparse.Namespace) -> int:
    """Run the doctor; returns 0 (clean), 1 (findings) or 2 (usage error)."""
    if args.list_rules:
        for r in RULES.values():
            sys.stdout.write(f"{r.id}  {r.name}  [{r.level}]\n    {r.summary}\n")
            sys.stdout.write(f"    fix: {r.fix}\n")
        return 0
    if not args.paths:
        sys.stderr.write("litegate doctor: error: give at least one PATH\n")
        return 2
    select = None
    if args.select:
        select = [s.strip() for s in args.select.split(",") if s.strip()]
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
