"""``litegate check DB``: the command-line front end of :func:`litegate._check.check_database`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ._check import CheckReport, check_database

__all__ = ("configure", "run")

_EPILOG = """\
examples:
  litegate check app.db
  litegate check app.db --full --json
  litegate check app.db --fix        # switch a rollback-journal database to WAL

The file is opened read-only; only --fix writes to it.

exit status: 0 healthy (notes only), 1 problems found (errors or warnings),
2 usage error (no such file)
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the check command's arguments to its subcommand parser."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("database", metavar="DB", help="the database file to inspect")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--full",
        action="store_true",
        help="run integrity_check (slower, also verifies indexes) instead of quick_check",
    )
    parser.add_argument(
        "--fix",
        action="store_true",
        help="switch the database to WAL if it is not (the only change --fix makes)",
    )


def run(args: argparse.Namespace) -> int:
    """Inspect the database; returns 0 (healthy), 1 (problems) or 2 (usage error)."""
    try:
        report = check_database(args.database, full=args.full, fix=args.fix)
    except (FileNotFoundError, IsADirectoryError) as exc:
        sys.stderr.write(f"litegate check: error: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"litegate check: error: cannot read {args.database}: {exc}\n")
        return 2
    if args.json:
        doc = dataclasses.asdict(report)
        doc["ok"] = report.ok
        if report.wal is not None:
            doc["wal"]["pending"] = report.wal.pending
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(_text(report))
    return 0 if report.ok else 1


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _text(r: CheckReport) -> str:
    out = [f"{r.path}  ({_size(r.size_bytes)}, SQLite {r.sqlite_version})"]
    for line in r.fixed:
        out.append(f"  fixed:          {line}")
    if r.journal_mode is not None:
        out.append(f"  journal_mode:   {r.journal_mode}")
        out.append(f"  synchronous:    {r.synchronous} (default of new connections)")
        out.append(f"  page_size:      {r.page_size}")
        out.append(f"  page_count:     {r.page_count}")
        out.append(f"  freelist_count: {r.freelist_count}")
        out.append(f"  auto_vacuum:    {r.auto_vacuum}")
        out.append(f"  user_version:   {r.user_version}")
    if r.wal is not None:
        frames = "unknown" if r.wal.frames is None else str(r.wal.frames)
        pending = "unknown" if r.wal.pending is None else str(r.wal.pending)
        out.append(
            f"  wal:            {_size(r.wal.size_bytes)}, {frames} frames, "
            f"{pending} not yet checkpointed"
        )
    elif r.journal_mode == "wal":
        out.append("  wal:            no -wal file (fully checkpointed)")
    if r.integrity:
        verdict = "ok" if r.integrity == ("ok",) else f"{len(r.integrity)} problem(s)"
        out.append(f"  {r.integrity_check + ':':<16}{verdict}")
    if r.journal_mode is not None:
        fk = len(r.foreign_key_violations)
        out.append(f"  foreign keys:   {'ok' if fk == 0 else f'{fk} violation(s)'}")
    if r.problems:
        out.append("")
    for p in r.problems:
        out.append(f"{p.severity}: {p.message}")
        if p.fix:
            out.append(f"    fix: {p.fix}")
    out.append("")
    out.append("healthy" if r.ok else "problems found")
    return "\n".join(out) + "\n"
