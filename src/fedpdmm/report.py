"""Tables and plots from saved results only: a sweep directory (or one run directory) -> a report.

    report.write_report(Path("sweeps/lr"))  # sweeps/lr/report/: report.md, report.html, *.png

A *cell* is one setting x algorithm x attack x target x Byzantine count; its *members* are the
seeds. The setting is every grid axis except the seed and the axes that become columns of their
own (`algorithms`, `attacks`, `attack.target`, `attack.fraction`, `attack.num_byzantine`).
Per member: final accuracy = test accuracy of the global model at the last evaluated round (a run
that diverged stops there), best = the highest evaluated test accuracy. Per cell: mean and sample
standard deviation (n - 1) over seeds; a NaN accuracy counts as 0 (the model is useless).
"""

from __future__ import annotations

import base64
import html
import math
import os
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpdmm import sweep
from fedpdmm.config import read_toml
from fedpdmm.errors import FedpdmmError
from fedpdmm.results import read_metrics

OWN_COLUMNS = (
    "seed",
    "algorithms",
    "attacks",
    "attack.target",
    "attack.fraction",
    "attack.num_byzantine",
)
HETEROGENEITY_AXES = ("data.alpha", "data.partition")
PANELS_PER_FIGURE = 12


@dataclass(frozen=True)
class Results:
    """Index rows (one per run x combination x evaluated round) and the grid axes of the sweep."""

    rows: list[dict[str, Any]]
    axes: list[str]
    source: Path


@dataclass
class Cell:
    """One setting x algorithm x attack x target x Byzantine count, with one series per seed."""

    setting: tuple[tuple[str, Any], ...]
    algorithm: str
    attack: str
    target: str
    num_byzantine: int
    num_clients: int
    series: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)  # seed -> rows by round

    @property
    def method(self) -> str:
        """The algorithm with its setting: `pdmm` or `pdmm (pdmm.c=0.4)`."""
        extra = ", ".join(f"{key}={value}" for key, value in self.setting)
        return f"{self.algorithm} ({extra})" if extra else self.algorithm

    @property
    def finals(self) -> list[float]:
        return [_accuracy(rows[-1]) for rows in self.series.values()]

    @property
    def bests(self) -> list[float]:
        return [max(_accuracy(row) for row in rows) for rows in self.series.values()]

    @property
    def diverged(self) -> int:
        """Seeds whose last recorded test loss is not finite."""
        return sum(not _finite(rows[-1].get("test_loss")) for rows in self.series.values())


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _accuracy(row: dict[str, Any]) -> float:
    value = row.get("test_accuracy")
    return float(value) if _finite(value) else 0.0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for fewer than two values)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else float("nan")


def load_results(path: Path) -> Results:
    """Read a sweep directory (rebuilding its index from the finished runs), a directory holding
    only an `index.csv`, or a single run directory (`metrics.csv` and `config.toml`)."""
    path = Path(path)
    if (path / sweep.SWEEP_FILE).is_file():
        plan = sweep.load_plan(path)
        return Results(sweep.index_rows(path, plan), plan.axes, path)
    if (path / sweep.INDEX_FILE).is_file():
        rows = sweep.read_index(path / sweep.INDEX_FILE)
        columns = list(rows[0]) if rows else []
        axes = columns[: columns.index("run")] if "run" in columns else []
        return Results(rows, axes, path)
    if (path / "metrics.csv").is_file():
        config = read_toml(path / "config.toml") if (path / "config.toml").is_file() else {}
        extra = {
            "seed": config.get("seed", 0),
            "run": path.name,
            "num_clients": config.get("data", {}).get("num_clients", 0),
        }
        return Results([{**extra, **row} for row in read_metrics(path / "metrics.csv")], [], path)
    raise FedpdmmError(
        f"{path} holds no results (no sweep.toml, index.csv or metrics.csv); "
        "give a sweep or run directory"
    )


def setting_axes(axes: Sequence[str]) -> list[str]:
    """The grid axes that define a setting (see the module docstring)."""
    return [axis for axis in axes if axis not in OWN_COLUMNS]


