"""Inspect a SQLite database file and say what to change (``litegate check``).

The file is opened read-only (``mode=ro``; ``immutable=1`` for a WAL database with no ``-wal``
file, so that no ``-wal``/``-shm`` files are left behind) and nothing is written to it unless
``fix=True`` is passed, which may switch it to WAL.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ("CheckReport", "Problem", "WalState", "check_database")

DEFAULT_MAX_ERRORS = 100
WAL_WARN_BYTES = 64 * 1024 * 1024
_HEADER = b"SQLite format 3\x00"
_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
_AUTO_VACUUM = {0: "NONE", 1: "FULL", 2: "INCREMENTAL"}


@dataclass(frozen=True, slots=True)
class Problem:
    """Something to change.

    :ivar severity: ``"error"`` (damage), ``"warning"`` (a setting that causes failures under
        concurrency) or ``"note"`` (advice; does not affect the exit status)
    :ivar code: short stable identifier (``journal-mode``, ``integrity`` ...)
    :ivar message: what was found
    :ivar fix: what to do about it
    """

    severity: str
    code: str
    message: str
    fix: str


@dataclass(frozen=True, slots=True)
class WalState:
    """The write-ahead log beside a WAL database.

    :ivar size_bytes: size of the ``-wal`` file
    :ivar frames: frames in the log (from the ``-shm`` index), ``None`` if unknown
    :ivar checkpointed: frames already copied back into the database, ``None`` if unknown
    """

    size_bytes: int
    frames: int | None
    checkpointed: int | None

    @property
    def pending(self) -> int | None:
        """Frames not yet checkpointed into the database file."""
        if self.frames is None or self.checkpointed is None:
            return None
        return max(0, self.frames - self.checkpointed)


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What :func:`check_database` found. Fields are ``None`` when they could not be read."""

    path: str
    size_bytes: int
    sqlite_version: str
    journal_mode: str | None
    synchronous: str | None
    page_size: int | None
    page_count: int | None
    freelist_count: int | None
    auto_vacuum: str | None
    user_version: int | None
    wal: WalState | None
    integrity_check: str
    integrity: tuple[str, ...]
    foreign_key_violations: tuple[tuple[str, int | None, str, int], ...]
    problems: tuple[Problem, ...]
    fixed: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No errors and no warnings (notes are allowed)."""
        return not any(p.severity in ("error", "warning") for p in self.problems)


def check_database(
    path: str | os.PathLike[str],
    *,
    full: bool = False,
    fix: bool = False,
    max_errors: int = DEFAULT_MAX_ERRORS,
) -> CheckReport:
    """Inspect a database file.

    Blocks while the checks read the file: ``quick_check`` reads every page once, and
    ``integrity_check`` (``full=True``) is slower still on large databases.

    :param path: the database file
    :param full: run ``PRAGMA integrity_check`` (also verifies indexes) instead of
        ``quick_check``
    :param fix: switch a rollback-journal database to WAL first (the only write this function
        ever makes); needs no other connection to be using the file
    :param max_errors: how many integrity errors to collect at most
    :raises FileNotFoundError: if ``path`` does not exist
    :raises IsADirectoryError: if ``path`` is a directory
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such database file: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a directory, not a database file")
    with p.open("rb") as fh:
        header = fh.read(100)
    b = _Builder(str(p), p.stat().st_size, "integrity_check" if full else "quick_check")
    if not header:
        b.problem("note", "empty", "the file is empty (a database with no tables yet)", "")
        return b.build()
    if not header.startswith(_HEADER) or len(header) < 100:
        b.problem(
            "error",
            "not-a-database",
            "the file is not an SQLite database (bad header)",
            "restore it from a backup; check that the path is right",
        )
        return b.build()
    wal_header = header[18] == 2 and header[19] == 2
    fixed: list[str] = []
    if fix and not wal_header:
        fixed.append(_set_wal(p))
        wal_header = True
    b.fixed = tuple(fixed)
    wal_file = Path(f"{p}-wal")
    uri = p.resolve().as_uri() + "?mode=ro"
    if wal_header and not wal_file.exists():
        # Opening read-only would create -wal and -shm files and leave them behind.
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        b.problem(
            "error", "open", f"cannot open the database: {exc}", "check the file's permissions"
        )
        return b.build()
    try:
        _inspect(conn, b, p, wal_header=wal_header, full=full, max_errors=max_errors)
    finally:
        conn.close()
    return b.build()


