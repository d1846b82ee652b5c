"""The round loop: build everything from a config, train every algorithm x attack x target, record.

Data flows one way: config -> `build_setup` (data, partition, model, Byzantine set: shared by every
combination, so they differ only in the algorithm and the attack) -> `run_combination` (the rounds)
-> metric rows. Writing files is `fedpdmm.results`' job.

Where an attack strikes (`attack.target`):
- `model`:   the Byzantine client's trained model is perturbed, then encoded into its message;
- `update`:  the change since the round's start is perturbed (start + attack(trained - start));
- `message`: the transmitted vector itself is perturbed.
For FedAvg the message is the model, so `message` and `model` coincide. Byzantine clients compute
honestly and keep honest state; only what they transmit is corrupted (or, for a data attack such as
`label_flip`, what they train on).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import networkx as nx
import torch

from fedpdmm import aggregators, topology
from fedpdmm import attacks as attack_library
from fedpdmm.algorithms import CENTRALIZED, DECENTRALIZED, FedAvg, PDMMStar
from fedpdmm.algorithms.common import finite_rows
from fedpdmm.algorithms.decentralized import DSGD, GraphPDMM
from fedpdmm.algorithms.robust import RobustCombine, build_combine, parse_algorithm
from fedpdmm.config import Config
from fedpdmm.data import Dataset, label_histogram, load_dataset, partition
from fedpdmm.errors import ConfigError
from fedpdmm.local import ClientData, evaluate, train
from fedpdmm.models import FlatModel
from fedpdmm.seeding import derive_seed, generator

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
    graph: nx.Graph | None = None  # peer-to-peer runs only
    edges: topology.EdgeIndex | None = None
    edge_keys: list[str] | None = None  # "i>j" per directed edge, keys of per-edge attack noise
    warnings: tuple[str, ...] = ()
    root_data: ClientData | None = None  # the server's small clean dataset (FLTrust)


@dataclass
class CombinationResult:
    algorithm: str
    attack: str
    target: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"


def build_setup(config: Config, data_dir: str | None = None) -> Setup:
    """Load and partition the data, build the model and its initial vector, pick the Byzantines."""
    check_names(config)
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
    byzantine = torch.zeros(n, dtype=torch.bool)
    byzantine[torch.randperm(n, generator=generator(config.seed, "byzantine"))[:num_byzantine]] = (
        True
    )
    graph, edges, edge_keys, notes = _build_graph(config, byzantine)
    honest_index = torch.cat([parts[k] for k in range(n) if not byzantine[k]] or [parts[0]])
    keep = torch.randperm(len(honest_index), generator=generator(config.seed, "train-eval"))
    train_eval_index = honest_index[keep[:TRAIN_EVAL_SAMPLES]].sort().values
    root = torch.randperm(len(dataset.y_train), generator=generator(config.seed, "root"))
    setup = Setup(
        config=config,
        dataset=dataset,
        parts=parts,
        client_data=ClientData.from_parts(dataset.x_train, dataset.y_train, parts),
        model=model,
        x0=x0,
        byzantine=byzantine,
        train_eval_index=train_eval_index,
        histogram=label_histogram(dataset.y_train, parts, dataset.num_classes),
        graph=graph,
        edges=edges,
        edge_keys=edge_keys,
        warnings=notes,
        root_data=ClientData.from_parts(
            dataset.x_train, dataset.y_train, [root[: config.algorithm.root_size].sort().values]
        ),
    )
    for name in config.algorithms:
        build_algorithm(name, setup)
    return setup


def _build_graph(config: Config, byzantine: torch.Tensor):
    """The peer-to-peer graph, its edge index and warnings; all None for runs with a server."""
    if not config.decentralized:
        return None, None, None, ()
    n = config.data.num_clients
    graph = topology.build(
        config.topology.name, n, seed=derive_seed(config.seed, "topology"), **config.topology.params
    )
    edges = topology.edge_index(graph)
    keys = [f"{i}>{j}" for i, j in zip(edges.src.tolist(), edges.dst.tolist(), strict=True)]
    notes = []
    isolated = topology.isolated_honest(graph, byzantine)
    if isolated:
        message = (
            f"honest node(s) {isolated} have only Byzantine neighbours in the "
            f"{config.topology.name} graph: no method can help them (in attacked runs)"
        )
        warnings.warn(message, stacklevel=2)
        notes.append(message)
    return graph, edges, keys, tuple(notes)


def check_names(config: Config) -> None:
    """Algorithm, rule and attack names of `config` exist and fit its setting (no data needed)."""
    valid = DECENTRALIZED if config.decentralized else CENTRALIZED
    setting = (
        f"peer-to-peer runs (topology.name = {config.topology.name!r})"
        if config.decentralized
        else "runs with a server (topology.name = 'server')"
    )
    for name in config.algorithms:
        for step in parse_algorithm(name)[1]:
            if step not in aggregators.names() and step not in aggregators.pre_names():
                raise ConfigError(
                    f"unknown aggregation rule or pre-aggregation {step!r} in {name!r}; choose "
                    f"from {', '.join([*aggregators.names(), *aggregators.pre_names()])}"
                )
        if parse_algorithm(name)[0] not in valid:
            raise ConfigError(
                f"algorithm {name!r} is not available for {setting}; choose from "
                f"{', '.join(valid)}, optionally with robust rules: 'fedavg+median', "
                "'pdmm+nnm+krum' (fedpdmm list aggregators)"
            )
    for name in config.attacks:
        build_attack(name, config)


def build_attack(name: str, config: Config, robust: RobustCombine | None = None):
    """The attack `name` with its parameters from `[attack]` and `[attack.params.<name>]`.

    Attacks that search against the aggregation rule (`optimal_*`) get the algorithm's own rule.
    """
    params = dict(config.attack.params.get(name, {}))
    if name == "gaussian":
        params.setdefault("sigma", config.attack.sigma)
        params.setdefault("mode", config.attack.mode)
    if name.startswith("optimal_") and robust is not None and not robust.is_plain_mean:
        params.setdefault("aggregator", robust.value)
    return attack_library.get(name, **params)


def build_algorithm(name: str, setup: Setup):
    """The algorithm `name` (`base[+pre...][+rule]`): with a server, or on the setup's graph."""
    config = setup.config
    n = config.data.num_clients
    base, chain = parse_algorithm(name)
    robust = _robust_combine(name, chain, setup)
    if setup.edges is not None:
        if base == "pdmm":
            return GraphPDMM(setup.edges, c=config.pdmm.c, theta=config.pdmm.theta, robust=robust)
        if base == "dsgd":
            return DSGD(setup.edges, robust=robust if chain else _non_mean(robust))
        raise ConfigError(f"unknown algorithm {name!r}; choose from {', '.join(DECENTRALIZED)}")
    if base == "fedavg":
        weights = setup.client_data.sizes if config.fedavg.weighting == "samples" else None
        return FedAvg(num_clients=n, weights=weights, robust=robust)
    if base == "pdmm":
        return PDMMStar(num_clients=n, c=config.pdmm.c, theta=config.pdmm.theta, robust=robust)
    raise ConfigError(f"unknown algorithm {name!r}; choose from {', '.join(CENTRALIZED)}")


