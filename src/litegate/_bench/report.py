"""What a benchmark run returns and how it reads: one family of result types for both suites,
one text formatter and the JSON layouts.

A :class:`BenchResult` holds the references, one :class:`CaseResult` per case (a workload at
a worker count) with a :class:`ContenderResult` per contender, and the :class:`Target` lines.
What differs between the thread suite and the task suite in how they read (headings, column
widths, the JSON layout) is data in the result's :class:`Layout`, supplied by the suite.

Nothing here blocks or starts threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .workloads import DataCheck, Workload

__all__ = (
    "BenchResult",
    "CaseResult",
    "ContenderResult",
    "Layout",
    "Ratio",
    "Reference",
    "Target",
    "format_report",
    "json_by_case",
    "json_by_workload",
    "ratio",
)


def ratio(value: float, other: float | None) -> float | None:
    """``value / other`` to two places; ``None`` when ``other`` is missing or zero."""
    return round(value / other, 2) if other else None


@dataclass(slots=True)
class ContenderResult:
    """One contender's run of one case. ``ratios`` holds its ops/s over each of the case's
    :class:`Ratio` columns (by key; ``None`` when the other figure is missing)."""

    name: str
    kind: str
    workload: str
    workers: int
    elapsed_s: float
    ops: int
    reads: int
    writes: int
    errors: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    read_p50_ms: float
    read_p99_ms: float
    write_p50_ms: float
    write_p99_ms: float
    error_samples: dict[str, int]
    data: DataCheck
    extra: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ratio:
    """A ratio column: each contender's ops/s over ``versus``'s (a contender of the case or a
    reference). ``key`` names it in :attr:`ContenderResult.ratios` and in the JSON."""

    key: str
    header: str
    width: int
    versus: str


@dataclass(slots=True)
class CaseResult:
    """Every contender's run of ``workload`` by ``workers`` threads or tasks."""

    workload: Workload
    workers: int
    label: str
    contenders: list[ContenderResult]
    ratios: list[Ratio] = field(default_factory=list)

    @property
    def baseline(self) -> str:
        """What the first ratio column compares against (``""`` without one)."""
        return self.ratios[0].versus if self.ratios else ""

    def get(self, name: str) -> ContenderResult | None:
        return next((c for c in self.contenders if c.name == name), None)

    def set_ratios(self, ratios: Sequence[Ratio], references: Sequence[Reference]) -> None:
        """Give every contender its ratio for each column; ``versus`` is looked up among the
        case's contenders, then among ``references``."""
        self.ratios = list(ratios)
        figures = {r.name: r.ops_per_s for r in references}
        figures.update((c.name, c.ops_per_s) for c in self.contenders)
        for c in self.contenders:
            c.ratios = {r.key: ratio(c.ops_per_s, figures.get(r.versus)) for r in ratios}


@dataclass(slots=True)
class Reference:
    """A measurement with no contender: raw sqlite3 on one thread running ``workload``, or a
    floor that runs no SQL (``workload == ""``)."""

    workload: str
    name: str
    ops: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(slots=True)
class Target:
    """``subject = ratio x versus``; ``ratio >= threshold`` passes, ``ratio is None`` means
    skipped (``note`` says why)."""

    name: str
    subject: str
    ratio: float | None
    threshold: float
    note: str = ""
    versus: str = ""

    @property
    def passed(self) -> bool | None:
        return None if self.ratio is None else self.ratio >= self.threshold

    @property
    def text(self) -> str:
        if self.ratio is None:
            return f"SKIP  {self.name}: {self.subject} (target >= {self.threshold:g}x; {self.note})"
        verdict = "PASS" if self.passed else "FAIL"
        versus = f" {self.versus}" if self.versus else ""
        note = f"; {self.note}" if self.note else ""
        return (
            f"{verdict}  {self.name}: {self.subject} = {self.ratio:.2f}x{versus} "
            f"(target >= {self.threshold:g}x{note})"
        )


def _no_lines(result: BenchResult) -> list[str]:
    return []


@dataclass(frozen=True, slots=True)
class Layout:
    """How a suite's results read. ``noun`` is what a worker is (``thread``, ``task``);
    ``heading`` gives the lines above everything, ``ceilings`` the lines of the block that
    relates the results to what the machine allows; ``json`` lays the result out as JSON."""

    noun: str
    name_width: int
    errors_width: int
    reference_title: str
    heading: Callable[[BenchResult], list[str]]
    json: Callable[[BenchResult], dict[str, Any]]
    ceilings: Callable[[BenchResult], list[str]] = _no_lines


@dataclass(slots=True)
class BenchResult:
    layout: Layout
    meta: dict[str, Any]
    reference: list[Reference]
    cases: list[CaseResult]
    targets: list[Target]
    notes: list[str] = field(default_factory=list)

    def find(self, workload: str, workers: int, name: str) -> ContenderResult | None:
        for case in self.cases:
            if case.workload.name == workload and case.workers == workers:
                return case.get(name)
        return None

    def problems(self, kind: str | None = None) -> list[str]:
        """Data mismatches of any contender and litegate's errors (``kind``: only that kind)."""
        out: list[str] = []
        for case in self.cases:
            for c in case.contenders:
                if kind is not None and c.kind != kind:
                    continue
                if not c.data.ok:
                    out.append(f"{case.label}: {c.name}: data {c.data.text}")
                if c.kind == "litegate" and c.errors:
                    out.append(f"{case.label}: {c.name}: {c.errors} error(s)")
        return out

    @property
    def ok(self) -> bool:
        """No target failed (skipped ones do not count), no litegate error or data mismatch."""
        return all(t.passed is not False for t in self.targets) and not self.problems("litegate")

    def as_dict(self) -> dict[str, Any]:
        return self.layout.json(self)


