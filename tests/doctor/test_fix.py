"""litegate doctor --fix: the rewrite to the litegate.sqlite3 drop-in, the diff, --write."""

from __future__ import annotations

import ast
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from litegate.cli import main
from litegate.doctor import (
    RULES,
    Fix,
    _fix,
    analyze_paths,
    analyze_source,
    fix_paths,
    fix_source,
    unified_diff,
    write_fix,
)

CASES = Path(__file__).parent / "cases"
CASE_FILES = sorted(CASES.glob("*.py"))
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")

# What is left in each fixable case after --fix: a global cursor shared by two threads is
# still shared (the drop-in shares connections, not cursors).
FIXABLE_CASES = {
    "flask_global": [],
    "global_threads": [],
    "passed_connection": [("LG104", 19)],
    "starlette_store": [],
}


def found(source: str) -> list[tuple[str, int]]:
    """(rule, line) of every finding in a snippet."""
    return [(f.rule, f.line) for f in analyze_source(textwrap.dedent(source), "snippet.py")]


def fixed(source: str) -> str:
    """The text --fix makes of a snippet."""
    return fix_source(textwrap.dedent(source), "snippet.py").new


def apply_diff(old: str, diff: str) -> str:
    """Apply a unified diff of one file to ``old``, checking every context and removed line."""
    lines = old.splitlines(keepends=True)
    out: list[str] = []
    at = 0  # index into lines
    body = diff.splitlines(keepends=True)
    assert body[0].startswith("--- a/") and body[1].startswith("+++ b/"), body[:2]
    for line in body[2:]:
        hunk = _HUNK.match(line)
        if hunk:
            start = int(hunk.group(1)) - (0 if hunk.group(2) == "0" else 1)
            assert start >= at
            out.extend(lines[at:start])
            at = start
        elif line.startswith("\\ No newline at end of file"):
            out[-1] = out[-1].rstrip("\r\n")
        elif line.startswith(" ") or line.startswith("-"):
            assert lines[at].rstrip("\r\n") == line[1:].rstrip("\r\n"), (at, line)
            if line.startswith(" "):
                out.append(lines[at])
            at += 1
        else:
            assert line.startswith("+"), line
            out.append(line[1:])
    out.extend(lines[at:])
    return "".join(out)


