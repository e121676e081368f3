"""Options of an engine: defaults as module constants, one frozen dataclass, validation."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypedDict

from ._args import HUGE
from ._types import RowFactory

__all__ = (
    "DEFAULT_BUSY_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "ENGINE_PRAGMAS",
    "Checkpoints",
    "ConnectOptions",
    "Options",
    "Readers",
    "Synchronous",
    "is_memory_path",
    "make_options",
)

DEFAULT_TIMEOUT = 5.0
"""Seconds any call waits for a reader, for queue space or for the write lane."""
DEFAULT_BUSY_TIMEOUT = 5.0
"""Seconds the writer keeps retrying when another process holds the file's write lock."""
DEFAULT_READERS = min(32, (getattr(os, "process_cpu_count", os.cpu_count)() or 1) + 4)
"""Reader connections at most (opened only as that many reads run at once): as many as the
threads of Python's default thread pool (``ThreadPoolExecutor``'s default, which
``asyncio.to_thread`` uses), so that pool's threads never wait for a reader. With 4 readers
under ``asyncio.to_thread``'s 6 threads on 2 cores, point reads through the drop-in ran at
0.83x the rate 6 readers gave (median of four interleaved rounds; ``benchmarks/dropin_store.py``
with ``LITEGATE_STORE_MIX=1,0``, FULL)."""
DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_MAX_BATCH = 512
DEFAULT_WAL_WARN_BYTES = 64 * 1024 * 1024
DEFAULT_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
DEFAULT_HOLD_WARN = 1.0
DEFAULT_GROUP_WAIT = 0.005
DEFAULT_CHECKPOINT_IDLE = 0.2
DEFAULT_CACHE_KIB = 16 * 1024

ENGINE_PRAGMAS: Mapping[str, str] = {
    "journal_mode": (
        "litegate keeps the database in WAL mode, which its read pool and group commit need"
    ),
    "locking_mode": (
        "EXCLUSIVE would lock litegate's own readers, and every other process, out of the file"
    ),
    "query_only": "litegate makes its readers query_only and needs its writer writable",
    "synchronous": "set it with connect(synchronous=...)",
    "busy_timeout": (
        "set it with connect(busy_timeout=...): the writer waits for other processes' locks "
        "itself, with shorter sleeps than SQLite's busy handler"
    ),
    "writable_schema": "it can corrupt the database",
    "schema_version": "it can corrupt the database",
}
"""PRAGMAs whose setting litegate owns (or that are dangerous): refused both in ``pragmas=``
and through the API, with the reason given here."""

_DETECT_TYPES = sqlite3.PARSE_DECLTYPES | sqlite3.PARSE_COLNAMES
_FILE_PRAGMAS = ("user_version", "application_id", "incremental_vacuum")

Readers = int | Literal["per-thread"]
Synchronous = Literal["FULL", "NORMAL", "EXTRA", "OFF"]
Checkpoints = Literal["truncate", "passive", "off"]


def is_memory_path(path: str, uri: bool) -> bool:
    if path in ("", ":memory:"):
        return True
    return uri and ("mode=memory" in path or path.startswith("file::memory:"))