def _non_mean(robust: RobustCombine) -> RobustCombine | None:
    """`dsgd` keeps Metropolis-Hastings gossip unless a rule other than the mean is configured."""
    return None if robust.is_plain_mean else robust


def default_f(setup: Setup) -> int:
    """Byzantine rows a rule should expect: with a server the Byzantine count; on a graph the most
    Byzantine neighbours any honest node has (the b-local bound)."""
    if setup.graph is None:
        return int(setup.byzantine.sum())
    byzantine = set(setup.byzantine.nonzero().flatten().tolist())
    counts = [
        sum(neighbour in byzantine for neighbour in setup.graph.neighbors(node))
        for node in setup.graph.nodes
        if node not in byzantine
    ]
    return max(counts, default=0)


def _robust_combine(name: str, chain: list[str], setup: Setup) -> RobustCombine:
    config = setup.config
    robust = build_combine(
        chain,
        config.algorithm.aggregator,
        config.algorithm.pre,
        config.algorithm.params,
        default_f(setup),
    )
    if robust.is_plain_mean:
        return robust
    if setup.edges is None:
        aggregators.check_pipeline(robust.rule, robust.pre, n=config.data.num_clients)
        return robust
    if robust.rule.stateful or robust.rule.needs_reference:
        raise ConfigError(
            f"{robust.rule.name} in {name!r} needs a server (per-client history or a root "
            "dataset); use it with topology.name = 'server'"
        )
    extra = 1 if parse_algorithm(name)[0] == "dsgd" else 0
    for node in setup.graph.nodes:
        rows = setup.graph.degree(node) + extra
        try:
            aggregators.check_pipeline(robust.rule, robust.pre, n=rows)
        except ConfigError as error:
            raise ConfigError(
                f"{name!r} cannot run at node {node} of the {config.topology.name} graph, which "
                f"combines {rows} rows: {error}"
            ) from None
    return robust


