"""The round loop: build everything from a config, train every algorithm x attack x target, record.

Data flows one way: config -> `build_setup` (data, partition, model, Byzantine set: shared by every
combination, so they differ only in the algorithm and the attack) -> `run_combination` (the rounds)
-> metric rows. Writing files is `fedpdmm.results`' job.

Where an attack strikes (`attack.target`):
- `model`:   the Byzantine client's trained model is perturbed, then encoded into its message;
- `update`:  the change since the round's starting point is perturbed (start + attack(trained - start));
- `message`: the transmitted vector itself is perturbed.
For FedAvg the message is the model, so `message` and `model` coincide. Byzantine clients compute
honestly and keep honest state; only what they transmit is corrupted (or, for a data attack such as
`label_flip`, what they train on).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fedpdmm import attacks as attack_library
from fedpdmm.algorithms import CENTRALIZED, Algorithm, FedAvg, PDMMStar
from fedpdmm.algorithms.common import finite_rows
from fedpdmm.config import Config
from fedpdmm.data import Dataset, label_histogram, load_dataset, partition
from fedpdmm.errors import ConfigError
from fedpdmm.local import ClientData, evaluate, train
from fedpdmm.models import FlatModel
from fedpdmm.seeding import generator

TRAIN_EVAL_SAMPLES = 10_000

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Setup:
    """What every combination of one config shares."""

    config: Config
    dataset: Dataset
    parts: list[torch.Tensor]
    client_data: ClientData
    model: FlatModel
    x0: torch.Tensor
    byzantine: torch.Tensor  # [n] bool: the clients that are Byzantine in attacked runs
    train_eval_index: torch.Tensor  # dataset indices used for the honest training loss
    histogram: torch.Tensor  # [n, classes]


@dataclass
class CombinationResult:
    algorithm: str
    attack: str
    target: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"


def build_setup(config: Config, data_dir: str | None = None) -> Setup:
    """Load and partition the data, build the model and its initial vector, pick the Byzantine set."""
    _check_names(config)
    data_dir = data_dir or config.data.dir
    dataset = load_dataset(
        config.data.name, data_dir=data_dir, seed=config.seed, **config.data.options
    )
    n = config.data.num_clients
    parts = partition(
        dataset.y_train,
        n,
        config.data.partition,
        generator=generator(config.seed, "partition"),
        alpha=config.data.alpha,
        min_size=config.data.min_size,
        shards_per_client=config.data.shards_per_client,
    )
    model = FlatModel.build(
        config.model.name, dataset.input_shape, dataset.num_classes, config.model.hidden
    )
    x0 = model.init(generator(config.seed, "model-init"))
    num_byzantine = config.num_byzantine
    if num_byzantine > n:
        raise ConfigError(
            f"attack.num_byzantine={num_byzantine} exceeds data.num_clients={n}; lower it"
        )
    byzantine = torch.zeros(n, dtype=torch.bool)
    byzantine[torch.randperm(n, generator=generator(config.seed, "byzantine"))[:num_byzantine]] = (
        True
    )
    honest_index = torch.cat([parts[k] for k in range(n) if not byzantine[k]] or [parts[0]])
    keep = torch.randperm(len(honest_index), generator=generator(config.seed, "train-eval"))
    train_eval_index = honest_index[keep[:TRAIN_EVAL_SAMPLES]].sort().values
    return Setup(
        config=config,
        dataset=dataset,
        parts=parts,
        client_data=ClientData.from_parts(dataset.x_train, dataset.y_train, parts),
        model=model,
        x0=x0,
        byzantine=byzantine,
        train_eval_index=train_eval_index,
        histogram=label_histogram(dataset.y_train, parts, dataset.num_classes),
    )


def _check_names(config: Config) -> None:
    for name in config.algorithms:
        if name not in CENTRALIZED:
            raise ConfigError(
                f"unknown algorithm {name!r} in 'algorithms'; choose from {', '.join(CENTRALIZED)}"
            )
    for name in config.attacks:
        build_attack(name, config)


def build_attack(name: str, config: Config):
    """The attack `name` with its parameters from `[attack]` and `[attack.params.<name>]`."""
    params = dict(config.attack.params.get(name, {}))
    if name == "gaussian":
        params.setdefault("sigma", config.attack.sigma)
        params.setdefault("mode", config.attack.mode)
    return attack_library.get(name, **params)


def build_algorithm(name: str, setup: Setup) -> Algorithm:
    config = setup.config
    n = config.data.num_clients
    if name == "fedavg":
        weights = setup.client_data.sizes if config.fedavg.weighting == "samples" else None
        return FedAvg(num_clients=n, weights=weights)
    if name == "pdmm":
        return PDMMStar(num_clients=n, c=config.pdmm.c, theta=config.pdmm.theta)
    raise ConfigError(f"unknown algorithm {name!r}; choose from {', '.join(CENTRALIZED)}")


def corrupt(
    attack, rows: torch.Tensor, byzantine: torch.Tensor, seed: int, round_index: int
) -> torch.Tensor:
    """`attack` applied to the Byzantine rows of `rows` `[n, d]` in round `round_index`.

    An attack that reads only its own row runs row by row with the generator
    `(seed, "attack", round, client)`, so a client alone on another machine draws the same noise;
    an omniscient attack sees every row and draws from `(seed, "attack", round)`.
    """
    if not bool(byzantine.any()):
        return rows
    if getattr(attack, "omniscient", False):
        return attack(rows, byzantine, generator=generator(seed, "attack", round_index))
    out = rows.clone()
    own = torch.ones(1, dtype=torch.bool)
    for client in byzantine.nonzero().flatten().tolist():
        gen = generator(seed, "attack", round_index, client)
        out[client : client + 1] = attack(rows[client : client + 1], own, generator=gen)
    return out


def transmit(
    attack,
    target: str,
    algorithm: Algorithm,
    clients: Any,
    start: torch.Tensor,
    trained: torch.Tensor,
    byzantine: torch.Tensor,
    seed: int,
    round_index: int,
) -> torch.Tensor:
    """The messages every client transmits, with the Byzantine ones rewritten at `target`."""
    if target == "model":
        return algorithm.encode(clients, corrupt(attack, trained, byzantine, seed, round_index))
    if target == "update":
        delta = corrupt(attack, trained - start, byzantine, seed, round_index)
        return algorithm.encode(clients, start + delta)
    if target in ("message", "none"):
        messages = algorithm.encode(clients, trained)
        return corrupt(attack, messages, byzantine, seed, round_index)
    raise ConfigError(f"unknown attack.target {target!r}; choose model, update or message")


def run_combination(
    setup: Setup,
    algorithm_name: str,
    attack_name: str,
    target: str,
    progress: ProgressCallback | None = None,
) -> CombinationResult:
    """Train one algorithm under one attack at one target; evaluate every `eval_every` rounds."""
    config = setup.config
    result = CombinationResult(algorithm_name, attack_name, target)
    algorithm = build_algorithm(algorithm_name, setup)
    attack = build_attack(attack_name, config)
    byzantine = setup.byzantine if attack_name != "none" else torch.zeros_like(setup.byzantine)
    data = setup.client_data
    if getattr(attack, "data_attack", False):
        clients_flipped = byzantine.nonzero().flatten()
        data = data.with_labels(
            clients_flipped,
            lambda labels: attack.flip_labels(labels, setup.dataset.num_classes),
        )
    n = config.data.num_clients
    all_clients = torch.arange(n)
    server, clients = algorithm.init(setup.x0)
    samples = 0
    dropped = 0
    began = time.perf_counter()
    label = f"{algorithm_name} / {attack_name}" + (f" @ {target}" if attack_name != "none" else "")

    def record(round_index: int) -> bool:
        row = _evaluate_round(setup, algorithm, server, clients, byzantine)
        row.update(
            algorithm=algorithm_name,
            attack=attack_name,
            target=target if attack_name != "none" else "none",
            round=round_index,
            num_byzantine=int(byzantine.sum()),
            samples=samples,
            dropped_messages=dropped,
            wall_time=time.perf_counter() - began,
        )
        result.rows.append(row)
        return math.isfinite(row["test_loss"])

    record(0)
    for round_index in range(1, config.rounds + 1):
        received = algorithm.downlink(server)
        clients, problem = algorithm.receive(clients, received)
        trained = train(
            setup.model,
            problem.start,
            data,
            all_clients,
            round_index,
            steps=config.local.steps,
            batch_size=config.local.batch_size,
            lr=config.local.lr,
            seed=config.seed,
            center=problem.center,
            rho=problem.rho,
        )
        clients = algorithm.finish(clients, trained)
        samples += n * config.local.steps * config.local.batch_size
        messages = transmit(
            attack,
            target,
            algorithm,
            clients,
            problem.start,
            trained,
            byzantine,
            config.seed,
            round_index,
        )
        accepted = finite_rows(messages)
        dropped += int((~accepted).sum())
        server = algorithm.update(server, messages, accepted)
        diverged = not bool(torch.isfinite(algorithm.global_model(server)).all())
        if round_index % config.eval_every == 0 or round_index == config.rounds or diverged:
            finite = record(round_index)
            if diverged or not finite:
                result.status = f"diverged at round {round_index}"
                break
        if progress is not None:
            progress(label, round_index, config.rounds)
    return result


def _evaluate_round(
    setup: Setup,
    algorithm: Algorithm,
    server: Any,
    clients: Any,
    byzantine: torch.Tensor,
) -> dict[str, Any]:
    dataset, model = setup.dataset, setup.model
    global_model = algorithm.global_model(server).unsqueeze(0)
    test_accuracy, test_loss = evaluate(model, global_model, dataset.x_test, dataset.y_test)
    _, train_loss = evaluate(
        model,
        global_model,
        dataset.x_train[setup.train_eval_index],
        dataset.y_train[setup.train_eval_index],
    )
    honest_models = algorithm.client_models(clients)[~byzantine]
    honest_accuracy, _ = evaluate(model, honest_models, dataset.x_test, dataset.y_test)
    return {
        "test_accuracy": float(test_accuracy[0]),
        "test_loss": float(test_loss[0]),
        "train_loss": float(train_loss[0]),
        "honest_accuracy_mean": float(honest_accuracy.mean()),
        "honest_accuracy_min": float(honest_accuracy.min()),
        "honest_accuracy_max": float(honest_accuracy.max()),
        "consensus_distance": consensus_distance(honest_models),
        "nonfinite_clients": int((~finite_rows(honest_models)).sum()),
    }


def consensus_distance(models: torch.Tensor) -> float:
    """mean_i ||x_i - mean_j x_j|| over the rows of `models` `[m, d]` (NaN if any is non-finite)."""
    if not bool(torch.isfinite(models).all()):
        return float("nan")
    centered = models.double() - models.double().mean(dim=0)
    return float(centered.norm(dim=1).mean())


def combinations(config: Config) -> list[tuple[str, str, str]]:
    """(algorithm, attack, target) triples in run order; `none` runs once, not per target."""
    triples = []
    for algorithm in config.algorithms:
        for attack in config.attacks:
            targets = ["none"] if attack == "none" else config.attack.targets
            triples += [(algorithm, attack, target) for target in targets]
    return triples


def run(
    config: Config, data_dir: str | None = None, progress: ProgressCallback | None = None
) -> tuple[Setup, list[CombinationResult]]:
    """Every combination of `config`, on one shared setup."""
    setup = build_setup(config, data_dir)
    results = [
        run_combination(setup, algorithm, attack, target, progress)
        for algorithm, attack, target in combinations(config)
    ]
    return setup, results
