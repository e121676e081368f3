"""``litegate doctor --fix``: switch a module to the ``litegate.sqlite3`` drop-in.

The drop-in has the standard module's API, and one of its connections may be used by many
threads, each with its own transaction. So the findings whose cause is "a stdlib connection
shared by threads" (the rules with :attr:`Rule.fixable`) go away when a module imports it
instead of :mod:`sqlite3`:

- ``import sqlite3`` becomes ``import litegate.sqlite3 as sqlite3`` (an alias is kept:
  ``import sqlite3 as db`` becomes ``import litegate.sqlite3 as db``); in ``import os,
  sqlite3`` the module is moved to its own import statement;
- ``from sqlite3 import connect, Row`` becomes ``from litegate.sqlite3 import connect, Row``;
- ``check_same_thread=False`` is removed from ``connect()`` calls: the drop-in does not need it.

Edits are made on the text, at the positions the AST gives, so formatting and comments
elsewhere stay as they were. A module is rewritten only if it has a fixable finding, and a
rewrite is kept only if the rewritten module parses and has fewer findings than before (no rule
more often). Everything else (blocking calls in ``async def``, busy timeouts, DEFERRED
transactions, a worker's ``close()``, a cursor shared by threads) is left for the user.
"""

from __future__ import annotations

import ast
import difflib
import functools
import io
import os
import re
import stat
import tempfile
import tokenize
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ._index import Module
from ._paths import _python_files, analyze_source
from ._rules import RULES, Finding

__all__ = ("Fix", "FixReport", "fix_paths", "fix_source", "unified_diff", "why_left", "write_fix")

_DROPIN = "litegate.sqlite3"
_FROM_SQLITE3 = re.compile(r"from(?:[ \t\f]|\\\r?\n|\\\r)+(sqlite3)\b")
_GAP = re.compile(r"\s*,\s*")  # only a comma between two arguments (no comment, no paren)
_AFTER_ARG_LINE = re.compile(r"[ \t\f]*,?[ \t\f]*(#.*)?")  # the rest of a line after an argument
_COMMA_AFTER = re.compile(r"[ \t\f]*,[ \t\f]*")


@dataclass(frozen=True, slots=True)
class Fix:
    """What ``--fix`` does to one module.

    :ivar path: the file, as given or found under a given directory
    :ivar old: the module's text before
    :ivar new: the text after the fix (``old`` if nothing is changed)
    :ivar before: the findings in ``old``
    :ivar after: the findings left in ``new`` (line numbers of ``new``)
    :ivar encoding: the file's encoding, used to write ``new`` back
    """

    path: str
    old: str
    new: str
    before: tuple[Finding, ...]
    after: tuple[Finding, ...]
    encoding: str = "utf-8"

    @property
    def changed(self) -> bool:
        """Whether the fix rewrites the module."""
        return self.new != self.old

    @property
    def fixed(self) -> int:
        """How many findings the rewrite removes."""
        return len(self.before) - len(self.after)

    def old_position(self, line: int, col: int) -> tuple[int, int]:
        """Where position ``line:col`` of ``new`` was in ``old`` (for reports that describe the
        file before it is written); on a line the fix changed, the start of that line."""
        if not self.changed:
            return line, col
        for tag, i1, i2, j1, j2 in _opcodes(self.old, self.new):
            if j1 < line <= j2:
                if tag == "equal":
                    return i1 + line - j1, col
                if tag == "insert":  # a new line (a split import): the line it was split from
                    return max(i1, 1), 1
                return i1 + min(line - j1, i2 - i1), 1
        return line, 1


@functools.lru_cache(maxsize=4)
def _opcodes(old: str, new: str) -> tuple[tuple[str, int, int, int, int], ...]:
    """How the lines of ``new`` map to those of ``old`` (cached: asked once per finding)."""
    matcher = difflib.SequenceMatcher(None, _lines(old), _lines(new), autojunk=False)
    return tuple(matcher.get_opcodes())


