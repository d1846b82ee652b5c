"""Where a peer-to-peer round spends its time: local training versus messaging on the edges.

Runs the engine's own round (`fedpdmm.rounds.step` with the in-process `LocalWork`) on MNIST with
the MLP, 100 nodes on a random geometric graph by default, 10 of them Byzantine with a sign flip
on every edge, and prints one table row per algorithm: seconds per round in local training (the
K SGD steps of `fedpdmm.engine.local_training`), in setting up the local problems (the
algorithm's `receive`, PDMM's prox centres from its duals, and `finish`), in building and
attacking the per-edge messages, and in the rest of the step (acceptance check and combining),
with the share of local training.

    python benchmarks/decentralized_round.py --data-dir ../shared/datasets [--nodes 100]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import torch

from fedpdmm import config as config_module
from fedpdmm import engine
from fedpdmm.build import build_algorithm, build_attack
from fedpdmm.engine import LocalWork, local_training
from fedpdmm.rounds import Target, step
from fedpdmm.setup import Setup, build_setup


def zero_seconds() -> dict[str, float]:
    return {"training": 0.0, "problem": 0.0, "messages": 0.0}


@dataclass
class TimedWork(LocalWork):
    """`LocalWork` that adds up the seconds of its phases: `problem` is its `train` (receive,
    local SGD, finish) less the local SGD (`training`)."""

    seconds: dict[str, float] = field(default_factory=zero_seconds)

    def train(self, *args, **kwargs):
        began = time.perf_counter()
        sgd = self.seconds["training"]
        result = super().train(*args, **kwargs)
        sgd = self.seconds["training"] - sgd
        self.seconds["problem"] += time.perf_counter() - began - sgd
        return result

    def send(self, *args, **kwargs):
        began = time.perf_counter()
        result = super().send(*args, **kwargs)
        self.seconds["messages"] += time.perf_counter() - began
        return result


def measure(setup: Setup, name: str, rounds: int) -> dict[str, float]:
    config, network = setup.config, setup.network
    algorithm = build_algorithm(name, config, network, setup.data.clients.sizes)
    attack = build_attack("sign_flip", config)
    work = TimedWork(setup, attack, Target.MESSAGE, network.byzantine, setup.data.clients)

    def timed_local_training(*args, **kwargs):
        began = time.perf_counter()
        result = local_training(*args, **kwargs)
        work.seconds["training"] += time.perf_counter() - began
        return result

    engine.local_training = timed_local_training  # what `LocalWork.train` calls
    state = algorithm.init(setup.x0)
    total = 0.0
    try:
        for round_index in range(1, rounds + 1):
            if round_index == 2:  # the first round warms up allocations
                work.seconds.update(zero_seconds())
            began = time.perf_counter()
            state, _ = step(algorithm, state, work, round_index, seed=config.seed)
            if round_index > 1:
                total += time.perf_counter() - began
    finally:
        engine.local_training = local_training
    per_round = {key: value / (rounds - 1) for key, value in work.seconds.items()}
    per_round["combine"] = total / (rounds - 1) - sum(per_round.values())
    return per_round


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
    setup = build_setup(config, args.data_dir)
    edges = setup.network.edges
    print(
        f"MNIST MLP ({setup.model.dim} parameters), {args.nodes} nodes, random geometric graph "
        f"with {edges.num_directed_edges} directed edges, {args.byzantine} Byzantine (sign flip "
        f"on every edge), {config.local.steps} local steps of batch {config.local.batch_size}, "
        f"{args.threads} torch thread(s)\n"
    )
    print(
        "| algorithm | local training (s) | local problems (s) | messages (s) | combine (s) "
        "| training share |"
    )
    print("|---|---|---|---|---|---|")
    for name in ("pdmm", "dsgd"):
        times = measure(setup, name, args.rounds)
        total = sum(times.values())
        print(
            f"| {name} | {times['training']:.2f} | {times['problem']:.2f} "
            f"| {times['messages']:.2f} | {times['combine']:.2f} "
            f"| {100 * times['training'] / total:.0f} % |"
        )


if __name__ == "__main__":
    main()