def _set_wal(p: Path) -> str:
    conn = sqlite3.connect(p, timeout=5.0)
    try:
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
    finally:
        conn.close()
    return f"journal_mode set to {str(mode).upper()}"


class _Builder:
    def __init__(self, path: str, size: int, check: str) -> None:
        self.path = path
        self.size = size
        self.check = check
        self.values: dict[str, object] = {}
        self.wal: WalState | None = None
        self.integrity: tuple[str, ...] = ()
        self.fk: tuple[tuple[str, int | None, str, int], ...] = ()
        self.problems: list[Problem] = []
        self.fixed: tuple[str, ...] = ()

    def problem(self, severity: str, code: str, message: str, fix: str) -> None:
        self.problems.append(Problem(severity, code, message, fix))

    def _int(self, key: str) -> int | None:
        value = self.values.get(key)
        return value if isinstance(value, int) else None

    def _str(self, key: str) -> str | None:
        value = self.values.get(key)
        return value if isinstance(value, str) else None

    def build(self) -> CheckReport:
        order = {"error": 0, "warning": 1, "note": 2}
        return CheckReport(
            path=self.path,
            size_bytes=self.size,
            sqlite_version=sqlite3.sqlite_version,
            journal_mode=self._str("journal_mode"),
            synchronous=self._str("synchronous"),
            page_size=self._int("page_size"),
            page_count=self._int("page_count"),
            freelist_count=self._int("freelist_count"),
            auto_vacuum=self._str("auto_vacuum"),
            user_version=self._int("user_version"),
            wal=self.wal,
            integrity_check=self.check,
            integrity=self.integrity,
            foreign_key_violations=self.fk,
            problems=tuple(sorted(self.problems, key=lambda p: order[p.severity])),
            fixed=self.fixed,
        )


def _pragma(conn: sqlite3.Connection, name: str) -> object:
    row = conn.execute(f"PRAGMA {name}").fetchone()
    return None if row is None else row[0]


def _inspect(
    conn: sqlite3.Connection, b: _Builder, p: Path, *, wal_header: bool, full: bool, max_errors: int
) -> None:
    try:
        mode = str(_pragma(conn, "journal_mode")).lower()
        if wal_header:
            mode = "wal"  # an immutable=1 connection reports "delete"; the header is the truth
        b.values["journal_mode"] = mode
        sync = _pragma(conn, "synchronous")
        b.values["synchronous"] = _SYNCHRONOUS.get(sync if isinstance(sync, int) else -1)
        for name in ("page_size", "page_count", "freelist_count", "user_version"):
            b.values[name] = _pragma(conn, name)
        vacuum = _pragma(conn, "auto_vacuum")
        b.values["auto_vacuum"] = _AUTO_VACUUM.get(vacuum if isinstance(vacuum, int) else -1)
    except sqlite3.DatabaseError as exc:
        b.problem(
            "error",
            "unreadable",
            f"the database cannot be read: {exc}",
            "restore from a backup, or try the sqlite3 shell's .recover command on a copy",
        )
        return
    _journal(b, p, mode)
    _layout(b)
    _integrity(conn, b, full=full, max_errors=max_errors)
    _foreign_keys(conn, b, max_errors)


