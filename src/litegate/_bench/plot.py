"""``litegate bench --plot FILE.png``: throughput by concurrency, one line per contender, one
panel per workload and ``synchronous`` level (a row of panels per suite and level).

matplotlib comes with the ``bench`` extra and is imported only here, only when a plot is
asked for; without it :func:`plot` raises :class:`PlotUnavailable` with the install line.

Threads: the caller's thread; nothing here blocks beyond drawing and writing the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .report import BenchResult

__all__ = ("PlotUnavailable", "plot")


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'litegate[bench]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _rows(results: Sequence[BenchResult]) -> list[tuple[BenchResult, str, list[str]]]:
    """One row of panels per (suite, synchronous level): the workloads it ran, in order."""
    rows = []
    for result in results:
        modes = list(dict.fromkeys(c.synchronous for c in result.cases))
        for mode in modes:
            names = [c.workload.name for c in result.cases if c.synchronous == mode]
            rows.append((result, mode, list(dict.fromkeys(names))))
    return rows


def plot(results: Sequence[BenchResult], path: str) -> None:
    """Draw ``results`` (the suites that ran) into the PNG file ``path``.

    :raises PlotUnavailable: matplotlib is not installed
    :raises ValueError: nothing to draw
    """
    rows = _rows(results)
    if not rows:
        raise ValueError("no benchmark results to plot")
    plt = _pyplot()
    cols = max(len(names) for _, _, names in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(3.6 * cols, 3.1 * len(rows) + 1.2), squeeze=False
    )
    colours: dict[str, Any] = {}
    palette = plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2]
    handles: dict[str, Any] = {}
    for r, (result, mode, names) in enumerate(rows):
        noun = result.layout.noun
        for col in range(cols):
            ax = axes[r][col]
            if col >= len(names):
                ax.set_visible(False)
                continue
            cases = [
                c for c in result.cases if c.synchronous == mode and c.workload.name == names[col]
            ]
            xs = sorted({c.workers for c in cases})
            series: dict[str, list[tuple[int, float]]] = {}
            for case in cases:
                for c in case.contenders:
                    series.setdefault(c.name, []).append((case.workers, max(c.ops_per_s, 0.1)))
            values = [p[1] for points in series.values() for p in points]
            if len(xs) == 1:  # one concurrency (the sync suite): a bar per contender
                for i, (name, points) in enumerate(series.items()):
                    colour = colours.setdefault(name, palette[len(colours) % len(palette)])
                    bar = ax.bar(
                        i,
                        points[0][1],
                        color=colour,
                        hatch="//" if name.startswith("ceiling") else None,
                        edgecolor="white",
                        label=name,
                    )
                    handles.setdefault(name, bar)
                ax.set_xticks([])
                ax.set_ylabel("ops/s")
            else:
                for name, points in series.items():
                    points.sort()
                    colour = colours.setdefault(name, palette[len(colours) % len(palette)])
                    (line,) = ax.plot(
                        [p[0] for p in points],
                        [p[1] for p in points],
                        "-",
                        marker="s" if "litegate" in name else "o",
                        color=colour,
                        label=name,
                        linewidth=2.4 if "litegate" in name else 1.2,
                    )
                    handles.setdefault(name, line)
                if values and max(values) / min(values) > 8:
                    ax.set_yscale("log")
                    ax.set_ylabel("ops/s (log scale)")
                else:
                    ax.set_ylabel("ops/s")
                    ax.set_ylim(bottom=0)
                ax.set_xscale("log", base=2)
                ax.set_xticks(xs)
                ax.set_xticklabels([str(x) for x in xs])
                ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
            ax.set_xlabel(f"{xs[0]} {noun}s" if len(xs) == 1 else f"concurrent {noun}s")
            ax.set_title(
                f"{names[col]}, synchronous={mode}\n({'async' if noun == 'task' else 'sync'} suite)",
                fontsize=10,
            )
            ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("litegate bench: throughput by concurrency (higher is better)", fontsize=13)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="lower center",
        ncol=min(4, len(handles)),
        frameon=False,
        fontsize=9,
    )
    legend_rows = (len(handles) + 3) // 4
    fig.tight_layout(rect=(0, 0.03 + 0.035 * legend_rows * 4 / max(len(rows) * 3, 1), 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