@dataclass(frozen=True, slots=True)
class FixReport:
    """The result of :func:`fix_paths`.

    :ivar fixes: one :class:`Fix` per file with a finding, in path order
    :ivar files: how many Python files were examined
    :ivar skipped: ``(path, reason)`` for files that could not be read, parsed or fixed
    """

    fixes: tuple[Fix, ...]
    files: int
    skipped: tuple[tuple[str, str], ...] = ()


# Why --fix leaves a finding: the drop-in does not change what the rule is about.
_LEFT = {
    "LG101": "the connection does not come from an import --fix rewrites",
    "LG102": "the connection does not come from an import --fix rewrites",
    "LG103": "the drop-in's calls block the event loop just like sqlite3's",
    "LG104": "a shared cursor still mixes threads' rows: the drop-in shares connections, "
    "not cursors",
    "LG105": "close() from a worker still closes the connection for every thread",
    "LG106": "the busy timeout is a number only you can choose",
    "LG107": "BEGIN IMMEDIATE has to be written in your SQL",
}


def why_left(finding: Finding) -> str:
    """Why ``--fix`` does not remove this finding, in a few words."""
    return _LEFT[finding.rule]


def fix_source(source: str, path: str = "<string>", *, select: Iterable[str] | None = None) -> Fix:
    """Rewrite one module's text to use the ``litegate.sqlite3`` drop-in, if that fixes a
    finding. Nothing is written; use :func:`write_fix` for that.

    Does not block beyond the CPU time of two analyses of the module.

    :param source: the module's text
    :param path: the name to report findings under
    :param select: rule ids to consider (default: all); upper or lower case
    :raises SyntaxError: if the source does not parse
    :raises ValueError: if the rewrite would not parse (a bug: please report it)
    """
    wanted = None if select is None else {s.upper() for s in select}
    before = _selected(analyze_source(source, path), wanted)
    unchanged = Fix(path, source, source, before, before)
    if not any(RULES[f.rule].fixable for f in before):
        return unchanged
    new = _rewrite(source, ast.parse(source, filename=path))
    if new == source:
        return unchanged
    try:
        ast.parse(new, filename=path)
    except SyntaxError as exc:
        raise ValueError(
            f"the fixed module would not parse ({exc.msg}, line {exc.lineno})"
        ) from exc
    after = _selected(analyze_source(new, path), wanted)
    counts_before = Counter(f.rule for f in before)
    counts_after = Counter(f.rule for f in after)
    if len(after) >= len(before) or any(counts_after[r] > counts_before[r] for r in counts_after):
        return unchanged  # the drop-in would not help this module: leave it as it is
    return Fix(path, source, new, before, after)


def _selected(findings: list[Finding], wanted: set[str] | None) -> tuple[Finding, ...]:
    return tuple(f for f in findings if wanted is None or f.rule in wanted)


# -- the rewrite ---------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    """The physical lines with their endings, split where the tokenizer splits them."""
    return io.StringIO(text, newline="").readlines()


class _Text:
    """Positions of the AST (1-based line, UTF-8 byte column) as offsets into the text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = _lines(text)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, line: int, col: int) -> int:
        if line > len(self.lines):
            return len(self.text)
        prefix = self.lines[line - 1].encode("utf-8")[:col].decode("utf-8", "replace")
        return self.starts[line - 1] + len(prefix)

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
        return start, end

    def line_start(self, line: int) -> int:
        return self.starts[min(line, len(self.lines) + 1) - 1]

    def content_end(self, line: int) -> int:
        """The offset of line ``line``'s end, before its line break."""
        raw = self.lines[line - 1] if line <= len(self.lines) else ""
        return self.starts[line - 1] + len(raw.rstrip("\r\n"))

    def eol(self, line: int) -> str:
        raw = self.lines[line - 1] if line <= len(self.lines) else ""
        ending = raw[len(raw.rstrip("\r\n")) :]
        if ending:
            return ending
        match = re.search(r"\r\n|\r|\n", self.text)
        return match.group(0) if match else "\n"


