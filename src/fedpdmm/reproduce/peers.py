"""`fedpdmm reproduce peers`: the robust-aggregation literature's own experiments, side by side
with their published numbers.

- `byzfl`: ByzFL's documented MNIST example (`mnist_byzfl` preset);
- `bucketing-iid`, `bucketing-noniid`, `bucketing-noniid-bucketed`: the mimic experiment of
  Karimireddy, He and Jaggi's bucketing paper (`mnist_bucketing`), Avg, Krum, CM, RFA and CClip,
  IID, non-IID, and non-IID with bucketing (s = 2);
- `dumbbell`: He, Karimireddy and Jaggi's dumbbell without attack (`mnist_dumbbell`): gossip,
  self-centered clipping, trimmed mean, and PDMM.

Every convention that differs is reconciled in the presets' comments. One seed in quick mode,
three in full mode; the schedules are the papers' in both (quick mode shortens nothing else).
The published numbers below were read from the peers' repositories (their output files and
documentation), not from the papers' PDFs; each states its source.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedpdmm import report, store
from fedpdmm.reproduce.documents import write_sections
from fedpdmm.reproduce.grids import Experiment

BUCKETING_RULES = {
    "fedavg": "Avg",
    "fedavg+krum": "Krum",
    "fedavg+median": "CM",
    "fedavg+geometric_median": "RFA",
    "fedavg+centered_clipping": "CClip",
}
DUMBBELL_RULES = {
    "dsgd": "gossip",
    "dsgd+centered_clipping": "self-centered clipping",
    "dsgd+trimmed_mean": "trimmed mean",
    "pdmm": "PDMM",
}
BUCKETING_SOURCE = (
    "epfml/byzantine-robust-noniid-optimizer, outputs/exp2/all/output/exp2.tex and "
    "exp2_bucketing.tex (mean ± std over 3 seeds of the mean of the last 5 evaluations)"
)
DUMBBELL_SOURCE = (
    "epfml/byzantine-robust-decentralized-optimizer, outputs/dumbbell/exp/acc.csv (global "
    "averaged model after 900 iterations, one seed)"
)
BYZFL_SOURCE = (
    "LPD-EPFL/byzfl, docs/fed_framework/classes/fed_learning_sim.rst, example output at step "
    "1,000 (one run)"
)


@dataclass(frozen=True)
class Published:
    """A number a peer published: test accuracy (%), its spread (None: one run) and source."""

    accuracy: float
    spread: float | None
    source: str


PUBLISHED: dict[tuple[str, str, str], Published] = {
    ("byzfl", "fedavg+clip+nnm+trimmed_mean", "ipm"): Published(97.33, None, BYZFL_SOURCE),
    **{
        (experiment, algorithm, "mimic"): Published(value, spread, BUCKETING_SOURCE)
        for experiment, table in {
            "bucketing-iid": {
                "fedavg": (93.20, 0.21),
                "fedavg+krum": (90.36, 0.25),
                "fedavg+median": (90.80, 0.12),
                "fedavg+geometric_median": (92.92, 0.25),
                "fedavg+centered_clipping": (93.16, 0.22),
            },
            "bucketing-noniid": {
                "fedavg": (92.73, 0.32),
                "fedavg+krum": (37.33, 6.78),
                "fedavg+median": (64.27, 3.70),
                "fedavg+geometric_median": (78.93, 9.27),
                "fedavg+centered_clipping": (91.53, 0.06),
            },
            "bucketing-noniid-bucketed": {
                "fedavg+bucketing+mean": (92.67, 0.27),
                "fedavg+bucketing+krum": (53.15, 3.96),
                "fedavg+bucketing+median": (78.60, 3.15),
                "fedavg+bucketing+geometric_median": (91.17, 0.51),
                "fedavg+bucketing+centered_clipping": (92.56, 0.21),
            },
        }.items()
        for algorithm, (value, spread) in table.items()
    },
    ("dumbbell", "dsgd", "none"): Published(93.65, None, DUMBBELL_SOURCE),
    ("dumbbell", "dsgd+centered_clipping", "none"): Published(93.77, None, DUMBBELL_SOURCE),
    ("dumbbell", "dsgd+trimmed_mean", "none"): Published(86.90, None, DUMBBELL_SOURCE),
}
"""Keyed by (experiment, fedpdmm algorithm, attack)."""

LAST_EVALUATIONS = {"byzfl": 1, "dumbbell": 1}
"""How many final evaluations each experiment's statistic averages (the bucketing paper: 5)."""
METRIC = {"dumbbell": "averaged_model_accuracy"}
"""The column each experiment reports (default: `test_accuracy`, the server's model)."""


