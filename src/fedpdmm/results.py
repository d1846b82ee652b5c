"""Run directories: the resolved config, metrics.csv, summary.md, accuracy.png, label histogram.

A run directory is written under a temporary sibling name and renamed into place only when every
file is complete, so a directory with the final name is always a finished run.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedpdmm.staging import check_output_dir as check_output_dir
from fedpdmm.staging import remove_stale_partials as remove_stale_partials
from fedpdmm.staging import staged_directory as staged_directory
from fedpdmm.store import read_metrics as read_metrics
from fedpdmm.targets import NO_ATTACK, Target

METRIC_COLUMNS = (
    "algorithm",
    "attack",
    "target",
    "round",
    "test_accuracy",
    "test_loss",
    "train_loss",
    "honest_accuracy_mean",
    "honest_accuracy_min",
    "honest_accuracy_max",
    "consensus_distance",
    "num_byzantine",
    "nonfinite_clients",
    "dropped_messages",
    "samples",
    "wall_time",
    "eval_time",
)

TIMING_COLUMNS = frozenset({"wall_time", "eval_time"})
"""Columns that measure seconds: they differ between two runs of the same config."""


def write_metrics(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One CSV row per algorithm x attack x target x evaluated round; known columns first."""
    extra = sorted({key for row in rows for key in row} - set(METRIC_COLUMNS))
    columns = list(METRIC_COLUMNS) + extra
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_value(row.get(key, "")) for key in columns})


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def summarize(
    rows: Sequence[dict[str, Any]], statuses: dict[tuple[str, str, str], str]
) -> list[dict]:
    """Final and best test accuracy (and final honest mean/min) per algorithm x attack x target."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["algorithm"], row["attack"], row["target"]), []).append(row)
    summary = []
    for key, group in groups.items():
        final = group[-1]
        accuracies = [r["test_accuracy"] for r in group if not math.isnan(r["test_accuracy"])]
        summary.append(
            {
                "algorithm": key[0],
                "attack": key[1],
                "target": key[2],
                "final_accuracy": final["test_accuracy"],
                "best_accuracy": max(accuracies) if accuracies else float("nan"),
                "honest_mean": final["honest_accuracy_mean"],
                "honest_min": final["honest_accuracy_min"],
                "rounds": final["round"],
                "status": statuses.get(key, "ok"),
            }
        )
    return summary


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def summary_markdown(summary: Sequence[dict[str, Any]], title: str, notes: Sequence[str]) -> str:
    header = (
        "| algorithm | attack | target | final acc (%) | best acc (%) | honest mean (%) "
        "| honest min (%) | rounds | status |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {s['algorithm']} | {s['attack']} | {s['target']} | {_pct(s['final_accuracy'])} "
        f"| {_pct(s['best_accuracy'])} | {_pct(s['honest_mean'])} | {_pct(s['honest_min'])} "
        f"| {s['rounds']} | {s['status']} |\n"
        for s in summary
    )
    lines = "".join(f"- {note}\n" for note in notes)
    return f"# {title}\n\n{header}{body}\n{lines}"


def plot_accuracy(
    path: Path, rows: Sequence[dict[str, Any]], title: str, *, band: bool = False
) -> None:
    """Test accuracy against round, one line per algorithm x attack x target.

    With a server the line is the global model; without one (`band=True`) it is the mean of the
    honest nodes, with a band from the worst to the best honest node.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        label = f"{row['algorithm']} / {row['attack']}"
        if row["attack"] != NO_ATTACK:
            label += f" @ {row['target']}"
        groups.setdefault(label, []).append(row)
    for label, group in groups.items():
        rounds = [r["round"] for r in group]
        (line,) = axes.plot(
            rounds,
            [100 * r["test_accuracy"] for r in group],
            marker="o",
            markersize=3,
            label=label,
        )
        if band:
            axes.fill_between(
                rounds,
                [100 * r["honest_accuracy_min"] for r in group],
                [100 * r["honest_accuracy_max"] for r in group],
                color=line.get_color(),
                alpha=0.15,
                linewidth=0,
            )
    axes.set_xlabel("round")
    axes.set_ylabel(
        "honest nodes' test accuracy (%), mean and range"
        if band
        else "global model test accuracy (%)"
    )
    axes.set_ylim(0, 100)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


class WrittenRun:
    """What `write_run` wrote: the directory and the summary rows."""

    def __init__(self, path: Path, summary: list[dict[str, Any]]) -> None:
        self.path = path
        self.summary = summary