_Edit = tuple[int, int, str]


def _rewrite(source: str, tree: ast.Module) -> str:
    text = _Text(source)
    module = Module(tree)
    edits: list[_Edit] = []
    connects: list[ast.Call] = []
    stdlib_names: set[str] = set()  # still bound to the stdlib module: keep their arguments
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            edits.extend(_import_edits(text, node))
        elif isinstance(node, ast.ImportFrom):
            found = _from_edits(text, node)
            edits.extend(found)
            if node.module == "sqlite3" and not node.level and not found:
                stdlib_names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Call) and module.is_connect(node):
            connects.append(node)
    for call in connects:
        if _root_name(call.func) not in stdlib_names:
            edits.extend(_check_same_thread_edits(text, call))
    out = source
    last = len(source) + 1
    for start, end, replacement in sorted(edits, reverse=True):
        if end > last:
            continue  # overlaps an edit already made (never expected); keep the text
        out = out[:start] + replacement + out[end:]
        last = start
    return out


def _root_name(expr: ast.expr) -> str | None:
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _import_edits(text: _Text, node: ast.Import) -> list[_Edit]:
    """``import sqlite3 [as x]`` (possibly among other modules) to the drop-in."""
    if not any(a.name == "sqlite3" for a in node.names):
        return []
    kept = [a for a in node.names if a.name != "sqlite3"]
    dropins = [
        f"import {_DROPIN} as {a.asname or 'sqlite3'}" for a in node.names if a.name == "sqlite3"
    ]
    statements = []
    if kept:
        statements.append("import " + ", ".join(_alias(a) for a in kept))
    statements.extend(dropins)
    start, end = text.span(node)
    first_line = node.lineno
    last_line = node.end_lineno or node.lineno
    indent = text.text[text.line_start(first_line) : start]
    rest = text.text[end : text.content_end(last_line)]
    if len(statements) == 1 or indent.strip() or not _AFTER_ARG_LINE.fullmatch(rest):
        # ``if x: import os, sqlite3`` or ``import os, sqlite3; y = 1``: stay on the line
        return [(start, end, "; ".join(statements))]
    # One statement per line; a comment after the original stays on its first line.
    eol = text.eol(last_line)
    more = "".join(eol + indent + s for s in statements[1:])
    at = text.content_end(last_line)
    return [(start, end, statements[0]), (at, at, more)]


def _alias(alias: ast.alias) -> str:
    return f"{alias.name} as {alias.asname}" if alias.asname else alias.name


def _from_edits(text: _Text, node: ast.ImportFrom) -> list[_Edit]:
    """``from sqlite3 import ...`` to ``from litegate.sqlite3 import ...``."""
    if node.module != "sqlite3" or node.level:  # (dbapi2 included: the drop-in has one)
        return []
    start, _ = text.span(node)
    match = _FROM_SQLITE3.match(text.text, start)
    if match is None:
        return []
    return [(match.start(1), match.end(1), _DROPIN)]


def _check_same_thread_edits(text: _Text, call: ast.Call) -> list[_Edit]:
    """Remove ``check_same_thread=False`` and one comma next to it.

    Three shapes: the argument alone on its line(s) (the lines go); after another argument
    with only a comma between them, and last or followed by a line break (the comma before
    it goes: ``f(a, check_same_thread=False)`` becomes ``f(a)``); otherwise the argument and
    the comma after it go.
    """
    items: list[ast.expr | ast.keyword] = [*call.args, *call.keywords]
    items.sort(key=lambda n: (n.lineno, n.col_offset))
    found = [
        i
        for i, item in enumerate(items)
        if isinstance(item, ast.keyword)
        and item.arg == "check_same_thread"
        and isinstance(item.value, ast.Constant)
        and item.value.value is False
    ]
    if not found:
        return []
    i = found[0]
    kw = items[i]
    prev = items[i - 1] if i > 0 else None
    nxt = items[i + 1] if i + 1 < len(items) else None
    start, end = text.span(kw)
    first_line, last_line = kw.lineno, kw.end_lineno or kw.lineno
    before_on_line = text.text[text.line_start(first_line) : start]
    rest = text.text[end : text.content_end(last_line)]
    if not before_on_line.strip() and _AFTER_ARG_LINE.fullmatch(rest):
        return [(text.line_start(first_line), text.line_start(last_line + 1), "")]
    next_start = text.span(nxt)[0] if nxt is not None else None
    if prev is not None:
        prev_end = text.span(prev)[1]
        breaks_after = (
            next_start is None
            or "\n" in text.text[end:next_start]
            or "\r" in text.text[end:next_start]
        )
        if _GAP.fullmatch(text.text[prev_end:start]) and breaks_after:
            return [(prev_end, end, "")]
    comma = _COMMA_AFTER.match(text.text, end)
    if comma is not None:
        return [(start, comma.end(), "")]
    if nxt is not None:
        return []  # an unusual layout (a comment before the comma): leave the argument
    return [(start, end, "")]