def cells(results: Results) -> list[Cell]:
    """Group the rows into cells, sorted by setting, attack, target, Byzantine count, algorithm
    (each in order of first appearance); the rows of a series by round."""
    settings = setting_axes(results.axes)
    found: dict[tuple, Cell] = {}
    for row in results.rows:
        setting = tuple((axis, row.get(axis, "")) for axis in settings)
        key = (setting, row["algorithm"], row["attack"], row["target"], int(row["num_byzantine"]))
        cell = found.get(key)
        if cell is None:
            cell = found[key] = Cell(*key, num_clients=int(row.get("num_clients") or 0))
        seed = row.get("seed", row.get("run"))
        series = cell.series.setdefault(seed, [])
        if not series or series[0].get("run") == row.get("run"):
            series.append(row)
    for cell in found.values():
        for rows in cell.series.values():
            rows.sort(key=lambda row: row["round"])
    first: dict[Any, int] = {}
    for cell in found.values():
        for part in (cell.setting, cell.attack, cell.target, cell.algorithm):
            first.setdefault(part, len(first))
    return sorted(
        found.values(),
        key=lambda c: (
            first[c.setting],
            first[c.attack],
            first[c.target],
            c.num_byzantine,
            first[c.algorithm],
        ),
    )


# ---------------------------------------------------------------------------- tables


def _pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def accuracy_table(found: Sequence[Cell], settings: Sequence[str]) -> tuple[list[str], list[list]]:
    """Header and rows: final and best accuracy (%) mean ± std over seeds, per cell."""
    header = [
        "algorithm",
        *settings,
        "attack",
        "target",
        "Byzantine",
        "seeds",
        "final acc (%)",
        "best acc (%)",
        "diverged",
    ]
    rows = []
    for cell in found:
        rows.append(
            [
                cell.algorithm,
                *[value for _, value in cell.setting],
                cell.attack,
                cell.target,
                cell.num_byzantine,
                len(cell.series),
                _pct(*mean_std(cell.finals)),
                _pct(*mean_std(cell.bests)),
                f"{cell.diverged}/{len(cell.series)}",
            ]
        )
    return header, rows


def worst_cases(found: Sequence[Cell]) -> list[dict[str, Any]]:
    """Per setting x algorithm x Byzantine count: the attacked cell with the lowest mean final
    accuracy (over attacks and targets), beside the same method's accuracy without attack."""
    clean = {(c.setting, c.algorithm): c for c in found if c.attack == "none"}
    groups: dict[tuple, list[Cell]] = {}
    for cell in found:
        if cell.attack != "none":
            groups.setdefault((cell.setting, cell.algorithm, cell.num_byzantine), []).append(cell)
    worst = []
    for (setting, algorithm, count), members in groups.items():
        cell = min(members, key=lambda c: statistics.fmean(c.finals))
        reference = clean.get((setting, algorithm))
        worst.append(
            {
                "cell": cell,
                "method": cell.method,
                "num_byzantine": count,
                "final": mean_std(cell.finals),
                "by": f"{cell.attack} @ {cell.target}",
                "attacks": len(members),
                "clean": mean_std(reference.finals) if reference else (math.nan, math.nan),
            }
        )
    return worst


def worst_case_table(worst: Sequence[dict[str, Any]]) -> tuple[list[str], list[list]]:
    header = [
        "method",
        "Byzantine",
        "worst final acc (%)",
        "worst attack @ target",
        "attack cells",
        "no attack (%)",
    ]
    rows = [
        [
            w["method"],
            w["num_byzantine"],
            _pct(*w["final"]),
            w["by"],
            w["attacks"],
            _pct(*w["clean"]),
        ]
        for w in worst
    ]
    return header, rows


# ---------------------------------------------------------------------------- plots


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
            by_round.setdefault(int(row["round"]), []).append(100 * _accuracy(row))
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


# ---------------------------------------------------------------------------- documents