def copy_case(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.py"
    shutil.copyfile(CASES / f"{name}.py", path)
    return path


# -- the case corpus ---------------------------------------------------------------------------


def test_the_fixable_cases_are_the_ones_with_a_fixable_finding() -> None:
    report = analyze_paths([CASES])
    with_fixable = {Path(f.path).stem for f in report.findings if RULES[f.rule].fixable}
    assert with_fixable == set(FIXABLE_CASES)


@pytest.mark.parametrize("name", sorted(FIXABLE_CASES))
def test_fix_prints_a_diff_and_writes_nothing(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = copy_case(tmp_path, name)
    old = path.read_text()
    assert main(["doctor", "--fix", str(path)]) == 1  # the file on disk still has its findings
    out, err = capsys.readouterr()
    assert path.read_text() == old
    assert out.startswith(f"--- a/{path.as_posix().lstrip('/')}\n")
    new = apply_diff(old, out)
    ast.parse(new)
    assert [(f.rule, f.line) for f in analyze_source(new, "x.py")] == FIXABLE_CASES[name]
    assert "import litegate.sqlite3 as sqlite3\n" in new
    assert "check_same_thread=False)" not in new
    assert f"would fix {path}" in err
    assert "nothing was written" in err
    # minimal: only import lines and check_same_thread=False arguments change
    removed = [line for line in out.splitlines()[2:] if line.startswith("-")]
    assert removed and all("sqlite3" in line for line in removed)


@pytest.mark.parametrize("name", sorted(FIXABLE_CASES))
def test_fix_write_rewrites_the_file(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = copy_case(tmp_path, name)
    old = path.read_text()
    status = main(["doctor", "--fix", "--write", str(path)])
    out, err = capsys.readouterr()
    assert status == (1 if FIXABLE_CASES[name] else 0)
    assert path.read_text() == apply_diff(old, out)
    assert f"fixed {path}" in err
    assert main(["doctor", str(path)]) == status
    capsys.readouterr()
    assert main(["doctor", "--fix", str(path)]) == status  # nothing more to do
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


@pytest.mark.parametrize("name", sorted({p.stem for p in CASE_FILES} - set(FIXABLE_CASES)), ids=str)
def test_cases_without_a_fixable_finding_are_left_alone(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = copy_case(tmp_path, name)
    old = path.read_text()
    flagged = not name.startswith("ok_")
    assert main(["doctor", "--fix", "--write", str(path)]) == (1 if flagged else 0)
    out, err = capsys.readouterr()
    assert out == ""
    assert path.read_text() == old
    if flagged:
        assert "left by --fix" in err and "not fixed: " in err


def test_async_blocking_calls_are_left_and_said_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = copy_case(tmp_path, "async_routes")
    assert main(["doctor", "--fix", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("LG103") == 6
    assert "not fixed: the drop-in's calls block the event loop just like sqlite3's" in err


# -- a module with fixable and unfixable findings ---------------------------------------------

_MIXED = '''\
"""Routes."""
import asyncio, sqlite3  # the db

db = sqlite3.connect("a.db")  # made on the loop's thread


def count():
    return db.execute("SELECT count(*) FROM t").fetchone()[0]


async def handler():
    n = await asyncio.to_thread(count)
    db.commit()
    return n
'''


def test_mixed_module_is_fixed_and_keeps_its_blocking_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mixed.py"
    path.write_text(_MIXED)
    assert [(f.rule, f.line) for f in analyze_source(_MIXED)] == [
        ("LG104", 4),
        ("LG101", 8),
        ("LG103", 13),
    ]
    assert main(["doctor", "--fix", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "  13:5  LG103" in err  # lines of the file as it is on disk
    assert f"would fix {path}: 2 findings (LG101, LG104)" in err
    assert main(["doctor", "--fix", "--write", str(path)]) == 1
    out, err = capsys.readouterr()
    text = path.read_text()
    assert text.splitlines()[1:3] == [
        "import asyncio  # the db",
        "import litegate.sqlite3 as sqlite3",
    ]
    assert "  14:5  LG103" in err  # lines of the written file
    assert [(f.rule, f.line) for f in analyze_source(text)] == [("LG103", 14)]
    assert text.replace("import asyncio  # the db\nimport litegate.sqlite3 as sqlite3", "") == (
        _MIXED.replace("import asyncio, sqlite3  # the db", "")
    )


# -- the rewrite, form by form ----------------------------------------------------------------

_THREADS = """
def work():
    {conn}.execute("INSERT INTO t VALUES (1)")
threading.Thread(target=work).start()
"""


@pytest.mark.parametrize(
    ("head", "want"),
    [
        pytest.param(
            'import sqlite3\nimport threading\nconn = sqlite3.connect("a.db")',
            'import litegate.sqlite3 as sqlite3\nimport threading\nconn = sqlite3.connect("a.db")',
            id="import",
        ),
        pytest.param(
            'import sqlite3 as db, threading\nconn = db.connect("a.db")',
            'import threading\nimport litegate.sqlite3 as db\nconn = db.connect("a.db")',
            id="import-as-among-others",
        ),
        pytest.param(
            'import os, sqlite3, threading  # keep me\nconn = sqlite3.connect("a.db")',
            "import os, threading  # keep me\nimport litegate.sqlite3 as sqlite3\n"
            'conn = sqlite3.connect("a.db")',
            id="import-os-sqlite3",
        ),
        pytest.param(
            'import threading; import re, sqlite3; x = 1\nconn = sqlite3.connect("a.db")',
            "import threading; import re; import litegate.sqlite3 as sqlite3; x = 1\n"
            'conn = sqlite3.connect("a.db")',
            id="semicolons",
        ),
        pytest.param(
            'import threading\nfrom sqlite3 import connect, Row\nconn = connect("a.db")',
            'import threading\nfrom litegate.sqlite3 import connect, Row\nconn = connect("a.db")',
            id="from-import",
        ),
        pytest.param(
            'import threading\nfrom \\\n  sqlite3 import (\n  connect as c,\n)\nconn = c("a.db")',
            'import threading\nfrom \\\n  litegate.sqlite3 import (\n  connect as c,\n)\nconn = c("a.db")',
            id="from-import-continued",
        ),
    ],
)
def test_imports(head: str, want: str) -> None:
    conn = "conn"
    src = head + _THREADS.format(conn=conn)
    assert analyze_source(src), "the snippet must have a finding to fix"
    new = fix_source(src).new
    assert new == want + _THREADS.format(conn=conn)
    assert analyze_source(new) == []


def test_nested_import_keeps_its_indentation() -> None:
    src = """
    import threading
    def make():
        import os, sqlite3
        return sqlite3.connect("a.db")
    conn = make()
    def work():
        conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert "    import os\n    import litegate.sqlite3 as sqlite3\n" in fixed(src)


def test_one_line_compound_statement_stays_on_its_line() -> None:
    src = """
    import threading
    if True: import os, sqlite3
    conn = sqlite3.connect("a.db")
    def work():
        conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    assert "if True: import os; import litegate.sqlite3 as sqlite3\n" in fixed(src)


@pytest.mark.parametrize(
    ("call", "want"),
    [
        pytest.param(
            'sqlite3.connect("a.db", check_same_thread=False)',
            'sqlite3.connect("a.db")',
            id="last",
        ),
        pytest.param("sqlite3.connect(check_same_thread=False)", "sqlite3.connect()", id="only"),
        pytest.param(
            'sqlite3.connect("a.db", check_same_thread=False, timeout=5)',
            'sqlite3.connect("a.db", timeout=5)',
            id="middle",
        ),
        pytest.param(
            'sqlite3.connect(check_same_thread=False, database="a.db")',
            'sqlite3.connect(database="a.db")',
            id="first",
        ),
        pytest.param(
            'sqlite3.connect(\n    "a.db",\n    check_same_thread=False,  # threads\n    timeout=5,\n)',
            'sqlite3.connect(\n    "a.db",\n    timeout=5,\n)',
            id="own-line",
        ),
        pytest.param(
            'sqlite3.connect(\n    "a.db",\n    check_same_thread=False\n)',
            'sqlite3.connect(\n    "a.db",\n)',
            id="own-line-last-no-comma",
        ),
        pytest.param(
            'sqlite3.connect("a.db",\n                check_same_thread=False)',
            'sqlite3.connect("a.db")',
            id="hanging-indent",
        ),
        pytest.param(
            'sqlite3.connect(\n    "a.db", check_same_thread=False,\n    timeout=5,\n)',
            'sqlite3.connect(\n    "a.db",\n    timeout=5,\n)',
            id="end-of-line",
        ),
        pytest.param(
            'sqlite3.connect("a.db",  # the file\n    check_same_thread=False)',
            'sqlite3.connect("a.db",  # the file\n    )',
            id="comment-before-is-kept",
        ),
        pytest.param(
            'sqlite3.connect("é.db", check_same_thread=(False), **opts)',
            'sqlite3.connect("é.db", **opts)',
            id="non-ascii-and-kwargs",
        ),
    ],
)
def test_check_same_thread_false_is_removed(call: str, want: str) -> None:
    src = "import sqlite3, threading\nopts = {}\nconn = " + call + _THREADS.format(conn="conn")
    new = fix_source(src).new
    assert new == (
        "import threading\nimport litegate.sqlite3 as sqlite3\nopts = {}\nconn = "
        + want
        + _THREADS.format(conn="conn")
    )
    ast.parse(new)
    assert analyze_source(new) == []


def test_from_sqlite3_import_dbapi2_is_rewritten_too() -> None:
    src = """
    import sqlite3, threading
    from sqlite3 import connect, dbapi2
    a = sqlite3.connect("a.db", check_same_thread=False)
    b = connect("b.db", check_same_thread=False)
    def work():
        a.execute("SELECT 1")
        b.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    new = fixed(src)
    assert 'a = sqlite3.connect("a.db")' in new
    assert "from litegate.sqlite3 import connect, dbapi2" in new  # (the drop-in has dbapi2)
    assert 'b = connect("b.db")' in new
    assert analyze_source(new) == []


def test_check_same_thread_false_is_kept_where_the_stdlib_stays() -> None:
    src = """
    import sqlite3.dbapi2, threading
    a = sqlite3.dbapi2.connect("a.db", check_same_thread=False)
    def work():
        a.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    new = fixed(src)
    assert 'a = sqlite3.dbapi2.connect("a.db", check_same_thread=False)' in new


def test_check_same_thread_true_and_other_calls_are_kept() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db", check_same_thread=True)
    other = dict(check_same_thread=False)
    def work():
        conn.execute("SELECT 1")
    threading.Thread(target=work).start()
    """
    new = fixed(src)
    assert 'sqlite3.connect("a.db", check_same_thread=True)' in new
    assert "dict(check_same_thread=False)" in new


def test_thread_subclass_and_inline_argument_connections_are_fixed() -> None:
    src = """
    import sqlite3, threading
    class Writer(threading.Thread):
        def __init__(self):
            super().__init__()
            self.conn = sqlite3.connect("a.db", timeout=5)
        def run(self):
            self.conn.execute("SELECT 1")
    def write(conn):
        conn.execute("SELECT 1")
    Writer().start()
    threading.Thread(target=write, args=(sqlite3.connect("b.db"),)).start()
    threading.Thread(
        target=write, args=(sqlite3.connect("c.db", check_same_thread=False),)
    ).start()
    """
    assert found(src) == [("LG101", 8), ("LG101", 10)]
    new = fixed(src)
    ast.parse(new)
    assert new == textwrap.dedent(src).replace(
        "import sqlite3, threading", "import threading\nimport litegate.sqlite3 as sqlite3"
    ).replace(", check_same_thread=False)", ")")
    assert analyze_source(new) == []


# -- what is not rewritten --------------------------------------------------------------------


def test_silenced_findings_do_not_trigger_a_rewrite() -> None:
    src = """
    import sqlite3, threading
    conn = sqlite3.connect("a.db")
    def work():
        conn.execute("SELECT 1")  # litegate: ignore[LG101]
    threading.Thread(target=work).start()
    """
    assert not fix_source(textwrap.dedent(src)).changed


def test_select_limits_what_is_fixed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = copy_case(tmp_path, "flask_global")
    old = path.read_text()
    assert main(["doctor", "--fix", "--write", "--select", "LG103", str(path)]) == 0
    assert capsys.readouterr().out == ""
    assert path.read_text() == old
    assert main(["doctor", "--fix", "--write", "--select", "LG104", str(path)]) == 0
    assert "litegate.sqlite3" in path.read_text()


def test_a_rewrite_that_removes_nothing_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    src = (CASES / "flask_global.py").read_text()
    monkeypatch.setattr(_fix, "_rewrite", lambda source, tree: source + "# touched\n")
    fix = fix_source(src)
    assert not fix.changed
    assert fix.after == fix.before


def test_a_rewrite_that_would_not_parse_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy_case(tmp_path, "flask_global")
    monkeypatch.setattr(_fix, "_rewrite", lambda source, tree: source + "def (:\n")
    report = fix_paths([path])
    assert report.fixes == ()
    assert report.skipped[0][0] == str(path)
    assert "would not parse" in report.skipped[0][1]


# -- files ------------------------------------------------------------------------------------


def test_write_keeps_mode_newlines_and_encoding(tmp_path: Path) -> None:
    crlf = tmp_path / "crlf.py"
    crlf.write_bytes((CASES / "flask_global.py").read_bytes().replace(b"\n", b"\r\n"))
    latin = tmp_path / "latin.py"
    latin.write_bytes(
        b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + (CASES / "global_threads.py").read_bytes()
    )
    bom = tmp_path / "bom.py"
    bom.write_bytes(b"\xef\xbb\xbf" + (CASES / "starlette_store.py").read_bytes())
    os.chmod(crlf, 0o640)
    report = fix_paths([tmp_path])
    assert len(report.fixes) == 3 and all(f.changed for f in report.fixes)
    for fix in report.fixes:
        write_fix(fix)
    data = crlf.read_bytes()
    assert b"import litegate.sqlite3 as sqlite3\r\n" in data
    assert data.count(b"\n") == data.count(b"\r\n")
    assert stat.S_IMODE(os.stat(crlf).st_mode) == 0o640
    assert b"# caf\xe9\n" in latin.read_bytes()
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    assert analyze_paths([tmp_path]).findings == ()


def test_write_follows_a_symlink(tmp_path: Path) -> None:
    real = copy_case(tmp_path, "flask_global")
    link = tmp_path / "link.py"
    link.symlink_to(real.name)
    (fix,) = fix_paths([link]).fixes
    write_fix(fix)
    assert link.is_symlink()
    assert "litegate.sqlite3" in real.read_text()


def test_write_refuses_a_file_changed_since_it_was_read(tmp_path: Path) -> None:
    path = copy_case(tmp_path, "flask_global")
    (fix,) = fix_paths([path]).fixes
    path.write_text(path.read_text() + "# edited meanwhile\n")
    with pytest.raises(OSError, match="changed since it was read"):
        write_fix(fix)
    assert "litegate.sqlite3" not in path.read_text()


def test_write_error_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy_case(tmp_path, "flask_global")

    def fail(fix: Fix) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("litegate.doctor._cli.write_fix", fail)
    assert main(["doctor", "--fix", "--write", str(path)]) == 1
    err = capsys.readouterr().err
    assert "not written: disk full" in err
    assert "0 findings fixed" in err


def test_no_newline_at_end_of_file(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text((CASES / "global_threads.py").read_text().rstrip("\n"))
    (fix,) = fix_paths([path]).fixes
    diff = unified_diff(fix)
    assert apply_diff(fix.old, diff) == fix.new
    assert not fix.new.endswith("\n")


# -- command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["doctor", "--write", "."], id="write-without-fix"),
        pytest.param(["doctor", "--fix", "--json", "."], id="fix-json"),
        pytest.param(["doctor", "--fix", "--sarif", "."], id="fix-sarif"),
        pytest.param(["doctor", "--fix"], id="fix-no-path"),
        pytest.param(["doctor", "--fix", "does/not/exist"], id="fix-missing-path"),
        pytest.param(["doctor", "--fix", "--select", "LG999", "."], id="fix-bad-rule"),
    ],
)
def test_fix_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_list_rules_says_which_are_fixable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--list-rules"]) == 0
    out = capsys.readouterr().out
    for r in RULES.values():
        assert (f"{r.id}  {r.name}  [{r.level}, fixable by --fix]" in out) == r.fixable


def test_the_diff_applies_with_git(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    copy_case(tmp_path, "global_threads")
    copy_case(tmp_path, "starlette_store")
    out = subprocess.run(
        [sys.executable, "-m", "litegate", "doctor", "--fix", "."],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 1
    assert out.stdout.count("--- a/") == 2
    subprocess.run([git, "apply", "-"], input=out.stdout, text=True, cwd=tmp_path, check=True)
    assert analyze_paths([tmp_path]).findings == ()


def test_fix_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "doctor.md").read_text()
    assert "## `litegate doctor --fix`" in doc
    for r in RULES.values():
        if r.fixable:
            assert f"{r.id}" in doc.split("## `litegate doctor --fix`")[1].split("\n## ")[0]