# -- diffs and files -----------------------------------------------------------------------------


def unified_diff(fix: Fix) -> str:
    """The change as a unified diff with ``a/`` and ``b/`` paths (``git apply`` takes it)."""
    if not fix.changed:
        return ""
    name = _diff_name(fix.path)
    out: list[str] = []
    for line in difflib.unified_diff(
        _lines(fix.old), _lines(fix.new), fromfile=f"a/{name}", tofile=f"b/{name}"
    ):
        if line.endswith(("\n", "\r")):
            out.append(line)
        else:
            out.append(line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _diff_name(path: str) -> str:
    if os.path.isabs(path):
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            path = rel
    return path.replace(os.sep, "/").lstrip("/").removeprefix("./")


def fix_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    exclude: Iterable[str] = (),
    select: Iterable[str] | None = None,
) -> FixReport:
    """Compute the fix of every Python file under ``paths``; nothing is written.

    Reads each file once; blocks on file I/O and the CPU time of the analyses. Files that
    cannot be read, parsed or fixed are listed in :attr:`FixReport.skipped`, not raised.

    :raises FileNotFoundError: if a given path does not exist
    :raises ValueError: if ``select`` names an unknown rule
    """
    wanted = None if select is None else [s.upper() for s in select]
    if wanted is not None and not set(wanted) <= RULES.keys():
        raise ValueError(f"unknown rule id(s): {', '.join(sorted(set(wanted) - RULES.keys()))}")
    fixes: list[Fix] = []
    skipped: list[tuple[str, str]] = []
    files = 0
    for path in _python_files(paths, tuple(exclude)):
        files += 1
        try:
            source, encoding = _read(path)
            fix = fix_source(source, path, select=wanted)
        except (OSError, SyntaxError, UnicodeError, ValueError, RecursionError) as exc:
            skipped.append((path, f"{type(exc).__name__}: {exc}"))
            continue
        if fix.before:
            fixes.append(Fix(fix.path, fix.old, fix.new, fix.before, fix.after, encoding))
    return FixReport(tuple(fixes), files, tuple(skipped))


def _read(path: str) -> tuple[str, str]:
    with open(path, "rb") as fh:
        data = fh.read()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding), encoding  # no newline translation: \r\n stays \r\n


def write_fix(fix: Fix) -> None:
    """Write ``fix.new`` over the file, atomically (a temporary file in the same directory,
    then :func:`os.replace`), keeping the file's mode; a symlink's target is written.

    Blocks on file I/O, including an ``fsync``.

    :raises OSError: if the file cannot be written, or changed since it was read (then it is
        left as it is)
    """
    if not fix.changed:
        return
    target = os.path.realpath(fix.path)
    current, _ = _read(target)
    if current != fix.old:
        raise OSError(f"{fix.path} changed since it was read; not written")
    data = fix.new.encode(fix.encoding)
    mode = stat.S_IMODE(os.stat(target).st_mode)
    directory, name = os.path.split(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".litegate-fix", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
