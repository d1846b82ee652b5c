"""One node's side of a round: the engine's client steps on the node's own single row.

A node holds only its own partition. `ClientData` keeps the engine's layout (every client's offset
and size) with the other clients' sizes set to zero, so `fedpdmm.local.train` with
`clients=[partition]` draws exactly the simulator's batches (they depend on seed, client, round).
What a node sends goes through `fedpdmm.rounds.strike` with the key `partition`, so the attack
noise comes from `generator(seed, "attack", round, partition)`, the simulator's stream for that
client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from fedpdmm import seeding
from fedpdmm.algorithms.base import RoundState
from fedpdmm.build import build_algorithm, build_attack
from fedpdmm.config import Config
from fedpdmm.flower.settings import NodeRole
from fedpdmm.local import ClientData, train
from fedpdmm.models import FlatModel
from fedpdmm.network import Network
from fedpdmm.rounds import NO_ATTACK, MessageRows, Target, strike
from fedpdmm.setup import Setup, build_setup


@dataclass(frozen=True)
class RoundRequest:
    """What the server sends a node for one round of one algorithm x attack x target."""

    combination: int
    algorithm: str
    attack: str
    target: str
    round: int
    downlink: torch.Tensor  # [d] this client's row of `algorithm.downlink(server)`
    reset: bool  # start the client state afresh (first round, or rejoining after a dropout)
    send_model: bool  # also return the client's model (for the server's honest-client metrics)
    steps: int | None = None  # local steps this round (None: local.steps; fewer: a straggler)


@dataclass(frozen=True)
class RoundReply:
    """What a node returns: its transmitted message `[d]`, optionally its model `[d]`."""

    message: Any
    model: Any = None
    seconds: float = 0.0  # time the node spent in `client_round`


@dataclass(frozen=True)
class LocalData:
    """A node's own training samples `features [m, ...]`, `labels [m]`, and dataset facts."""

    features: torch.Tensor
    labels: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int


def local_data_from_setup(setup: Setup, partition: int) -> LocalData:
    """Cut partition `partition` out of a full engine setup (same sample order as the simulator)."""
    index = setup.data.parts[partition]
    return LocalData(
        features=setup.data.dataset.x_train[index].contiguous(),
        labels=setup.data.dataset.y_train[index].contiguous(),
        input_shape=tuple(setup.data.dataset.input_shape),
        num_classes=setup.data.dataset.num_classes,
    )


def load_local_data(config: Config, role: NodeRole) -> LocalData:
    """Load the dataset and partition exactly as `fedpdmm run` does; keep this node's part."""
    return local_data_from_setup(build_setup(config, role.data_dir), role.partition)


def client_data(local: LocalData, partition: int, num_clients: int) -> ClientData:
    """The engine's `ClientData` layout in which only `partition` owns samples."""
    sizes = torch.zeros(num_clients, dtype=torch.int64)
    sizes[partition] = len(local.labels)
    return ClientData(
        features=local.features,
        sample_index=torch.arange(len(local.labels)),
        labels=local.labels,
        offsets=torch.zeros(num_clients, dtype=torch.int64),
        sizes=sizes,
    )


def build_model(config: Config, local: LocalData) -> FlatModel:
    return FlatModel.build(
        config.model.name,
        local.input_shape,
        local.num_classes,
        config.model.widths(),
        config.model.conv(),
    )


MEMORY_KEYS = ("attacker.shadow", "attacker.echo")
"""A Byzantine client's memory (`fedpdmm.attacker`), kept beside its algorithm state."""

VELOCITY_KEY = "local.velocity"
"""The client's momentum buffer (`local.momentum`), kept beside its algorithm state."""


def node_network(config: Config) -> Network:
    """The server's network as a node can know it: n clients, of which `num_byzantine` are
    Byzantine (the count sizes the server's robust rule; which ones does not matter here)."""
    n = config.data.num_clients
    return Network(n, torch.arange(n) < config.num_byzantine)


def client_round(
    config: Config,
    role: NodeRole,
    local: LocalData,
    request: RoundRequest,
    state: dict[str, torch.Tensor] | None,
) -> tuple[dict[str, torch.Tensor], RoundReply]:
    """Run one round on this node: receive, K local SGD steps, finish, strike, encode.

    `state` holds the client's algorithm state (`x`, and `z` for PDMM) as `[1, d]` tensors from the
    previous round of the same combination; None (or `request.reset`) starts from round 0's state.
    A Byzantine PDMM client with `attack.state = "honest"` also keeps `MEMORY_KEYS`: the shadow of
    the server's dual of its edge as its honest messages would have built it, and that dual as
    its sent messages built it (tracked with the server's rule, assuming every finite message is
    accepted), and removes their difference, the echo of its corruption, from its downlink.
    """
    began = time.perf_counter()
    n, partition = config.data.num_clients, role.partition
    model = build_model(config, local)
    data = client_data(local, partition, n)
    x0 = model.init(seeding.generator(config.seed, "model-init"))
    algorithm = build_algorithm(request.algorithm, config, node_network(config))
    attack = build_attack(request.attack, config, algorithm.robust)
    byzantine = role.byzantine and request.attack != NO_ATTACK
    own = torch.tensor([partition])
    if byzantine and attack.data_attack:
        data = data.with_labels(own, partial(attack.flip_labels, num_classes=local.num_classes))
    stored = dict(state or {})
    memory = {key: stored.pop(key) for key in list(stored) if key in MEMORY_KEYS}
    velocity = stored.pop(VELOCITY_KEY, None)
    initial_state = algorithm.init(x0)
    initial = initial_state.nodes
    if state is None or request.reset:
        nodes = type(initial)(*(field[partition : partition + 1] for field in initial))
        memory, velocity = {}, None
    else:
        nodes = type(initial)(**stored)
    downlink = request.downlink.reshape(1, -1)
    echo = algorithm.echo(initial_state, own)
    honest_state = byzantine and config.attack.state == "honest" and echo is not None
    if honest_state:
        first = echo
        shadow = memory.get("attacker.shadow", first)
        tracked = memory.get("attacker.echo", first)
        downlink = downlink + (shadow - tracked)
    nodes, problem = algorithm.receive(nodes, downlink)
    if config.local.momentum != 0 and velocity is None:
        velocity = torch.zeros_like(problem.start)
    trained = train(
        model,
        problem.start,
        data,
        own,
        request.round,
        steps=config.local.steps if request.steps is None else request.steps,
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
    steps = None if request.steps is None else torch.tensor([request.steps])
    nodes = algorithm.finish(nodes, trained, steps=steps)
    struck = strike(
        Target(request.target),
        attack,
        algorithm,
        RoundState(None, nodes),
        problem.start,
        trained,
        torch.tensor([byzantine]),
        MessageRows(None, [partition]),
        config.seed,
        request.round,
    )
    new_state = dict(nodes._asdict())
    if velocity is not None:
        new_state[VELOCITY_KEY] = velocity
    if honest_state:
        theta = algorithm.echo_relaxation
        new_state["attacker.shadow"] = torch.lerp(shadow, struck.honest_rows, theta)
        sent = struck.messages
        accepted = bool(torch.isfinite(sent).all())
        new_state["attacker.echo"] = (1 - theta) * tracked + theta * sent if accepted else tracked
    model_row = nodes.x[0] if request.send_model else None
    reply = RoundReply(struck.messages[0], model_row, time.perf_counter() - began)
    return new_state, reply
