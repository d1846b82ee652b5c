"""PNG plots of cells: accuracy curves, the breakdown curve and the worst-case heatmap."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedpdmm.report.tables import Cell, accuracy_of, mean_std

HETEROGENEITY_AXES = ("data.alpha", "data.partition")
PANELS_PER_FIGURE = 12


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def band(cell: Cell) -> tuple[list[int], list[float], list[float]]:
    """Rounds, mean and std (0 for one seed) of test accuracy (%) over the seeds reaching them."""
    by_round: dict[int, list[float]] = {}
    for rows in cell.series.values():
        for row in rows:
            by_round.setdefault(int(row["round"]), []).append(100 * accuracy_of(row))
    rounds = sorted(by_round)
    means = [statistics.fmean(by_round[r]) for r in rounds]
    stds = [statistics.stdev(by_round[r]) if len(by_round[r]) > 1 else 0.0 for r in rounds]
    return rounds, means, stds


def plot_curves(found: Sequence[Cell], out: Path) -> list[Path]:
    """Accuracy against round, one panel per attack x target x Byzantine count, one line per
    method with a band of ± one std over seeds; at most `PANELS_PER_FIGURE` panels per PNG."""
    plt = _pyplot()
    panels: dict[tuple, list[Cell]] = {}
    for cell in found:
        panels.setdefault((cell.attack, cell.target, cell.num_byzantine), []).append(cell)
    keys = list(panels)
    paths = []
    for start in range(0, len(keys), PANELS_PER_FIGURE):
        chunk = keys[start : start + PANELS_PER_FIGURE]
        columns = min(3, len(chunk))
        lines = math.ceil(len(chunk) / columns)
        figure, axes = plt.subplots(
            lines, columns, figsize=(5 * columns, 3.6 * lines), squeeze=False
        )
        for axis, key in zip(axes.flat, chunk, strict=False):
            for cell in panels[key]:
                rounds, means, stds = band(cell)
                (line,) = axis.plot(rounds, means, label=cell.method, linewidth=1.5)
                axis.fill_between(
                    rounds,
                    [m - s for m, s in zip(means, stds, strict=True)],
                    [m + s for m, s in zip(means, stds, strict=True)],
                    color=line.get_color(),
                    alpha=0.2,
                )
            attack, target, count = key
            axis.set_title(
                f"{attack}" + (f" @ {target}, {count} Byzantine" if attack != "none" else ""),
                fontsize=10,
            )
            axis.set_xlabel("round")
            axis.set_ylabel("test accuracy (%)")
            axis.set_ylim(0, 100)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        for axis in list(axes.flat)[len(chunk) :]:
            axis.set_visible(False)
        figure.tight_layout()
        path = out / f"curves_{start // PANELS_PER_FIGURE + 1}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def plot_breakdown(found: Sequence[Cell], out: Path) -> Path | None:
    """Final accuracy against the Byzantine fraction, one line per method x attack x target (error
    bars: std over seeds); None when the attacked cells have fewer than two Byzantine counts."""
    lines: dict[tuple, list[Cell]] = {}
    for cell in found:
        if cell.attack != "none":
            lines.setdefault((cell.method, cell.attack, cell.target), []).append(cell)
    if len({c.num_byzantine for members in lines.values() for c in members}) < 2:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for (method, attack, target), members in lines.items():
        members = sorted(members, key=lambda c: c.num_byzantine)
        fractions = [
            c.num_byzantine / c.num_clients if c.num_clients else c.num_byzantine for c in members
        ]
        stats = [mean_std(c.finals) for c in members]
        axis.errorbar(
            fractions,
            [100 * m for m, _ in stats],
            yerr=[0 if math.isnan(s) else 100 * s for _, s in stats],
            marker="o",
            capsize=3,
            label=f"{method} / {attack} @ {target}",
        )
    axis.set_xlabel("fraction of Byzantine clients")
    axis.set_ylabel("final test accuracy (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    path = out / "breakdown.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def heterogeneity_axis(axes: Sequence[str], found: Sequence[Cell]) -> str | None:
    """The first of `data.alpha`, `data.partition` that the grid varies over two or more values."""
    for axis in HETEROGENEITY_AXES:
        values = {dict(c.setting).get(axis) for c in found}
        if axis in axes and len(values) >= 2:
            return axis
    return None


def heatmap_values(found: Sequence[Cell], het: str) -> dict[str, dict[tuple[int, Any], float]]:
    """Method (without `het`) -> (Byzantine count, `het` value) -> worst mean final accuracy over
    the attacked cells (attacks x targets)."""
    grid: dict[str, dict[tuple[int, Any], float]] = {}
    for cell in found:
        if cell.attack == "none":
            continue
        setting = tuple(p for p in cell.setting if p[0] != het)
        method = Cell(setting, cell.algorithm, "", "", 0, 0).method
        key = (cell.num_byzantine, dict(cell.setting)[het])
        value = statistics.fmean(cell.finals)
        grid.setdefault(method, {})[key] = min(value, grid.get(method, {}).get(key, math.inf))
    return grid


def plot_heatmap(found: Sequence[Cell], axes: Sequence[str], out: Path) -> Path | None:
    """Worst-case final accuracy over attacks x targets, Byzantine count x heterogeneity, one
    panel per method; None without a heterogeneity axis or attacked cells."""
    het = heterogeneity_axis(axes, found)
    if het is None or not any(c.attack != "none" for c in found):
        return None
    grid = heatmap_values(found, het)
    plt = _pyplot()
    figure, axs = plt.subplots(1, len(grid), figsize=(4.5 * len(grid), 3.8), squeeze=False)
    for axis, (method, values) in zip(axs.flat, grid.items(), strict=True):
        counts = sorted({k for k, _ in values})
        levels = list(dict.fromkeys(h for _, h in sorted(values, key=lambda kv: str(kv[1]))))
        matrix = [[100 * values.get((k, h), math.nan) for h in levels] for k in counts]
        image = axis.imshow(matrix, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for i, line in enumerate(matrix):
            for j, value in enumerate(line):
                axis.text(
                    j,
                    i,
                    "-" if math.isnan(value) else f"{value:.0f}",
                    ha="center",
                    va="center",
                    color="white" if value < 60 else "black",
                    fontsize=8,
                )
        axis.set_xticks(range(len(levels)), [str(h) for h in levels])
        axis.set_yticks(range(len(counts)), [str(k) for k in counts])
        axis.set_xlabel(het)
        axis.set_ylabel("Byzantine clients")
        axis.set_title(method, fontsize=9)
        figure.colorbar(image, ax=axis, label="worst-case final accuracy (%)")
    figure.tight_layout()
    path = out / "heatmap.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