def corrupt(
    attack,
    rows: torch.Tensor,
    byzantine: torch.Tensor,
    seed: int,
    round_index: int,
    keys: list[Any] | None = None,
    *,
    copy: bool = True,
) -> torch.Tensor:
    """`attack` applied to the Byzantine rows of `rows` `[m, d]` in round `round_index`.

    With `copy=False` the Byzantine rows are rewritten in place (a fresh `rows` the caller owns).

    An attack that reads only its own row runs row by row with the generator
    `(seed, "attack", round, key)`, where the key is the client (a row per client) or the edge
    "i>j" (a row per directed edge), so a client alone on another machine draws the same noise;
    an omniscient attack sees every row and draws from `(seed, "attack", round)`.
    """
    if not bool(byzantine.any()):
        return rows
    if getattr(attack, "omniscient", False):
        return attack(rows, byzantine, generator=generator(seed, "attack", round_index))
    out = rows.clone() if copy else rows
    own = torch.ones(1, dtype=torch.bool)
    for row in byzantine.nonzero().flatten().tolist():
        key = row if keys is None else keys[row]
        gen = generator(seed, "attack", round_index, key)
        out[row : row + 1] = attack(rows[row : row + 1], own, generator=gen)
    return out


def transmit(
    attack,
    target: str,
    encode: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    trained: torch.Tensor,
    byzantine: torch.Tensor,
    seed: int,
    round_index: int,
    keys: list[Any] | None = None,
) -> torch.Tensor:
    """The transmitted rows `[m, d]`, with the Byzantine ones rewritten at `target`.

    `start` and `trained` are each row's model at the start and the end of local training,
    `encode` turns models into messages, `byzantine` `[m]` marks rows sent by Byzantine nodes.
    """
    if target == "model":
        return encode(corrupt(attack, trained, byzantine, seed, round_index, keys))
    if target == "update":
        delta = corrupt(attack, trained - start, byzantine, seed, round_index, keys)
        return encode(start + delta)
    if target in ("message", "none"):
        return corrupt(attack, encode(trained), byzantine, seed, round_index, keys)
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
    attack = build_attack(attack_name, config, algorithm.robust)
    byzantine = setup.byzantine if attack_name != "none" else torch.zeros_like(setup.byzantine)
    data = setup.client_data
    if getattr(attack, "data_attack", False):
        data = data.with_labels(
            byzantine.nonzero().flatten(),
            partial(attack.flip_labels, num_classes=setup.dataset.num_classes),
        )
    shown_target = target if attack_name != "none" else "none"
    label = f"{algorithm_name} / {attack_name}" + (f" @ {target}" if attack_name != "none" else "")
    round_fn = _decentralized_round if setup.edges is not None else _centralized_round
    state = algorithm.init(setup.x0)
    counters = {"samples": 0, "dropped": 0}
    began = time.perf_counter()

    def record(round_index: int) -> bool:
        row = evaluate_round(setup, algorithm, state, byzantine)
        row.update(
            algorithm=algorithm_name,
            attack=attack_name,
            target=shown_target,
            round=round_index,
            num_byzantine=int(byzantine.sum()),
            samples=counters["samples"],
            dropped_messages=counters["dropped"],
            wall_time=time.perf_counter() - began,
        )
        result.rows.append(row)
        return math.isfinite(row["test_loss"])

    record(0)
    for round_index in range(1, config.rounds + 1):
        state, dropped = round_fn(
            setup, algorithm, state, data, attack, target, byzantine, round_index
        )
        counters["samples"] += (
            config.data.num_clients * config.local.steps * config.local.batch_size
        )
        counters["dropped"] += dropped
        broken = _broken(setup, algorithm, state, byzantine)
        if round_index % config.eval_every == 0 or round_index == config.rounds or broken:
            finite = record(round_index)
            if broken or not finite:
                result.status = f"diverged at round {round_index}"
                break
        if progress is not None:
            progress(label, round_index, config.rounds)
    return result


def local_training(setup: Setup, problem, data: ClientData, round_index: int) -> torch.Tensor:
    config = setup.config
    return train(
        setup.model,
        problem.start,
        data,
        torch.arange(config.data.num_clients),
        round_index,
        steps=config.local.steps,
        batch_size=config.local.batch_size,
        lr=config.local.lr,
        seed=config.seed,
        center=problem.center,
        rho=problem.rho,
    )