@dataclass
class Document:
    """Blocks rendered to Markdown and HTML alike: ("h", text, level), ("p", text),
    ("table", header, rows), ("img", path, caption)."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", text, level))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", list(header), [list(map(str, row)) for row in rows]))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", path, caption))


def to_markdown(document: Document, base: Path | None = None) -> str:
    """Markdown text; images linked relative to `base` (default: by file name)."""
    lines = [f"# {document.title}", ""]
    for block in document.blocks:
        if block[0] == "h":
            lines += ["#" * block[2] + " " + block[1], ""]
        elif block[0] == "p":
            lines += [block[1], ""]
        elif block[0] == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += [
                "| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows
            ]
            lines.append("")
        else:
            link = block[1].relative_to(base).as_posix() if base else block[1].name
            lines += [f"![{block[2]}]({link})", ""]
    return "\n".join(lines)


def to_html(document: Document) -> str:
    """A self-contained page: the same blocks, PNGs embedded as base64 data URIs."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(document.title)}</title><style>body{{font-family:sans-serif;max-width:"
        "1100px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:3px 6px;font-size:13px}img{max-width:100%}</style></head><body>",
        f"<h1>{esc(document.title)}</h1>",
    ]
    for block in document.blocks:
        if block[0] == "h":
            parts.append(f"<h{block[2]}>{esc(block[1])}</h{block[2]}>")
        elif block[0] == "p":
            parts.append(f"<p>{esc(block[1])}</p>")
        elif block[0] == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block[2]
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        else:
            data = base64.b64encode(block[1].read_bytes()).decode()
            parts.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{esc(block[2])}'>"
                f"<figcaption>{esc(block[2])}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def sweep_sections(document: Document, results: Results, images: Path, level: int = 2) -> None:
    """Append the tables and plots of `results` to `document`, drawing the PNGs into `images`;
    section headings at `level`."""
    found = cells(results)
    if not found:
        document.paragraph("No finished runs yet.")
        return
    settings = setting_axes(results.axes)
    document.heading("Final and best test accuracy of the global model", level)
    document.paragraph(
        "Mean ± sample standard deviation (n - 1) over seeds; final = last evaluated round "
        "(a diverged run stops there), best = highest evaluated accuracy; a NaN accuracy counts "
        "as 0; diverged = seeds whose last test loss is not finite."
    )
    document.table(*accuracy_table(found, settings))
    worst = worst_cases(found)
    document.heading("Worst case over attacks and targets", level)
    if worst:
        document.paragraph(
            "For each method and Byzantine count, the attack and target with the lowest mean "
            "final accuracy: the number a defender can rely on within this grid."
        )
        document.table(*worst_case_table(worst))
    else:
        document.paragraph("Skipped: the grid has no attacked runs.")
    document.heading("Plots", level)
    for path in plot_curves(found, images):
        document.image(path, "test accuracy against round (band: ± one std over seeds)")
    breakdown = plot_breakdown(found, images)
    if breakdown is None:
        document.paragraph(
            "Breakdown curve skipped: the attacked runs have a single Byzantine count; add "
            "`--grid attack.fraction=0,0.25,0.5` to draw it."
        )
    else:
        document.image(breakdown, "final accuracy against the fraction of Byzantine clients")
    heatmap = plot_heatmap(found, results.axes, images)
    if heatmap is None:
        document.paragraph(
            "Heatmap skipped: it needs attacked runs and a heterogeneity axis in the grid "
            "(`--grid data.alpha=0.1,1,10` or `--grid data.partition=iid,dirichlet`)."
        )
    else:
        document.image(heatmap, "worst-case final accuracy over Byzantine count x heterogeneity")


def write_document(document: Document, out: Path, staging: Path) -> Path:
    """Write report.md and report.html into `staging`, then move `staging` to `out` (replacing)."""
    (staging / "report.md").write_text(to_markdown(document, staging))
    (staging / "report.html").write_text(to_html(document))
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def staging_for(out: Path) -> Path:
    """A fresh temporary directory beside `out` (one-line error if it cannot be made)."""
    try:
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.absolute().parent))
        staging.chmod(0o755)
        return staging
    except OSError as error:
        raise FedpdmmError(f"cannot create report directory {out}: {error.strerror}") from None


def write_report(source: Path, out: Path | None = None, title: str | None = None) -> Path:
    """Read the results under `source` and write `report.md`, `report.html` and the PNGs to `out`
    (default `source/report`); returns `out`. Nothing is retrained."""
    source = Path(source)
    out = Path(out) if out is not None else source / "report"
    results = load_results(source)
    document = Document(title or f"fedpdmm report: {source.name}")
    document.paragraph(
        f"Source: {source} ({len({r['run'] for r in results.rows})} finished runs; "
        f"grid axes: {', '.join(results.axes) or 'none'})."
    )
    staging = staging_for(out)
    try:
        sweep_sections(document, results, staging)
        return write_document(document, out, staging)
    except OSError as error:
        raise FedpdmmError(f"cannot write the report to {out}: {error.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
