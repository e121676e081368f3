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
    synchronous: str = "FULL"
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    """``{"read": {"ops": n, "p50_ms": x, "p99_ms": y}, ...}``: each operation kind done."""
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None
    """How late the event loop woke a 1 ms ticker (tasks only; ``None`` on threads)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContenderResult:
        """The inverse of :meth:`as_dict` (how a run in a child process reports back)."""
        return cls(**(d | {"data": DataCheck(**d["data"])}))


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
    """Every contender's run of ``workload`` by ``workers`` threads or tasks at
    ``synchronous``."""

    workload: Workload
    workers: int
    label: str
    contenders: list[ContenderResult]
    ratios: list[Ratio] = field(default_factory=list)
    synchronous: str = "FULL"
    reference: Reference | None = None
    """Raw sqlite3 on one thread running this workload, run in this case's rotation (so it
    shares the machine's mood with the contenders); ``None`` without references."""

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
        figures = {r.name: r.ops_per_s for r in references if r.synchronous == self.synchronous}
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
    synchronous: str = "FULL"
    case: str = ""
    """The label of the case whose rotation it ran in (``""``: run once, before the cases)."""


@dataclass(slots=True)
class Target:
    """``subject = ratio x versus``; ``ratio >= threshold`` passes, ``ratio is None`` means
    skipped (``note`` says why). With ``at_most`` the figure is a measure in ``unit`` (say
    ``" ms"``) and passes when ``<= threshold``."""

    name: str
    subject: str
    ratio: float | None
    threshold: float
    note: str = ""
    versus: str = ""
    unit: str = "x"
    at_most: bool = False

    @property
    def passed(self) -> bool | None:
        if self.ratio is None:
            return None
        return self.ratio <= self.threshold if self.at_most else self.ratio >= self.threshold

    @property
    def text(self) -> str:
        goal = f"target {'<=' if self.at_most else '>='} {self.threshold:g}{self.unit}"
        if self.ratio is None:
            return f"SKIP  {self.name}: {self.subject} ({goal}; {self.note})"
        verdict = "PASS" if self.passed else "FAIL"
        versus = f" {self.versus}" if self.versus else ""
        note = f"; {self.note}" if self.note else ""
        return (
            f"{verdict}  {self.name}: {self.subject} = {self.ratio:.2f}{self.unit}{versus} "
            f"({goal}{note})"
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
    lag: bool = False
    """Show the loop-lag columns (tasks)."""


@dataclass(slots=True)
class BenchResult:
    layout: Layout
    meta: dict[str, Any]
    reference: list[Reference]
    cases: list[CaseResult]
    targets: list[Target]
    notes: list[str] = field(default_factory=list)

    def case(self, workload: str, workers: int, synchronous: str = "FULL") -> CaseResult | None:
        for case in self.cases:
            if (
                case.workload.name == workload
                and case.workers == workers
                and case.synchronous == synchronous
            ):
                return case
        return None

    def find(
        self, workload: str, workers: int, name: str, synchronous: str = "FULL"
    ) -> ContenderResult | None:
        case = self.case(workload, workers, synchronous)
        return None if case is None else case.get(name)

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


def _lag(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _kinds(c: ContenderResult) -> str:
    return "; ".join(
        f"{kind} {int(k['ops'])} p50 {k['p50_ms']:.3f} p99 {k['p99_ms']:.3f}"
        for kind, k in c.by_kind.items()
    )


def _case_lines(case: CaseResult, layout: Layout) -> list[str]:
    nw, ew = layout.name_width, layout.errors_width
    heads = "".join(f" {r.header:>{r.width}}" for r in case.ratios)
    lag_heads = f" {'lag p99':>8} {'lag max':>8}" if layout.lag else ""
    lines = [
        "",
        f"workload {case.label}, synchronous={case.synchronous}: {_workers(case, layout.noun)}, "
        f"{case.workload.description}",
        f"  {'contender':<{nw}} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>{ew}}"
        f"{lag_heads}{heads}  data",
    ]
    for c in case.contenders:
        ratios = "".join(f" {_x(c.ratios.get(r.key)):>{r.width}}" for r in case.ratios)
        lags = f" {_lag(c.lag_p99_ms):>8} {_lag(c.lag_max_ms):>8}" if layout.lag else ""
        lines.append(
            f"  {c.name:<{nw}} {c.ops_per_s:>10,.0f} {c.p50_ms:>8.3f} {c.p99_ms:>8.3f} "
            f"{c.errors:>{ew}}{lags}{ratios}  {c.data.text}"
        )
    for c in case.contenders:
        if len(c.by_kind) > 1:
            lines.append(f"  ({c.name}, ms by kind: {_kinds(c)})")
    for c in case.contenders:
        if c.kind == "litegate" and c.writes and c.extra.get("batches"):
            lines.append(
                f"  ({c.name}: {c.extra.get('batches', 0)} commits, mean batch "
                f"{c.extra.get('mean_batch_size', 0)}, max {c.extra.get('max_batch_size', 0)})"
            )
        if c.extra.get("retries"):
            lines.append(f"  ({c.name}: {c.extra['retries']} retries on 'database is locked')")
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
            mode = f"{r.synchronous:<6}" if r.workload else " " * 6  # the floor runs no SQL
            where = f"  (with {r.case})" if r.case else ""
            lines.append(
                f"  {r.name:<40} {mode} {r.ops_per_s:>10,.0f} ops/s  p50 {r.p50_ms:7.3f} ms"
                f"  p99 {r.p99_ms:7.3f} ms{where}"
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


def json_by_case(result: BenchResult) -> dict[str, Any]:
    """A suite's JSON: a list of cases (workload, worker count under the layout's noun, the
    ``synchronous`` level), every ratio column under its key, targets with their text."""
    targets = []
    for t in result.targets:
        d = asdict(t)
        targets.append(d | {"passed": t.passed, "text": t.text})
    return {
        "meta": result.meta,
        "reference": [asdict(r) for r in result.reference],
        "workloads": [
            {
                "workload": asdict(case.workload),
                f"{result.layout.noun}s": case.workers,
                "synchronous": case.synchronous,
                "baseline": case.baseline,
                "contenders": [
                    _contender_json(c, f"{result.layout.noun}s") for c in case.contenders
                ],
            }
            for case in result.cases
        ],
        "targets": targets,
        "notes": result.notes,
        "problems": result.problems(),
        "ok": result.ok,
    }
