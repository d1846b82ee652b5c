"""`fedpdmm reproduce network`: every algorithm on an unreliable network, with and without
Byzantine nodes.

Message loss 0 / 10 / 30 / 50 % (full participation) and participation 100 / 50 / 20 % (no loss),
for PDMM, FedAvg, FedProx and SCAFFOLD with a server (`mnist_network` preset) and PDMM and gossip
on a random geometric graph (`mnist_bitflip_decentralized` with the same attack), with no attack
and under dissensus at the message (Byzantine nodes keep an honest state). The report gives the
final accuracy (mean ± std over seeds) and the rounds each method needs to reach a fixed target
accuracy, beside the sweeps' own tables and plots.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from fedpdmm import report, store
from fedpdmm.reproduce.claims import plus_minus, rounds_to_reach
from fedpdmm.reproduce.documents import write_sections
from fedpdmm.reproduce.grids import Experiment

LOSSES = (0.0, 0.1, 0.3, 0.5)
PARTICIPATIONS = (1.0, 0.5, 0.2)
NETWORK_ATTACK = "dissensus"
"""The consensus attack that broke plain PDMM and FedAvg with a server in the paper grid."""
TARGET_ACCURACY = {"server": 80.0, "graph": 70.0}
"""Test accuracy (%) whose first evaluated round is reported: the server model with a server,
the honest nodes' mean on the graph (fixed before running, below every method's reliable
unattacked accuracy in the quick grid)."""


SUMMARY_HEADER = ("algorithm", "attack", "network", "final accuracy %", "rounds to target")


def network_experiments(quick: bool) -> list[Experiment]:
    """The four sweeps: {server, graph} x {loss, participation}."""
    schedule = {"rounds": 20, "eval_every": 2} if quick else {"rounds": 50, "eval_every": 5}
    seeds = 1 if quick else 3
    common = {"attacks": ["none", NETWORK_ATTACK], "attack.target": "message", **schedule}
    server = {**common, "algorithms": ["pdmm", "fedavg", "fedprox", "scaffold"]}
    graph = {**common, "algorithms": ["pdmm", "dsgd"]}
    reliable = {"network.loss": 0.0, "network.participation": 1.0}
    experiments = []
    for setting, preset, overrides in (
        ("server", "mnist_network", server),
        ("graph", "mnist_bitflip_decentralized", graph),
    ):
        base = {**overrides, **reliable}
        experiments += [
            Experiment(
                f"{setting}-loss",
                f"{setting.capitalize()}: message loss 0 / 10 / 30 / 50 %",
                preset,
                base,
                {"network.loss": list(LOSSES)},
                seeds,
            ),
            Experiment(
                f"{setting}-participation",
                f"{setting.capitalize()}: participation 100 / 50 / 20 %",
                preset,
                base,
                {"network.participation": list(PARTICIPATIONS)},
                seeds,
            ),
        ]
    return experiments


def summary_rows(results: report.Results, setting: str) -> list[list[str]]:
    """One row per algorithm x attack x network value: final accuracy and rounds to target."""
    target = TARGET_ACCURACY[setting]
    rows = []
    for cell in report.cells(results):
        (axis, value), *_ = cell.setting or (("", ""),)
        reached = rounds_to_reach(cell, target)
        finals = cell.finals
        spread = statistics.stdev(finals) if len(finals) > 1 else float("nan")
        rows.append(
            [
                cell.algorithm,
                cell.attack if cell.attack == "none" else f"{cell.attack} @ {cell.target}",
                f"{axis.removeprefix('network.')} = {value}",
                plus_minus((statistics.fmean(finals), spread)),
                "not reached" if reached is None else str(reached),
            ]
        )
    return sorted(rows, key=lambda row: (row[0], row[1], row[2]))


def write_network_report(
    experiments: Sequence[Experiment], out: Path
) -> tuple[Path, list[tuple[str, list[list[str]]]]]:
    """`out/report/`: a summary table per sweep, then the sweeps' own sections."""
    document = report.Document("fedpdmm reproduce network")
    document.paragraph(
        "Every algorithm on an unreliable network (`[network]`, `fedpdmm.channel`): each message "
        "lost with probability `loss`, each node taking part in a round with probability "
        "`participation`. With a server: PDMM, FedAvg, FedProx and SCAFFOLD, MNIST, MLP, 10 "
        "clients of which 2 Byzantine; on a random geometric graph: PDMM and gossip (dsgd), 20 "
        "nodes of which 4 Byzantine. Attacked runs use dissensus at the message with an honest "
        "attacker state. A lost PDMM message keeps the receiver's dual of that edge (stochastic "
        "PDMM); FedAvg, FedProx and SCAFFOLD combine the messages that arrived; gossip keeps a "
        "missing neighbour's weight on the receiver."
    )
    header = list(SUMMARY_HEADER)
    tables: list[tuple[str, list[list[str]]]] = []
    for experiment in experiments:
        root = out / experiment.name
        if not (root / store.SWEEP_FILE).exists():
            continue
        setting = experiment.name.split("-")[0]
        rows = summary_rows(report.load_results(root), setting)
        document.heading(f"{experiment.title}: summary")
        document.paragraph(
            f"Rounds to target: the first evaluated round whose mean accuracy over seeds reaches "
            f"{TARGET_ACCURACY[setting]:.0f} % ({experiment.seeds} "
            f"seed{'s' if experiment.seeds > 1 else ''})."
        )
        document.table(header, rows)
        tables.append((experiment.title, rows))
    return write_sections(document, experiments, out), tables