# ---- text -----------------------------------------------------------------------------------
def _workers(case: CaseResult, noun: str) -> str:
    return f"{case.workers} {noun}{'' if case.workers == 1 else 's'}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _case_lines(case: CaseResult, layout: Layout) -> list[str]:
    nw, ew = layout.name_width, layout.errors_width
    heads = "".join(f" {r.header:>{r.width}}" for r in case.ratios)
    lines = [
        "",
        f"workload {case.label}: {_workers(case, layout.noun)}, {case.workload.description}",
        f"  {'contender':<{nw}} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>{ew}}{heads}"
        "  data",
    ]
    for c in case.contenders:
        ratios = "".join(f" {_x(c.ratios.get(r.key)):>{r.width}}" for r in case.ratios)
        lines.append(
            f"  {c.name:<{nw}} {c.ops_per_s:>10,.0f} {c.p50_ms:>8.3f} {c.p99_ms:>8.3f} "
            f"{c.errors:>{ew}}{ratios}  {c.data.text}"
        )
    for c in case.contenders:
        if c.kind == "litegate" and c.writes and c.extra:
            lines.append(
                f"  ({c.name}: {c.extra.get('batches', 0)} commits, mean batch "
                f"{c.extra.get('mean_batch_size', 0)}, max {c.extra.get('max_batch_size', 0)})"
            )
    for c in case.contenders:
        for msg, n in c.error_samples.items():
            lines.append(f"  ! {c.name}: {n}x {msg}")
    return lines


def format_report(result: BenchResult) -> str:
    """The results as a text table: the heading, the references, one block per case, the
    ceilings, then the target lines and any problem."""
    layout = result.layout
    lines = layout.heading(result)
    lines.extend(f"  note: {note}" for note in result.notes)
    if result.reference:
        lines.append("")
        lines.append(layout.reference_title)
        for r in result.reference:
            lines.append(
                f"  {r.name:<36} {r.ops_per_s:>10,.0f} ops/s  p50 {r.p50_ms:7.3f} ms"
                f"  p99 {r.p99_ms:7.3f} ms"
            )
    for case in result.cases:
        lines.extend(_case_lines(case, layout))
    ceilings = layout.ceilings(result)
    if ceilings:
        lines.extend(["", "ceilings on this machine", *ceilings])
    lines.append("")
    lines.append("targets")
    lines.extend(f"  {t.text}" for t in result.targets)
    lines.extend(f"  PROBLEM  {p}" for p in result.problems())
    return "\n".join(lines)


# ---- JSON -----------------------------------------------------------------------------------
def _contender_json(c: ContenderResult, workers_key: str) -> dict[str, Any]:
    """``c`` as JSON: the worker count under ``workers_key``, each ratio under its own key."""
    d = {(workers_key if k == "workers" else k): v for k, v in asdict(c).items()}
    d.update(d.pop("ratios"))
    d["data"]["text"] = c.data.text
    return d


def json_by_workload(result: BenchResult) -> dict[str, Any]:
    """The thread suite's JSON: one entry per workload name (each runs at one thread count),
    the ratio to the case's baseline as ``ratio``, targets by workload and contender."""
    workloads: dict[str, Any] = {}
    for case in result.cases:
        workload = {
            "name": case.workload.name,
            "threads": case.workers,
            "write_fraction": case.workload.write_fraction,
            "description": f"{_workers(case, 'thread')}, {case.workload.description}",
        }
        workloads[case.workload.name] = {
            "workload": workload,
            "baseline": case.baseline,
            "contenders": [_contender_json(c, "threads") for c in case.contenders],
        }
    return {
        "meta": result.meta,
        "reference": [
            {k: v for k, v in asdict(r).items() if k != "workload"} for r in result.reference
        ],
        "workloads": workloads,
        "targets": [
            {
                "workload": t.name,
                "contender": t.subject,
                "baseline": t.versus,
                "ratio": t.ratio,
                "threshold": t.threshold,
                "passed": t.passed,
            }
            for t in result.targets
        ],
        "problems": result.problems(),
        "ok": result.ok,
    }


def json_by_case(result: BenchResult) -> dict[str, Any]:
    """The task suite's JSON: a list of cases (workload and task count), every ratio column
    under its key, targets with their text."""
    targets = []
    for t in result.targets:
        d = asdict(t)
        del d["versus"]
        targets.append(d | {"passed": t.passed, "text": t.text})
    return {
        "meta": result.meta,
        "reference": [asdict(r) for r in result.reference],
        "workloads": [
            {
                "workload": asdict(case.workload),
                "tasks": case.workers,
                "contenders": [_contender_json(c, "tasks") for c in case.contenders],
            }
            for case in result.cases
        ],
        "targets": targets,
        "notes": result.notes,
        "problems": result.problems(),
        "ok": result.ok,
    }
