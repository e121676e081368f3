"""The async suite's targets: what litegate's engine is asked to reach against aiosqlite,
``asyncio.to_thread`` remedies and raw sqlite3, per ``synchronous`` level, and the event
loop's lag. Each ratio target's note carries the measured ceilings where they exist: what the
bare group commit (the ``ceiling`` contender) and raw sqlite3 on one thread reach against the
same peer, both measured in the case's own rotation.

Nothing here runs anything: it reads a finished :class:`.report.BenchResult`.
"""

from __future__ import annotations

from .report import BenchResult, CaseResult, ContenderResult, Target, ratio
from .session import reference_name

__all__ = (
    "AIOSQLITE",
    "BARE_TO_THREAD",
    "LAG_MAX_MS",
    "LAG_P99_MS",
    "LITEGATE",
    "LITEGATE_TO_THREAD",
    "TO_THREAD",
    "TO_THREAD_PER_THREAD",
    "async_targets",
)

LITEGATE = "litegate async"
LITEGATE_TO_THREAD = "litegate Database via to_thread"
AIOSQLITE = "aiosqlite"
TO_THREAD = "to_thread + Lock"
TO_THREAD_PER_THREAD = "to_thread per-thread conn"
BARE_TO_THREAD = "ceiling: bare to_thread"

LAG_P99_MS = 2.0
LAG_MAX_MS = 20.0
_NO_AIO = "aiosqlite not installed"


def _ceiling(result: BenchResult, case: CaseResult, other: ContenderResult | None) -> str:
    if other is None or not other.ops_per_s:
        return ""
    parts = [
        f"{c.name.removeprefix('ceiling: ')} = {c.ops_per_s / other.ops_per_s:.2f}x {other.name}"
        for c in case.contenders
        if c.kind == "ceiling"
    ]
    ref = case.reference
    if ref is not None:
        parts.append(f"raw one-thread = {ref.ops_per_s / other.ops_per_s:.2f}x {other.name}")
    return ", ".join(parts)


def _vs(
    result: BenchResult, case: CaseResult | None, subject: str, versus: str, threshold: float
) -> list[Target]:
    """``subject``'s ops/s over ``versus``'s in ``case`` (nothing when the case did not
    run)."""
    if case is None:
        return []
    mine, other = case.get(subject), case.get(versus)
    value = None if mine is None or other is None else ratio(mine.ops_per_s, other.ops_per_s)
    note = _NO_AIO if other is None and versus == AIOSQLITE else _ceiling(result, case, other)
    name = f"{case.label} {case.synchronous}"
    return [Target(name, f"{subject} ops/s vs {versus}", value, threshold, note)]


def _vs_best_peer(
    result: BenchResult, case: CaseResult | None, subject: str, threshold: float
) -> list[Target]:
    if case is None:
        return []
    peers = [c for c in case.contenders if c.kind == "peer"]
    best = max(peers, key=lambda c: c.ops_per_s) if peers else None
    mine = case.get(subject)
    value = None if mine is None or best is None else ratio(mine.ops_per_s, best.ops_per_s)
    note = "" if best is None else f"best peer {best.name}; " + _ceiling(result, case, best)
    return [
        Target(
            f"{case.label} {case.synchronous}",
            f"{subject} ops/s vs best peer",
            value,
            threshold,
            note.rstrip("; "),
        )
    ]


def _latency(case: CaseResult | None, field: str, what: str) -> list[Target]:
    """aiosqlite's latency ``field`` (``p50_ms``/``p99_ms``) over litegate's: >= 1 means
    litegate's is no higher."""
    if case is None:
        return []
    lg, other = case.get(LITEGATE), case.get(AIOSQLITE)
    value = None
    note = _NO_AIO if other is None else ""
    if lg is not None and other is not None:
        mine, theirs = getattr(lg, field), getattr(other, field)
        value = round(theirs / mine, 2) if mine > 0 else None
        note = f"{what} {mine:.3f} ms vs {theirs:.3f} ms"
    return [
        Target(
            f"{case.label} {case.synchronous}",
            f"{AIOSQLITE} {what} / {LITEGATE} {what}",
            value,
            1.0,
            note,
        )
    ]


def _vs_raw(result: BenchResult, case: CaseResult | None, threshold: float) -> list[Target]:
    if case is None:
        return []
    lg = case.get(LITEGATE)
    ref = case.reference
    value = None if lg is None or ref is None else ratio(lg.ops_per_s, ref.ops_per_s)
    return [
        Target(
            f"{case.label} {case.synchronous}",
            f"{LITEGATE} ops/s vs {reference_name(case.workload.name)} (one thread)",
            value,
            threshold,
            "" if ref is not None else "no reference run",
        )
    ]


def _lag(cases: list[CaseResult], label: str) -> list[Target]:
    """litegate async's worst loop lag (p99 and max) over ``cases``, the worst peer's in the
    note for scale."""
    if not cases:
        return []

    def worst(name: str | None, key: str) -> tuple[float | None, str]:
        found = [
            (getattr(c, key), case.label)
            for case in cases
            for c in case.contenders
            if (c.name == name if name else c.kind == "peer") and getattr(c, key) is not None
        ]
        return max(found, default=(None, ""))

    out = []
    for key, what, threshold in (
        ("lag_p99_ms", "p99", LAG_P99_MS),
        ("lag_max_ms", "max", LAG_MAX_MS),
    ):
        value, where = worst(LITEGATE, key)
        peer, peer_where = worst(None, key)
        note = f"worst in {where}" if where else ""
        if peer is not None:
            note += f"; worst peer {peer:.2f} ms in {peer_where}"
        out.append(
            Target(label, f"{LITEGATE} loop lag {what}", value, threshold, note, "", " ms", True)
        )
    return out


def async_targets(result: BenchResult) -> list[Target]:
    """The async suite's target lines, per ``synchronous`` level (see the module docstring)."""
    out: list[Target] = []
    tasks: list[int] = result.meta.get("tasks", [1])
    many = max(tasks)
    for mode in result.meta.get("synchronous", ["FULL"]):
        full = mode == "FULL"

        def case(workload: str, n: int, mode: str = mode) -> CaseResult | None:
            return result.case(workload, n, mode)

        if many > 1:
            transfers = case("transfers", many)
            out += _vs(result, transfers, LITEGATE, AIOSQLITE, 10.0)
            out += _vs(result, transfers, LITEGATE, TO_THREAD_PER_THREAD, 3.0 if full else 1.5)
            out += _vs_best_peer(result, transfers, LITEGATE_TO_THREAD, 2.0 if full else 1.0)
            out += _vs_raw(result, case("reads", many), 0.85)
            out += _latency(case("scans", many), "p99_ms", "p99")
            if full:
                out += _vs(result, case("writes", many), LITEGATE, AIOSQLITE, 15.0)
        if 1 in tasks:
            out += _vs(result, case("transfers", 1), LITEGATE, AIOSQLITE, 2.0)
            out += _latency(case("writes", 1), "p50_ms", "p50")
        plain = [c for c in result.cases if c.synchronous == mode and c.workload.name != "slow-tx"]
        slow = [c for c in result.cases if c.synchronous == mode and c.workload.name == "slow-tx"]
        out += _lag(plain, f"loop lag {mode}")
        out += _lag(slow, f"slow-tx lag {mode}")
    return out
