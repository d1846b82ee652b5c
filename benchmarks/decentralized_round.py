"""Where a peer-to-peer round spends its time: local training versus messaging on the edges.

Runs the engine's own pieces (the same calls `fedpdmm.engine` makes in a decentralized round) on
MNIST with the MLP, 100 nodes on a random geometric graph by default, and prints one table row per
algorithm: seconds per round in local training, in building the per-edge messages (with a
Byzantine sign flip on them), and in combining them, with the share of local training.

    python benchmarks/decentralized_round.py --data-dir ../shared/datasets [--nodes 100]
"""

from __future__ import annotations

import argparse
import time

import torch

from fedpdmm import config as config_module
from fedpdmm import engine
from fedpdmm.algorithms.common import finite_rows


def measure(setup: engine.Setup, name: str, rounds: int) -> dict[str, float]:
    algorithm = engine.build_algorithm(name, setup)
    attack = engine.build_attack("sign_flip", setup.config)
    state = algorithm.init(setup.x0)
    byzantine_edges = setup.byzantine.index_select(0, setup.edges.src)
    totals = {"training": 0.0, "messages": 0.0, "combine": 0.0}
    for round_index in range(1, rounds + 1):
        began = time.perf_counter()
        problem = algorithm.local_problem(state)
        trained = engine.local_training(setup, problem, setup.client_data, round_index)
        state = algorithm.finish(state, trained)
        trained_at = time.perf_counter()
        messages = engine.corrupt(
            attack,
            algorithm.encode_nodes(state, trained),
            byzantine_edges,
            setup.config.seed,
            round_index,
            setup.edge_keys,
        )
        sent_at = time.perf_counter()
        state = algorithm.combine(state, messages, finite_rows(messages))
        done = time.perf_counter()
        if round_index > 1:  # the first round warms up allocations
            totals["training"] += trained_at - began
            totals["messages"] += sent_at - trained_at
            totals["combine"] += done - sent_at
    return {key: value / (rounds - 1) for key, value in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--byzantine", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = config_module.load(
        None,
        [
            "data.name=mnist",
            f"data.num_clients={args.nodes}",
            f"attack.num_byzantine={args.byzantine}",
            "topology.name=random_geometric",
            "local.batch_size=64",
        ],
    )
    setup = engine.build_setup(config, args.data_dir)
    edges = setup.edges
    print(
        f"MNIST MLP ({setup.model.dim} parameters), {args.nodes} nodes, random geometric graph "
        f"with {edges.num_directed_edges} directed edges, {args.byzantine} Byzantine (sign flip "
        f"on every edge), {config.local.steps} local steps of batch {config.local.batch_size}, "
        f"{args.threads} torch thread(s)\n"
    )
    print("| algorithm | local training (s) | messages (s) | combine (s) | training share |")
    print("|---|---|---|---|---|")
    for name in ("pdmm", "dsgd"):
        times = measure(setup, name, args.rounds)
        total = sum(times.values())
        print(
            f"| {name} | {times['training']:.2f} | {times['messages']:.2f} "
            f"| {times['combine']:.2f} | {100 * times['training'] / total:.0f} % |"
        )


if __name__ == "__main__":
    main()
