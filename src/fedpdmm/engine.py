"""Experiments in one process: every algorithm x attack x target of a config on one shared setup.

Data flows one way: config -> `fedpdmm.setup.build_setup` (data, network, model: shared by every
combination, so they differ only in the algorithm and the attack) -> `run_combination` (the
rounds of `fedpdmm.rounds`, with every node's work done here by `LocalWork`) -> metric rows.
Writing files is `fedpdmm.results`' job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from fedpdmm import attacks as attack_library
from fedpdmm import devices
from fedpdmm import reuse as reuse_module
from fedpdmm.algorithms.base import Algorithm, CombineContext, LocalProblem, RoundState
from fedpdmm.attacker import AttackerMemory
from fedpdmm.build import build_algorithm, build_attack
from fedpdmm.channel import Channel, RoundConditions
from fedpdmm.config import Config
from fedpdmm.evaluation import evaluate_round, is_broken
from fedpdmm.local import ClientData, train
from fedpdmm.rounds import (
    NO_ATTACK,
    MessageRows,
    NodeWork,
    ProgressCallback,
    Replies,
    Schedule,
    Struck,
    Target,
    run_rounds,
    strike,
)
from fedpdmm.seeding import derive_seed, generator
from fedpdmm.setup import Setup, build_setup

__all__ = [
    "CombinationResult",
    "LocalWork",
    "ProgressCallback",
    "combinations",
    "run",
    "run_combination",
    "run_work",
    "server_reference",
]


@dataclass
class CombinationResult:
    algorithm: str
    attack: str
    target: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"


def local_training(
    setup: Setup,
    problem,
    data: ClientData,
    round_index: int,
    clients: torch.Tensor | None = None,
    steps: int | None = None,
    velocity: torch.Tensor | None = None,
) -> torch.Tensor:
    """K local SGD steps (or `steps`) of every node, or of the nodes `clients` (the problem's
    rows are then those nodes' rows), on its local problem. `velocity`: those nodes' momentum
    buffers (`local.momentum`), updated in place."""
    config = setup.config
    return train(
        setup.model,
        problem.start,
        data,
        torch.arange(config.data.num_clients) if clients is None else clients,
        round_index,
        steps=config.local.steps if steps is None else steps,
        batch_size=config.local.batch_size,
        lr=config.local.lr,
        seed=config.seed,
        center=problem.center,
        center_scale=problem.center_scale,
        rho=problem.rho,
        linear=problem.linear,
        momentum=config.local.momentum,
        weight_decay=config.local.weight_decay,
        velocity=velocity,
    )


@dataclass
class LocalWork:
    """Every node's half of a round, in this process: train, finish, strike the Byzantine rows.

    It also plays the Byzantine nodes' memory (`attack.state`, see `fedpdmm.attacker`): with
    `"honest"` they remove the echo of their own corruption from what they receive; replaying
    attacks read their own past rows.

    With `local.momentum`, `velocity` `[n, d]` holds every node's momentum buffer across the
    rounds of the combination (zeros at first); a node that does not work keeps it. A Byzantine
    node's buffer is that of its own training, which is honest: attacks rewrite what it sends.
    """

    setup: Setup
    attack: Any
    target: Target
    byzantine: torch.Tensor  # [n] bool: the nodes that attack in this combination
    data: ClientData
    memory: AttackerMemory = field(default_factory=AttackerMemory)
    velocity: torch.Tensor | None = None

    def begin(self, algorithm: Algorithm, state: RoundState, round_index: int) -> RoundState:
        return state

    def __call__(
        self,
        algorithm,
        state,
        downlink,
        round_index: int,
        evaluate: bool,
        context: CombineContext,
        conditions: RoundConditions | None = None,
    ) -> Replies:
        config, network = self.setup.config, self.setup.network
        rows = network.byzantine_rows(self.byzantine)
        honest_state = config.attack.state == "honest" and bool(rows.any())
        echo = self.memory.echo_correction(algorithm, state, rows) if honest_state else None
        if echo is not None and network.edges is None:
            downlink = self.memory.correct_downlink(downlink, rows, echo)
        nodes, start, trained = self.train(
            algorithm, state.nodes, downlink, round_index, conditions
        )
        struck = self.send(
            algorithm, state._replace(nodes=nodes), start, trained, round_index, context, conditions
        )
        if honest_state:
            self.memory.remember(algorithm, struck.honest_rows, rows, conditions, network.senders)
        messages = struck.messages
        if echo is not None and network.edges is not None:
            colluding = (rows & self.byzantine.index_select(0, network.edges.dst))[rows]
            if bool(colluding.any()):  # Byzantine neighbours keep each other's state honest
                messages[rows.nonzero().flatten()[colluding]] = struck.honest_rows[colluding]
            messages = self.memory.correct_incoming(messages, rows, echo, network.edges.reverse)
        self.memory.keep_history(struck.space_rows, rows, self.attack.history)
        has_data = self.data.sizes > 0  # clients without data draw no samples
        if conditions is None:
            steps = int(has_data.sum()) * config.local.steps
        else:
            steps = int(conditions.steps[conditions.working & has_data].sum())
        return Replies(nodes, messages, None, steps * config.local.batch_size)

    def train(self, algorithm, nodes, downlink, round_index: int, conditions=None):
        """(nodes, start, trained): every node's local problem, K SGD steps on it, `finish`.
        With `conditions`, only the working nodes train (each its `steps`); the others keep
        their state (their `trained` row is their start)."""
        gen = generator(self.setup.config.seed, "aggregate", round_index)
        received, problem = algorithm.receive(nodes, downlink, generator=gen)
        if self.setup.config.local.momentum != 0 and self.velocity is None:
            self.velocity = torch.zeros_like(problem.start)
        if conditions is None:
            trained = local_training(
                self.setup, problem, self.data, round_index, velocity=self.velocity
            )
            return algorithm.finish(received, trained), problem.start, trained
        trained = problem.start.clone(memory_format=torch.contiguous_format)
        for count in conditions.steps[conditions.working].unique().tolist():
            clients = (conditions.working & (conditions.steps == count)).nonzero().flatten()
            subset = rows_of(problem, clients)
            velocity = None if self.velocity is None else self.velocity[clients]
            trained[clients] = local_training(
                self.setup, subset, self.data, round_index, clients, int(count), velocity
            )
            if velocity is not None:
                self.velocity[clients] = velocity
        finished = algorithm.finish(received, trained, steps=conditions.steps)
        return keep_rows(nodes, finished, conditions.working), problem.start, trained

    def send(
        self,
        algorithm,
        state,
        start,
        trained,
        round_index: int,
        context: CombineContext,
        conditions: RoundConditions | None = None,
    ) -> Struck:
        """Every message row, the Byzantine ones struck at the target. Over an unreliable
        network an omniscient attacker knows the round's draw: it computes against the rows
        whose message of this round arrives this round (a busy node's row carries last round's
        message instead)."""
        network = self.setup.network
        rows = network.byzantine_rows(self.byzantine)
        arrived = None
        if conditions is not None:
            arrived = conditions.arrived & ~conditions.busy.index_select(0, network.senders)
        return strike(
            self.target,
            self.attack,
            algorithm,
            state,
            start,
            trained,
            rows,
            message_rows(network),
            self.setup.config.seed,
            round_index,
            context=context,
            past=self.memory.past(self.attack.history, rows),
            keep_honest=False,
            arrived=arrived,
            memory=self.memory.receivers,
        )

    def counters(self) -> dict[str, int]:
        return {}


def rows_of(problem: LocalProblem, clients: torch.Tensor) -> LocalProblem:
    """The local problems of `clients` only (the rows of every `[m, ...]` field)."""

    def pick(value):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.index_select(0, clients)
        return value

    return LocalProblem(
        pick(problem.start),
        pick(problem.center),
        pick(problem.rho),
        pick(problem.linear),
        problem.center_scale,
    )


def keep_rows(before: Any, after: Any, working: torch.Tensor) -> Any:
    """`after` with the rows of the nodes that did not work (`~working` `[n]`) as in `before`:
    every field of the node state with one row per node that the round replaced."""
    fields = {}
    for name, old in before._asdict().items():
        new = getattr(after, name)
        per_node = isinstance(new, torch.Tensor) and new.dim() > 0
        if per_node and new is not old and new.shape[0] == working.shape[0]:
            mask = working.view(-1, *([1] * (new.dim() - 1)))
            new = torch.where(mask, new, old.to(new.dtype))
        fields[name] = new
    return type(after)(**fields)


def message_rows(network) -> MessageRows:
    """Senders, receivers and noise keys of `network`'s message rows."""
    if network.edges is None:
        return MessageRows(None, network.keys)
    return MessageRows(network.senders, network.keys, network.edges.dst)


def server_reference(setup: Setup, global_model: torch.Tensor, round_index: int) -> torch.Tensor:
    """FLTrust: the server's own update, K local steps on its root dataset from its model."""
    config = setup.config
    start = global_model.unsqueeze(0)
    trained = train(
        setup.model,
        start,
        setup.data.root,
        torch.zeros(1, dtype=torch.int64),
        round_index,
        steps=config.local.steps,
        batch_size=config.local.batch_size,
        lr=config.local.lr,
        seed=derive_seed(config.seed, "root"),
    )
    return (trained - start)[0]


def attacked_nodes(setup: Setup, attack_name: str) -> torch.Tensor:
    """`[n]` bool: the Byzantine set, or nobody in the unattacked run."""
    byzantine = setup.network.byzantine
    return byzantine if attack_name != NO_ATTACK else torch.zeros_like(byzantine)


def combination_label(algorithm: str, attack: str, target: str) -> str:
    return f"{algorithm} / {attack}" + (f" @ {target}" if attack != NO_ATTACK else "")


def run_combination(
    setup: Setup,
    algorithm_name: str,
    attack_name: str,
    target: str,
    progress: ProgressCallback | None = None,
) -> CombinationResult:
    """Train one algorithm under one attack at one target; evaluate every `eval_every` rounds."""
    config = setup.config
    algorithm = build_algorithm(algorithm_name, config, setup.network, setup.data.clients.sizes)
    attack = build_attack(attack_name, config, algorithm.robust)
    byzantine = attacked_nodes(setup, attack_name)
    data = setup.data.clients
    if attack.data_attack:
        data = data.with_labels(
            byzantine.nonzero().flatten(),
            partial(attack.flip_labels, num_classes=setup.data.dataset.num_classes),
        )
    work = LocalWork(setup, attack, Target(target), byzantine, data)
    return run_work(setup, algorithm, work, (algorithm_name, attack_name, target), progress)


def run_work(
    setup: Setup,
    algorithm: Algorithm,
    work: NodeWork,
    combination: tuple[str, str, str],
    progress: ProgressCallback | None = None,
) -> CombinationResult:
    """The round loop of one combination with the node half done by `work` (in process here,
    over a transport on Flower), evaluated against `setup`'s test data."""
    algorithm_name, attack_name, target = combination
    config = setup.config
    byzantine = attacked_nodes(setup, attack_name)
    shown = Target(target) if attack_name != NO_ATTACK else Target.NONE
    channel = Channel.from_config(config, setup.network)
    rows, status = run_rounds(
        algorithm,
        work,
        algorithm.init(setup.x0),
        Schedule(config.rounds, config.eval_every, config.seed),
        evaluate=lambda state: evaluate_round(setup, algorithm, state, byzantine),
        broken=lambda state: is_broken(algorithm, state, byzantine),
        reference=partial(server_reference, setup),
        progress=progress,
        label=combination_label(algorithm_name, attack_name, target),
        columns={
            "algorithm": algorithm_name,
            "attack": attack_name,
            "target": str(shown),
            "num_byzantine": int(byzantine.sum()),
        },
        channel=channel,
    )
    return CombinationResult(algorithm_name, attack_name, target, rows, status)


def combinations(config: Config) -> list[tuple[str, str, str]]:
    """(algorithm, attack, target) triples in run order; `none` runs once (target `none`), and a
    data attack once (target `data`), not per target."""
    triples = []
    for algorithm in config.algorithms:
        for attack in config.attacks:
            if attack == NO_ATTACK:
                targets = [Target.NONE.value]
            elif attack_library.REGISTRY.lookup(attack).data_attack:
                targets = [Target.DATA.value]
            else:
                targets = config.attack.targets
            triples += [(algorithm, attack, target) for target in targets]
    return triples


def run(
    config: Config,
    data_dir: str | None = None,
    progress: ProgressCallback | None = None,
    reuse: Path | None = None,
) -> tuple[Setup, list[CombinationResult]]:
    """Every combination of `config`, on one shared setup.

    `reuse`: a folder of finished combinations (`fedpdmm.reuse`); those found there are not
    computed again, and those computed are stored there.
    """
    setup = build_setup(config, data_dir)
    with devices.default_device(setup.x0.device):
        results = _run_all(setup, config, data_dir, progress, reuse)
    return setup, results


def _run_all(
    setup: Setup,
    config: Config,
    data_dir: str | None,
    progress: ProgressCallback | None,
    reuse: Path | None,
) -> list[CombinationResult]:
    """Every combination of `config` in order; with `reuse`, each found there is loaded, each
    claimed by another run is left for last (and then loaded once that run has stored it), and
    the others are computed and stored."""
    triples = combinations(config)
    if reuse is None:
        return [run_combination(setup, *combination, progress) for combination in triples]
    setting = setup.network.setting
    keys = {c: reuse_module.combination_key(config, c, setting, data_dir) for c in triples}
    done: dict[tuple[str, str, str], CombinationResult] = {}

    def load_or_compute(combination: tuple[str, str, str]) -> CombinationResult:
        found = reuse_module.load(reuse, keys[combination])
        if found is not None:
            return CombinationResult(*combination, *found)
        result = run_combination(setup, *combination, progress)
        reuse_module.store(reuse, keys[combination], result.rows, result.status)
        return result

    deferred = []
    for combination in triples:
        found = reuse_module.load(reuse, keys[combination])
        if found is not None:
            done[combination] = CombinationResult(*combination, *found)
            continue
        with reuse_module.claim(reuse, keys[combination]) as mine:
            if mine:
                done[combination] = load_or_compute(combination)
            else:
                deferred.append(combination)
    for combination in deferred:
        with reuse_module.claim(reuse, keys[combination], wait=True):
            done[combination] = load_or_compute(combination)
    return [done[combination] for combination in triples]