def peers_experiments(quick: bool) -> list[Experiment]:
    """The five sweeps: ByzFL's example, the bucketing paper's three settings, the dumbbell."""
    seeds = 1 if quick else 3
    bucketed = [name.replace("fedavg", "fedavg+bucketing") for name in BUCKETING_RULES]
    bucketed[0] = "fedavg+bucketing+mean"
    return [
        Experiment("byzfl", "ByzFL's MNIST example", "mnist_byzfl", {}, {}, seeds),
        Experiment(
            "bucketing-iid",
            "Bucketing paper, mimic, IID",
            "mnist_bucketing",
            {"data.partition": "iid"},
            {},
            seeds,
        ),
        Experiment(
            "bucketing-noniid",
            "Bucketing paper, mimic, non-IID",
            "mnist_bucketing",
            {"data.partition": "sorted"},
            {},
            seeds,
        ),
        Experiment(
            "bucketing-noniid-bucketed",
            "Bucketing paper, mimic, non-IID with bucketing (s = 2)",
            "mnist_bucketing",
            {"data.partition": "sorted", "algorithms": bucketed},
            {},
            seeds,
        ),
        Experiment(
            "dumbbell",
            "Dumbbell without attack (self-centered clipping paper)",
            "mnist_dumbbell",
            {},
            {},
            seeds,
        ),
    ]


def statistic(experiment: str, rows: Sequence[dict]) -> float:
    """One seed's number (%): the mean of the experiment's last evaluations of its metric."""
    last = LAST_EVALUATIONS.get(experiment, 5)
    column = METRIC.get(experiment, "test_accuracy")
    values = [float(row[column]) for row in rows[-last:]]
    return 100 * statistics.fmean(values) if values else math.nan


def label_of(experiment: str, algorithm: str) -> str:
    if experiment == "dumbbell":
        return DUMBBELL_RULES.get(algorithm, algorithm)
    if experiment.startswith("bucketing"):
        return BUCKETING_RULES.get(
            algorithm.replace("+bucketing", "").replace("+mean", ""), algorithm
        )
    return algorithm


SIDE_HEADER = ("method", "attack", "fedpdmm %", "published %", "difference", "seeds")


def side_by_side(experiment: str, results: report.Results) -> list[list[str]]:
    """One row per algorithm x attack: fedpdmm's statistic (mean ± std over seeds) beside the
    published number and their difference."""
    rows = []
    for cell in report.cells(results):
        per_seed = [statistic(experiment, series) for series in cell.series.values()]
        mean = statistics.fmean(per_seed)
        spread = statistics.stdev(per_seed) if len(per_seed) > 1 else None
        ours = f"{mean:.2f}" + (f" ± {spread:.2f}" if spread is not None else "")
        published = PUBLISHED.get((experiment, cell.algorithm, cell.attack))
        if published is None:
            theirs, difference = "-", "-"
        else:
            theirs = f"{published.accuracy:.2f}" + (
                f" ± {published.spread:.2f}" if published.spread is not None else ""
            )
            difference = f"{mean - published.accuracy:+.2f}"
        attack = cell.attack if cell.attack == "none" else f"{cell.attack} @ {cell.target}"
        rows.append(
            [
                label_of(experiment, cell.algorithm),
                attack,
                ours,
                theirs,
                difference,
                str(len(per_seed)),
            ]
        )
    return rows


def write_peers_report(
    experiments: Sequence[Experiment], out: Path
) -> tuple[Path, list[tuple[str, list[list[str]]]]]:
    """`out/report/`: a side-by-side table per experiment, then the sweeps' own sections."""
    document = report.Document("fedpdmm reproduce peers")
    document.paragraph(
        "The robust-aggregation literature's experiments run by fedpdmm, beside the numbers "
        "their authors published. Each preset (`fedpdmm/presets/mnist_byzfl.toml`, "
        "`mnist_bucketing.toml`, `mnist_dumbbell.toml`) states how every convention was "
        "reconciled. fedpdmm's number is, per seed, the final test accuracy of the server model "
        "(ByzFL), the mean of the last 5 evaluations (bucketing paper, as there), or the final "
        "accuracy of the honest nodes' averaged model (dumbbell, as there); then mean ± std over "
        "seeds. Published numbers were read from the peers' repositories; sources below."
    )
    tables = []
    sources = set()
    for experiment in experiments:
        root = out / experiment.name
        if not (root / store.SWEEP_FILE).exists():
            continue
        rows = side_by_side(experiment.name, report.load_results(root))
        document.heading(experiment.title)
        document.table(list(SIDE_HEADER), rows)
        tables.append((experiment.title, rows))
        sources |= {p.source for (name, *_), p in PUBLISHED.items() if name == experiment.name}
    if sources:
        document.heading("Sources of the published numbers")
        for source in sorted(sources):
            document.paragraph(f"- {source}")
    return write_sections(document, experiments, out), tables