def evaluation_note(setup) -> str:
    """What the evaluation scored the node models on (`eval.node_samples`)."""
    data = setup.data
    num_test = len(data.dataset.y_test)
    scored = num_test if data.node_test_index is None else len(data.node_test_index)
    probe = len(data.train_eval_index if data.node_train_index is None else data.node_train_index)
    which = (
        f"all {num_test} test images"
        if scored == num_test
        else f"a fixed seeded subsample of {scored} of the {num_test} test images"
    )
    node_columns = "honest_accuracy_*, node_accuracy.csv"
    if setup.network.graph is not None:
        node_columns += " and the test and train columns"
    model_scope = (
        f"the global model: all {num_test} test images and {len(data.train_eval_index)} "
        "honest training samples (train_loss); "
        if setup.network.graph is None
        else ""
    )
    return (
        f"evaluation: {model_scope}every honest node's model ({node_columns}): {which} and "
        f"{probe} honest training samples, the same for every node and round "
        "(eval.node_samples); eval_time in metrics.csv: its seconds"
    )


def run_notes(setup) -> list[str]:
    from fedpdmm import topology

    config = setup.config
    byzantine = setup.network.byzantine.nonzero().flatten().tolist()
    if setup.network.graph is not None:
        degrees = [d for _, d in setup.network.graph.degree()]
        setting = (
            f"peer-to-peer on a {config.topology.name} graph "
            f"({setup.network.graph.number_of_edges()} edges, "
            f"degree {min(degrees)}-{max(degrees)}, "
            f"spectral gap {topology.spectral_gap(setup.network.graph):.4f}; edges in graph.csv); "
            "final/best: mean test accuracy of the honest nodes' models"
        )
    else:
        setting = "a server and clients; final/best: test accuracy of the global model (server)"
    notes = [
        setting,
        f"data: {config.data.name}, {config.data.num_clients} clients, "
        f"{config.data.partition} partition; model: {config.model.name} "
        f"({setup.model.dim} parameters); {config.rounds} rounds of {config.local.steps} local "
        f"steps (batch {config.local.batch_size}, lr {config.local.lr}); seed {config.seed}",
        f"pdmm: c = {config.pdmm.c}, theta = {config.pdmm.theta}; "
        f"fedavg: {config.fedavg.weighting} average",
        f"attacked runs: {len(byzantine)} Byzantine clients {byzantine}; attack target(s): "
        f"{', '.join(config.attack.targets)} (the outcome depends on the target: see the README)",
        "honest mean/min: the honest clients' own models at the last evaluation",
        evaluation_note(setup),
        *setup.network.warnings,
    ]
    return notes


def write_run(out: Path, setup, outcomes) -> WrittenRun:
    """Write a finished `fedpdmm run` to `out` atomically (see the module docstring)."""
    from fedpdmm import config as config_module

    rows = [dict(row) for outcome in outcomes for row in outcome.rows]
    node_rows = [
        {
            **{k: row[k] for k in ("algorithm", "attack", "target", "round")},
            "node": node,
            "accuracy": accuracy,
        }
        for row in rows
        for node, accuracy in row.pop("node_accuracy", {}).items()
    ]
    statuses = {
        (o.algorithm, o.attack, o.target if o.attack != NO_ATTACK else Target.NONE.value): o.status
        for o in outcomes
    }
    summary = summarize(rows, statuses)
    title = f"fedpdmm run: {setup.config.data.name}"
    with staged_directory(out) as staging:
        (staging / "config.toml").write_text(
            config_module.dump_toml(config_module.to_dict(setup.config))
        )
        write_metrics(staging / "metrics.csv", rows)
        write_clients(staging / "clients.csv", setup)
        (staging / "summary.md").write_text(summary_markdown(summary, title, run_notes(setup)))
        plot_accuracy(staging / "accuracy.png", rows, title, band=setup.network.graph is not None)
        write_table(staging / "node_accuracy.csv", node_rows)
        if setup.network.graph is not None:
            write_graph(staging / "graph.csv", setup.network.graph)
    return WrittenRun(out, summary)


def write_table(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of equal keys as CSV."""
    with path.open("w", newline="") as handle:
        if not rows:
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)


def write_graph(path: Path, graph) -> None:
    """The graph's edge list (one undirected edge per row)."""
    from fedpdmm import topology

    write_table(path, [{"u": u, "v": v} for u, v in topology.edge_list(graph)])


def write_clients(path: Path, setup) -> None:
    """Per client: sample count, Byzantine role in attacked runs, label histogram."""
    histogram = setup.data.histogram
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "client",
                "num_samples",
                "byzantine",
                *[f"class_{k}" for k in range(histogram.shape[1])],
            ]
        )
        for client, counts in enumerate(histogram.tolist()):
            writer.writerow([client, sum(counts), int(setup.network.byzantine[client]), *counts])
