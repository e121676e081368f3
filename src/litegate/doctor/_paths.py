"""Running the analysis over sources, files and directories; ignore comments."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ._analyzer import analyze_module
from ._rules import RULES, Finding

__all__ = ("Report", "analyze_paths", "analyze_source")

_IGNORE = re.compile(r"#\s*litegate:\s*ignore(?:\[([A-Za-z0-9_,\s]*)\])?")
_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages"})


@dataclass(frozen=True, slots=True)
class Report:
    """The result of :func:`analyze_paths`.

    :ivar findings: every finding, sorted by file, line, column and rule
    :ivar files: how many Python files were examined
    :ivar skipped: ``(path, reason)`` for files that could not be read or parsed
    """

    findings: tuple[Finding, ...]
    files: int
    skipped: tuple[tuple[str, str], ...] = ()


def analyze_source(source: str | bytes, path: str = "<string>") -> list[Finding]:
    """Analyse the source of one module; returns its findings sorted by position.

    Does not block beyond the CPU time of the analysis; nothing is imported or executed.

    :param source: the module's text (bytes are decoded as Python does, honouring a coding line)
    :param path: the name to report findings under
    :raises SyntaxError: if the source does not parse
    """
    data = source.encode("utf-8") if isinstance(source, str) else source
    if b"sqlite3" not in data:
        return []  # every rule starts from a sqlite3 call made in this module
    tree = ast.parse(data, filename=path)
    findings = analyze_module(tree, path)
    if not findings:
        return []
    text = source if isinstance(source, str) else data.decode("utf-8", "replace")
    lines = text.splitlines()
    kept = {f for f in findings if not _ignored(f, lines)}
    return sorted(kept)


def _ignored(finding: Finding, lines: list[str]) -> bool:
    if not 0 < finding.line <= len(lines):
        return False
    match = _IGNORE.search(lines[finding.line - 1])
    if match is None:
        return False
    ids = match.group(1)
    if ids is None:
        return True
    return finding.rule in {part.strip().upper() for part in ids.split(",")}


def analyze_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    exclude: Iterable[str] = (),
    select: Iterable[str] | None = None,
) -> Report:
    """Analyse Python files and directory trees.

    Directories are walked for ``*.py`` files, skipping hidden directories, virtual
    environments and ``__pycache__``. Files that cannot be read or parsed are reported in
    :attr:`Report.skipped`, not raised.

    :param paths: files and directories
    :param exclude: glob patterns matched against each file's path and name
    :param select: rule ids to report (default: all)
    :raises FileNotFoundError: if a given path does not exist
    :raises ValueError: if ``select`` names an unknown rule
    """
    wanted = None if select is None else {s.upper() for s in select}
    if wanted is not None and not wanted <= RULES.keys():
        raise ValueError(f"unknown rule id(s): {', '.join(sorted(wanted - RULES.keys()))}")
    patterns = tuple(exclude)
    findings: list[Finding] = []
    skipped: list[tuple[str, str]] = []
    files = 0
    for path in _python_files(paths, patterns):
        files += 1
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            found = analyze_source(data, path)
        except (OSError, SyntaxError, ValueError, RecursionError) as exc:
            skipped.append((path, f"{type(exc).__name__}: {exc}"))
            continue
        findings.extend(f for f in found if wanted is None or f.rule in wanted)
    return Report(tuple(sorted(findings)), files, tuple(skipped))


def _python_files(
    paths: Iterable[str | os.PathLike[str]], exclude: tuple[str, ...]
) -> Iterator[str]:
    for given in paths:
        root = os.fspath(given)
        if os.path.isfile(root):
            if not _excluded(root, exclude):
                yield root
            continue
        if not os.path.isdir(root):
            raise FileNotFoundError(f"no such file or directory: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".")
                and d not in _SKIP_DIRS
                and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))
                and not _excluded(os.path.join(dirpath, d), exclude)
            )
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if name.endswith(".py") and not _excluded(full, exclude):
                    yield full


def _excluded(path: str, patterns: tuple[str, ...]) -> bool:
    if not patterns:
        return False
    norm = os.path.normpath(path).replace(os.sep, "/")  # "./tests/x" matches "tests/*"
    name = os.path.basename(norm)
    return any(fnmatch.fnmatch(norm, p) or fnmatch.fnmatch(name, p) for p in patterns)