def _journal(b: _Builder, p: Path, mode: str) -> None:
    if mode == "wal":
        b.wal = _wal_state(p)
        if b.wal is not None and b.wal.size_bytes > WAL_WARN_BYTES:
            mib = b.wal.size_bytes / (1024 * 1024)
            b.problem(
                "warning",
                "wal-size",
                f"the WAL file is {mib:.0f} MiB: checkpoints are not keeping up "
                "(a long-lived read transaction or a stuck process holds them back)",
                "end long read transactions, then run PRAGMA wal_checkpoint(TRUNCATE); "
                "consider PRAGMA journal_size_limit",
            )
        b.problem(
            "note",
            "synchronous",
            "synchronous is a per-connection setting "
            f"(new connections start at {b._str('synchronous') or 'FULL'})",
            "in WAL mode, PRAGMA synchronous=NORMAL on each connection is safe against "
            "application crashes and much faster",
        )
        return
    b.problem(
        "warning",
        "journal-mode",
        f"journal_mode is {mode.upper()} (rollback journal): readers and the writer block "
        "each other, so concurrent threads and processes meet 'database is locked'",
        "switch to WAL once: litegate check --fix DB (or PRAGMA journal_mode=WAL)",
    )
    journal = Path(f"{p}-journal")
    if journal.exists() and journal.stat().st_size > 0:
        b.problem(
            "warning",
            "hot-journal",
            f"{journal.name} exists: a writer stopped mid-transaction",
            "open the database read-write once (any sqlite3 connection) to roll it back",
        )


def _wal_state(p: Path) -> WalState | None:
    wal = Path(f"{p}-wal")
    if not wal.exists():
        return None
    frames: int | None = None
    checkpointed: int | None = None
    shm = Path(f"{p}-shm")
    try:
        with shm.open("rb") as fh:
            index = fh.read(136)
        if len(index) >= 100:
            # wal-index header, native byte order: mxFrame at 16, nBackfill at 96.
            (frames,) = struct.unpack_from("=I", index, 16)
            (checkpointed,) = struct.unpack_from("=I", index, 96)
    except OSError:
        pass
    return WalState(wal.stat().st_size, frames, checkpointed)


def _layout(b: _Builder) -> None:
    pages = b._int("page_count") or 0
    free = b._int("freelist_count") or 0
    if pages >= 1000 and free > pages // 4:
        b.problem(
            "note",
            "freelist",
            f"{free} of {pages} pages are free ({100 * free // pages}%)",
            "run VACUUM when the database is idle to give the space back",
        )
    page_size = b._int("page_size")
    if page_size is not None and page_size < 4096:
        b.problem(
            "note",
            "page-size",
            f"page_size is {page_size}; 4096 matches most filesystems and is faster",
            "PRAGMA page_size=4096 then VACUUM (before switching to WAL)",
        )


def _integrity(conn: sqlite3.Connection, b: _Builder, *, full: bool, max_errors: int) -> None:
    name = "integrity_check" if full else "quick_check"
    try:
        rows = conn.execute(f"PRAGMA {name}({int(max_errors)})").fetchall()
        b.integrity = tuple(str(r[0]) for r in rows)
    except sqlite3.DatabaseError as exc:
        b.integrity = (str(exc),)
    if b.integrity != ("ok",):
        shown = "; ".join(b.integrity[:3])
        more = f" (+{len(b.integrity) - 3} more)" if len(b.integrity) > 3 else ""
        b.problem(
            "error",
            "integrity",
            f"{name} failed: {shown}{more}",
            "stop writing to the file; restore from a backup or rebuild it with the "
            "sqlite3 shell's .recover command on a copy",
        )


def _foreign_keys(conn: sqlite3.Connection, b: _Builder, max_errors: int) -> None:
    try:
        rows = conn.execute("PRAGMA foreign_key_check").fetchmany(max_errors)
    except sqlite3.DatabaseError:
        return
    b.fk = tuple((str(r[0]), r[1], str(r[2]), int(r[3])) for r in rows)
    if b.fk:
        first = b.fk[0]
        b.problem(
            "error",
            "foreign-keys",
            f"{len(b.fk)} foreign key violation(s), first: {first[0]} rowid {first[1]} "
            f"references a missing row in {first[2]}",
            "fix or delete the orphan rows, and run PRAGMA foreign_keys=ON on every "
            "connection so it cannot happen again",
        )