def _centralized_round(setup, algorithm, state, data, attack, target, byzantine, round_index):
    """Server -> clients -> local training -> (attacked) messages -> server."""
    server, clients = state
    clients, problem = algorithm.receive(clients, algorithm.downlink(server))
    trained = local_training(setup, problem, data, round_index)
    clients = algorithm.finish(clients, trained)
    messages = transmit(
        attack,
        target,
        partial(algorithm.encode, clients),
        problem.start,
        trained,
        byzantine,
        setup.config.seed,
        round_index,
    )
    accepted = finite_rows(messages)
    reference = server_reference(setup, algorithm, server, round_index)
    gen = generator(setup.config.seed, "aggregate", round_index)
    server = algorithm.update(server, messages, accepted, reference=reference, generator=gen)
    return (server, clients), int((~accepted).sum())


def server_reference(setup: Setup, algorithm, server, round_index: int) -> torch.Tensor | None:
    """FLTrust: the server's own update, K local steps on its root dataset from its model."""
    if not algorithm.needs_reference:
        return None
    config = setup.config
    start = algorithm.global_model(server).unsqueeze(0)
    trained = train(
        setup.model,
        start,
        setup.root_data,
        torch.zeros(1, dtype=torch.int64),
        round_index,
        steps=config.local.steps,
        batch_size=config.local.batch_size,
        lr=config.local.lr,
        seed=derive_seed(config.seed, "root"),
    )
    return (trained - start)[0]


def _decentralized_round(setup, algorithm, state, data, attack, target, byzantine, round_index):
    """Local training -> (attacked) per-edge messages -> every node combines what it received."""
    edges = setup.edges
    gen = generator(setup.config.seed, "aggregate", round_index)
    problem = algorithm.local_problem(state, generator=gen)
    trained = local_training(setup, problem, data, round_index)
    state = algorithm.finish(state, trained)
    byzantine_edges = byzantine.index_select(0, edges.src)
    if target == "message" or not bool(byzantine_edges.any()):
        messages = corrupt(
            attack,
            algorithm.encode_nodes(state, trained),
            byzantine_edges,
            setup.config.seed,
            round_index,
            setup.edge_keys,
            copy=False,
        )
    else:
        messages = transmit(
            attack,
            target,
            partial(algorithm.encode, state),
            problem.start.index_select(0, edges.src),
            trained.index_select(0, edges.src),
            byzantine_edges,
            setup.config.seed,
            round_index,
            setup.edge_keys,
        )
    accepted = finite_rows(messages)
    state = algorithm.combine(state, messages, accepted, generator=gen)
    return state, int((~accepted).sum())


def _models(setup: Setup, algorithm, state) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(global model [d] or None without a server, node models [n, d])."""
    if setup.edges is not None:
        return None, algorithm.node_models(state)
    server, clients = state
    return algorithm.global_model(server), algorithm.client_models(clients)


def _broken(setup: Setup, algorithm, state, byzantine: torch.Tensor) -> bool:
    """True when the global model (or, without a server, every honest node) is non-finite."""
    global_model, node_models = _models(setup, algorithm, state)
    if global_model is not None:
        return not bool(torch.isfinite(global_model).all())
    return not bool(finite_rows(node_models[~byzantine]).any())


def evaluate_round(setup: Setup, algorithm, state, byzantine: torch.Tensor) -> dict[str, Any]:
    """Metrics of one evaluation. Without a server, the global columns hold the honest mean."""
    dataset, model = setup.dataset, setup.model
    global_model, node_models = _models(setup, algorithm, state)
    honest_models = node_models[~byzantine]
    honest_accuracy, honest_loss = evaluate(model, honest_models, dataset.x_test, dataset.y_test)
    train_inputs = dataset.x_train[setup.train_eval_index]
    train_labels = dataset.y_train[setup.train_eval_index]
    if global_model is not None:
        test_accuracy, test_loss = evaluate(
            model, global_model.unsqueeze(0), dataset.x_test, dataset.y_test
        )
        _, train_loss = evaluate(model, global_model.unsqueeze(0), train_inputs, train_labels)
    else:
        test_accuracy, test_loss = honest_accuracy.mean(0, keepdim=True), honest_loss.mean(0, True)
        _, train_losses = evaluate(model, honest_models, train_inputs, train_labels)
        train_loss = train_losses.mean(0, keepdim=True)
    honest_nodes = (~byzantine).nonzero().flatten().tolist()
    return {
        "test_accuracy": float(test_accuracy[0]),
        "test_loss": float(test_loss[0]),
        "train_loss": float(train_loss[0]),
        "honest_accuracy_mean": float(honest_accuracy.mean()),
        "honest_accuracy_min": float(honest_accuracy.min()),
        "honest_accuracy_max": float(honest_accuracy.max()),
        "consensus_distance": consensus_distance(honest_models),
        "nonfinite_clients": int((~finite_rows(honest_models)).sum()),
        "node_accuracy": dict(zip(honest_nodes, honest_accuracy.tolist(), strict=True)),
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
