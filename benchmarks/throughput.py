"""Training throughput of the local solver, inside the engine and beside a bare PyTorch loop.

    python benchmarks/throughput.py --data-dir /work/shared/datasets            # both tables
    python benchmarks/throughput.py --data-dir ... --skip-paths --clients 10    # engine table only

Table 1 (MNIST MLP preset: MLP 784-200-10, 10 local steps, batch 64, lr 0.05): training samples per
second of `fedpdmm.local.train` as `fedpdmm.engine.run_combination` calls it (FedAvg, and PDMM with
its prox term), and of direct `train` calls with `mode="vmap"` and `mode="loop"`, each beside a bare
loop that does the same forward and backward passes in one batch of all clients' samples (one
`nn.Module`, `torch.optim.SGD`). After every engine round the bare loop and the direct calls run on
that round's batches, so every ratio compares runs made at the same moment on a shared machine; the
table shows medians over the rounds. Evaluation is timed apart and reported under the table.

Table 2: `train` per path (`fused`, `vmap`, `loop`) for logreg, mlp and cnn on MNIST 28x28 and the
cnn on Olivetti 64x64, at 10 and 100 clients (medians of `--repeats` interleaved runs).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from fedpdmm import engine, local
from fedpdmm import evaluation as evaluation_module
from fedpdmm.config import load
from fedpdmm.data import load_dataset, partition
from fedpdmm.models import FlatModel
from fedpdmm.seeding import generator
from fedpdmm.setup import build_setup

PRESET = ["data.name=mnist", "model.name=mlp", "model.hidden=[200]"]
PRESET += ["local.steps=10", "local.batch_size=64", "local.lr=0.05", "attacks=['none']"]


def bare_round(
    module: nn.Module, data: local.ClientData, positions: torch.Tensor, lr: float
) -> None:
    """K plain SGD steps of `module` on all clients' batches `positions` `[n, K, B]` at once."""
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    for step in range(positions.shape[1]):
        batch = positions[:, step].reshape(-1)
        inputs, labels = data.features[data.sample_index[batch]], data.labels[batch]
        loss = F.cross_entropy(module(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def bare_mlp(input_size: int, hidden: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(input_size, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )


def timed(function, *args, **kwargs) -> float:
    began = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - began


def engine_table(clients: int, threads: int, rounds: int, data_dir: str, compare: bool) -> list:
    """Rows (clients, threads, path, samples/s, ratio to bare) and the evaluation seconds."""
    torch.set_num_threads(threads)
    overrides = [*PRESET, f"data.num_clients={clients}", f"rounds={rounds}"]
    config = load(None, [*overrides, f"eval_every={rounds}", "algorithms=['fedavg', 'pdmm']"])
    setup = build_setup(config, data_dir)
    steps, batch, lr = config.local.steps, config.local.batch_size, config.local.lr
    samples = clients * steps * batch
    speeds: dict[str, list[float]] = defaultdict(list)
    ratios: dict[str, list[float]] = defaultdict(list)
    evaluation: list[float] = []
    running = {"path": ""}
    real_train, real_evaluate = local.train, evaluation_module.evaluate

    def train_then_compare(model, start, data, all_clients, round_index, **kwargs):
        began = time.perf_counter()
        trained = real_train(model, start, data, all_clients, round_index, **kwargs)
        seconds = {running["path"]: time.perf_counter() - began}
        positions = local.batch_positions(data, all_clients, round_index, steps, batch, config.seed)
        module = bare_mlp(setup.model.shapes[0][1], config.model.hidden[0], 10)
        seconds["bare"] = timed(bare_round, module, data, positions, lr)
        if compare and running["path"] == "engine fedavg (fused)":
            for mode in ("vmap", "loop"):
                kwargs_mode = {**kwargs, "mode": mode}
                seconds[f"train {mode}"] = timed(
                    real_train, model, start, data, all_clients, round_index, **kwargs_mode
                )
        for path, value in seconds.items():
            speeds[path].append(samples / value)
            ratios[path].append(seconds["bare"] / value)
        return trained

    def evaluate_timed(*args, **kwargs):
        began = time.perf_counter()
        result = real_evaluate(*args, **kwargs)
        evaluation.append(time.perf_counter() - began)
        return result

    warm_up = setup.x0.expand(clients, -1)
    for mode in ("fused", "vmap", "loop"):
        real_train(
            setup.model,
            warm_up,
            setup.data.clients,
            torch.arange(clients),
            0,
            steps=1,
            batch_size=batch,
            lr=lr,
            seed=config.seed,
            mode=mode,
        )
    positions = local.batch_positions(setup.data.clients, torch.arange(clients), 0, 1, batch, 0)
    bare_round(
        bare_mlp(setup.model.shapes[0][1], config.model.hidden[0], 10),
        setup.data.clients,
        positions,
        lr,
    )
    engine.train, evaluation_module.evaluate = train_then_compare, evaluate_timed
    try:
        for algorithm, running["path"] in (
            ("fedavg", "engine fedavg (fused)"),
            ("pdmm", "engine pdmm (fused)"),
        ):
            engine.run_combination(setup, algorithm, "none", "none")
    finally:
        engine.train, evaluation_module.evaluate = real_train, real_evaluate
    rows = [
        (clients, threads, path, statistics.median(speeds[path]), statistics.median(ratios[path]))
        for path in speeds
    ]
    evaluated_rounds = 2 * 2  # round 0 and the last, for each algorithm
    return rows, sum(evaluation) / evaluated_rounds


def paths_table(clients: list[int], repeats: int, data_dir: str) -> list:
    """Rows (dataset, model, clients, steps, path, samples/s, ratio to the fastest)."""
    torch.set_num_threads(1)
    cases = [("mnist", "logreg", 10), ("mnist", "mlp", 10), ("mnist", "cnn", 2)]
    cases.append(("olivetti", "cnn", 1))
    rows = []
    for dataset_name, model_name, steps in cases:
        dataset = load_dataset(dataset_name, data_dir=data_dir, seed=0)
        model = FlatModel.build(model_name, dataset.input_shape, dataset.num_classes)
        modes = ["vmap", "loop"]
        if local.linear_relu_layers(model) is not None:
            modes.insert(0, "fused")
        for count in clients:
            parts = partition(dataset.y_train, count, "iid", generator=generator(0, "partition"))
            data = local.ClientData.from_parts(dataset.x_train, dataset.y_train, parts)
            start = model.init(generator(0, "model-init")).expand(count, -1)
            seconds: dict[str, list[float]] = defaultdict(list)
            for _ in range(repeats):
                for mode in modes:
                    seconds[mode].append(
                        timed(
                            local.train,
                            model,
                            start,
                            data,
                            torch.arange(count),
                            1,
                            steps=steps,
                            batch_size=64,
                            lr=0.05,
                            seed=0,
                            mode=mode,
                        )
                    )
            speeds = {mode: count * steps * 64 / statistics.median(seconds[mode]) for mode in modes}
            best = max(speeds.values())
            for mode in modes:
                rows.append(
                    (
                        dataset_name,
                        model_name,
                        count,
                        steps,
                        mode,
                        speeds[mode],
                        speeds[mode] / best,
                    )
                )
            print(f"  measured {dataset_name} {model_name} at {count} clients", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="dataset folder (else FEDPDMM_DATA)")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5, help="engine rounds per algorithm")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per path in table 2")
    parser.add_argument("--no-compare", action="store_true", help="table 1 without vmap/loop")
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--skip-paths", action="store_true")
    args = parser.parse_args()
    if not args.skip_engine:
        rows, notes = [], []
        for threads in args.threads:
            for clients in args.clients:
                found, evaluation = engine_table(
                    clients, threads, args.rounds, args.data_dir, not args.no_compare
                )
                rows += found
                notes.append(f"{clients} clients, {threads} threads: {evaluation:.2f} s")
                print(f"  measured {clients} clients with {threads} threads", flush=True)
        print("\nMNIST MLP 784-200-10, 10 steps, batch 64, lr 0.05 (medians over rounds)\n")
        print("| clients | threads | path | samples/s | ratio to bare |")
        print("|---:|---:|---|---:|---:|")
        for clients, threads, path, speed, ratio in rows:
            print(f"| {clients} | {threads} | {path} | {speed:,.0f} | {ratio:.2f} |")
        print("\nEvaluation (engine metrics of one evaluated round, not in the numbers above):")
        print("\n".join(f"- {note}" for note in notes))
    if not args.skip_paths:
        rows = paths_table(args.clients, args.repeats, args.data_dir)
        print("\n`train` paths, 1 thread, batch 64 (medians over repeats)\n")
        print("| dataset | model | clients | steps | path | samples/s | ratio to fastest |")
        print("|---|---|---:|---:|---|---:|---:|")
        for dataset_name, model_name, count, steps, mode, speed, ratio in rows:
            print(
                f"| {dataset_name} | {model_name} | {count} | {steps} | {mode} "
                f"| {speed:,.0f} | {ratio:.2f} |"
            )


if __name__ == "__main__":
    main()
