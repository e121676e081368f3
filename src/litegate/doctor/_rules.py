"""The rules ``litegate doctor`` checks: ids, names, one-line summaries and fixes.

Rule ids are stable: they appear in ``# litegate: ignore[LG101]`` comments, in CI configuration
and in SARIF uploads, so a rule is never renumbered. docs/doctor.md explains each one at length.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("RULES", "Finding", "Rule", "rule")


@dataclass(frozen=True, slots=True)
class Rule:
    """One check of the analyser.

    :ivar id: stable identifier such as ``"LG101"``
    :ivar name: short kebab-case name
    :ivar summary: what the rule finds, one line
    :ivar fix: what to change, one or two sentences
    :ivar level: SARIF level, ``"error"`` (will fail or corrupt) or ``"warning"`` (risk)
    :ivar fixable: ``litegate doctor --fix`` can remove the cause by switching the module to
        the ``litegate.sqlite3`` drop-in (a connection made to be shared by threads)
    """

    id: str
    name: str
    summary: str
    fix: str
    level: str = "error"
    fixable: bool = False


_ALL = (
    Rule(
        "LG101",
        "cross-thread-connection",
        "a sqlite3 connection made in one thread is used from code that runs on another thread",
        "Open one connection per thread (threading.local or open it inside the worker), "
        "or hand the work to a single owner: litegate.Database routes every call to the "
        "right connection from any thread. `litegate doctor --fix` switches the module to "
        "`import litegate.sqlite3 as sqlite3`, whose connections any thread may use.",
        fixable=True,
    ),
    Rule(
        "LG102",
        "unlocked-shared-connection",
        "check_same_thread=False on a connection used by several threads without a lock",
        "Hold one threading.Lock around each whole unit of work on the shared connection "
        "(statements and commit together), or use litegate.Database, which serialises writes "
        "on one writer thread. `litegate doctor --fix` switches the module to "
        "`import litegate.sqlite3 as sqlite3`: each thread gets its own transaction.",
        fixable=True,
    ),
    Rule(
        "LG103",
        "blocking-call-in-async",
        "a blocking sqlite3 call inside `async def` stalls the event loop",
        "Move the call off the loop (await asyncio.to_thread(fn) with a connection that thread "
        "may use) or use litegate.AsyncDatabase, whose methods are awaitable.",
    ),
    Rule(
        "LG104",
        "global-shared-by-threads",
        "one connection or cursor in a global is used by several thread targets",
        "Do not share a connection or cursor through a global: give each thread its own "
        "connection (and each query its own cursor), or share a litegate.Database instead. "
        "For a connection, `litegate doctor --fix` switches the module to "
        "`import litegate.sqlite3 as sqlite3`; a shared cursor stays yours to fix.",
        fixable=True,
    ),
    Rule(
        "LG105",
        "commit-close-from-worker",
        "commit(), rollback() or close() on a shared connection from worker code",
        "A worker's commit() also commits other threads' half-done statements and close() "
        "breaks every other user: keep transactions per thread (own connection, or lock held "
        "from first statement to commit) and close shared connections once, at shutdown. "
        "`litegate doctor --fix` switches the module to `import litegate.sqlite3 as sqlite3`, "
        "which keeps each thread's transaction apart (a worker's close() stays yours to fix).",
        fixable=True,
    ),
    Rule(
        "LG106",
        "missing-busy-timeout",
        "a connection written from several threads or processes has no explicit busy timeout",
        "Pass timeout= to sqlite3.connect (seconds, sized for the longest write) or run "
        "PRAGMA busy_timeout, so a writer waits for the lock instead of failing with "
        "'database is locked'.",
        level="warning",
    ),
    Rule(
        "LG107",
        "deferred-write-transaction",
        "a write transaction starts DEFERRED and upgrades from read to write",
        "Start write transactions with BEGIN IMMEDIATE (or isolation_level='IMMEDIATE'): "
        "a DEFERRED transaction that reads first cannot wait for the write lock and fails at "
        "once with 'database is locked', whatever the busy timeout.",
        level="warning",
    ),
)

RULES: dict[str, Rule] = {r.id: r for r in _ALL}
"""Every rule, by id, in id order."""


def rule(rule_id: str) -> Rule:
    """Return the rule with this id.

    :raises KeyError: if there is no such rule
    """
    return RULES[rule_id]


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One problem found in one place.

    :ivar path: the file, as given or found under a given directory
    :ivar line: 1-based line
    :ivar col: 1-based column
    :ivar rule: the rule id (``LG101`` ...)
    :ivar message: what is wrong here, one line
    """

    path: str
    line: int
    col: int
    rule: str
    message: str

    @property
    def fix(self) -> str:
        """How to fix it (the rule's fix)."""
        return RULES[self.rule].fix