@dataclass(frozen=True, slots=True)
class Options:
    """How an engine is configured. Built by :func:`litegate.connect` from its keyword arguments.

    :param path: database file (or ``":memory:"``; with ``uri=True`` a ``file:`` URI)
    :param readers: reader connections: ``N >= 1`` (a pool, opened lazily), ``"per-thread"``
        (one per OS thread) or ``0`` (reads go through the write lane, on one connection)
    :param synchronous: ``"FULL"`` (durable, default) or ``"NORMAL"`` (faster; a power loss may
        drop the last commits, never corrupts)
    :param timeout: default seconds to wait for a reader, queue space or the write lane;
        ``None`` waits without bound
    :param busy_timeout: seconds the writer retries while another process holds the write lock
    :param time_limit: default seconds a statement may run before it is interrupted (``None``: no
        limit)
    :param queue_size: most write jobs waiting; a full queue makes callers wait (backpressure)
    :param max_batch: most jobs in one group commit
    :param wal_warn_bytes: a WAL file larger than this is reported (stats and a logged warning)
    :param journal_size_limit: bytes the WAL is truncated back to after a checkpoint
    :param hold_warn: seconds a transaction may hold the lane before it is reported
    :param group_wait: the age bound of a commit group: a transaction joins a group of
        interactive transactions sharing one COMMIT only while the group is younger than this
        (and has fewer than ``max_batch`` transactions); ``0`` commits every transaction alone
    :param checkpoint_idle: seconds of an idle lane after which a checkpoint runs
    :param checkpoints: the checkpoints litegate runs itself, when the lane is idle and at
        close: ``"truncate"`` (default: ``wal_checkpoint(TRUNCATE)``, which resets the WAL to
        0 bytes), ``"passive"`` (``wal_checkpoint(PASSIVE)``: never waits, never resets the
        WAL) or ``"off"`` (none, and SQLite's automatic checkpoint off on the writer:
        ``wal_autocheckpoint=0`` unless ``pragmas`` sets it; the WAL then grows until another
        process checkpoints it). With Litestream replicating the file (``litegate
        replicate``), use ``"passive"`` or ``"off"``: Litestream owns the checkpoints
        (docs/litestream.md)
    :param cache_kib: page cache per connection in KiB
    :param row_factory: row type for query results (default :class:`sqlite3.Row`)
    :param uri: treat ``path`` as a URI
    :param detect_types: sqlite3's ``detect_types`` for every connection
        (``sqlite3.PARSE_DECLTYPES | sqlite3.PARSE_COLNAMES``: values converted by the
        converters registered with ``sqlite3.register_converter``); default ``0``
    :param pragmas: extra ``PRAGMA name = value`` applied to every connection (after
        litegate's own settings, before ``on_connect``): per-connection tuning such as
        ``mmap_size``, ``cache_size``, ``temp_store``, ``wal_autocheckpoint`` or
        ``foreign_keys`` (litegate turns it on; ``0`` turns it off). Refused with
        ``ValueError``: the settings litegate owns (``journal_mode``, ``locking_mode``,
        ``query_only``, ``synchronous`` and ``busy_timeout``, which have their own options),
        ``writable_schema`` and ``schema_version`` (they can corrupt the database), and
        values of the database file (``user_version``, ``application_id``: set them with a
        write or a migration)
    :param on_connect: called with each new connection after it is configured, before
        litegate installs its authorizer (which refuses state-changing PRAGMAs and ATTACH
        through the API, and replaces an authorizer set here): the place to ``ATTACH`` a
        database on every connection
    """

    path: str
    readers: Readers = DEFAULT_READERS
    synchronous: Synchronous = "FULL"
    timeout: float | None = DEFAULT_TIMEOUT
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    time_limit: float | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_batch: int = DEFAULT_MAX_BATCH
    wal_warn_bytes: int = DEFAULT_WAL_WARN_BYTES
    journal_size_limit: int = DEFAULT_JOURNAL_SIZE_LIMIT
    hold_warn: float = DEFAULT_HOLD_WARN
    group_wait: float = DEFAULT_GROUP_WAIT
    checkpoint_idle: float = DEFAULT_CHECKPOINT_IDLE
    checkpoints: Checkpoints = "truncate"
    cache_kib: int = DEFAULT_CACHE_KIB
    row_factory: RowFactory | None = sqlite3.Row
    uri: bool = False
    detect_types: int = 0
    pragmas: Mapping[str, str | int] = field(default_factory=dict)
    on_connect: Callable[[sqlite3.Connection], None] | None = None

    @property
    def memory(self) -> bool:
        return is_memory_path(self.path, self.uri)

    @property
    def checkpoint_mode(self) -> str | None:
        """The ``wal_checkpoint`` mode of litegate's own checkpoints (``None``: it runs none)."""
        if self.checkpoints == "off":
            return None
        return "PASSIVE" if self.memory or self.checkpoints == "passive" else "TRUNCATE"

    @property
    def name(self) -> str:
        """A short name for thread names and messages."""
        return ":memory:" if self.memory else os.path.basename(self.path) or self.path

    def validate(self) -> Options:
        """Return self if every option is valid (with ``math.inf`` seconds turned into
        ``None``: no bound), else raise ``ValueError``/``TypeError``."""
        if not isinstance(self.path, str):
            raise TypeError(f"path must be a str (or os.PathLike), got {type(self.path).__name__}")
        r = self.readers
        if r != "per-thread" and (isinstance(r, bool) or not isinstance(r, int) or r < 0):
            raise ValueError(f"readers must be an int >= 0 or 'per-thread', got {r!r}")
        if self.memory and r != 0:
            raise ValueError(
                "an in-memory database has one connection, so readers must be 0 "
                "(reads go through the write lane); use a file for a read pool"
            )
        if str(self.synchronous).upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {self.synchronous!r}")
        if self.checkpoints not in ("truncate", "passive", "off"):
            raise ValueError(
                f"checkpoints must be 'truncate', 'passive' or 'off', got {self.checkpoints!r}"
            )
        unbounded = set()
        for name in ("timeout", "time_limit"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int | float) or not v >= 0):  # (NaN too)
                raise ValueError(f"{name} must be None or a number of seconds >= 0, got {v!r}")
            if v is not None and v > HUGE:  # math.inf: no bound, as None (it would overflow)
                unbounded.add(name)
        for name in ("busy_timeout", "hold_warn", "checkpoint_idle", "group_wait"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 0 <= v <= HUGE:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {v!r}")
        for name in ("queue_size", "max_batch", "cache_kib"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("wal_warn_bytes", "journal_size_limit"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        dt = self.detect_types
        if isinstance(dt, bool) or not isinstance(dt, int) or dt & ~_DETECT_TYPES:
            raise ValueError(
                "detect_types must be 0 or sqlite3.PARSE_DECLTYPES and/or "
                f"sqlite3.PARSE_COLNAMES, got {dt!r}"
            )
        for key in self.pragmas:
            _check_pragma(key)
        if not unbounded:
            return self
        return replace(
            self,
            timeout=None if "timeout" in unbounded else self.timeout,
            time_limit=None if "time_limit" in unbounded else self.time_limit,
        )


def _check_pragma(key: object) -> None:
    """Refuse a ``pragmas=`` entry litegate cannot apply to each of its connections."""
    if not isinstance(key, str) or not key.replace("_", "").isalnum():
        raise ValueError(f"invalid pragma name {key!r}")
    name = key.lower()
    reason = ENGINE_PRAGMAS.get(name)
    if reason is None and name in _FILE_PRAGMAS:
        reason = (
            "it changes the database file, not a connection (and the readers are read-only); "
            f"run it once as a write: db.execute('PRAGMA {name}=...'), or in a migration"
        )
    if reason is not None:
        raise ValueError(f"pragmas={{{key!r}: ...}} is not allowed: {reason}")


class ConnectOptions(TypedDict, total=False):
    """The keyword arguments of :func:`litegate.connect` and :func:`litegate.connect_async`
    (the fields of :class:`Options` but ``path``; ``readers=None`` means "the default":
    ``DEFAULT_READERS``, or 0 for an in-memory database). One definition types both functions
    alike."""

    readers: Readers | None
    synchronous: Synchronous
    timeout: float | None
    busy_timeout: float
    time_limit: float | None
    queue_size: int
    max_batch: int
    wal_warn_bytes: int
    journal_size_limit: int
    hold_warn: float
    group_wait: float
    checkpoint_idle: float
    checkpoints: Checkpoints
    cache_kib: int
    row_factory: RowFactory | None
    uri: bool
    detect_types: int
    pragmas: Mapping[str, str | int]
    on_connect: Callable[[sqlite3.Connection], None] | None


def make_options(path: str | os.PathLike[str], options: ConnectOptions) -> Options:
    """:class:`Options` from :func:`litegate.connect`'s arguments.

    The values are validated when the engine opens (:meth:`Options.validate`).

    :raises TypeError: an unknown option, or a path that is not a str or path-like
    """
    fields: dict[str, Any] = dict(options)
    fspath = os.fspath(path)
    if fields.get("readers") is None:
        fields["readers"] = (
            0 if is_memory_path(fspath, bool(fields.get("uri"))) else DEFAULT_READERS
        )
    return Options(path=fspath, **fields)
