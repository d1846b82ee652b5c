"""`local.momentum` and `local.weight_decay` in whole rounds: with one local step FedAvg is exactly
worker momentum (Karimireddy, He, Jaggi 2021), buffers are client state across rounds, and every
algorithm runs with them."""

from __future__ import annotations

import pytest
import torch

from fedpdmm.attacks import get as get_attack
from fedpdmm.build import build_algorithm
from fedpdmm.channel import Channel
from fedpdmm.config import load
from fedpdmm.engine import LocalWork, Target, run
from fedpdmm.errors import ConfigError
from fedpdmm.local import batch_positions
from fedpdmm.rounds import step
from fedpdmm.setup import build_setup

ROUNDS = 4


def momentum_config(*extra: str):
    return load(
        None,
        [
            "data.num_clients=5",
            "model.name='logreg'",
            "local.steps=1",
            "local.batch_size=8",
            "local.lr=0.1",
            "local.momentum=0.9",
            "local.weight_decay=0.001",
            *extra,
        ],
    )


def rounds_of(config, name: str, network: Channel | None = None):
    """(setup, work, states after each round) of `name` run by the engine's round step."""
    setup = build_setup(config)
    algorithm = build_algorithm(name, config, setup.network, setup.data.clients.sizes)
    nobody = torch.zeros(config.data.num_clients, dtype=torch.bool)
    work = LocalWork(setup, get_attack("none"), Target.NONE, nobody, setup.data.clients)
    state, states = algorithm.init(setup.x0), []
    for round_index in range(1, ROUNDS + 1):
        state, _ = step(algorithm, state, work, round_index, seed=config.seed, channel=network)
        states.append(algorithm.models(state)[0])
    return setup, work, states


def test_fedavg_with_one_local_step_is_worker_momentum():
    """x <- x - lr * mean_i m_i with m_i <- mu m_i + grad f_i(x; batch) + lambda x: the server
    applies the mean of the clients' momenta, computed here by hand with autograd."""
    config = momentum_config()
    setup, _, states = rounds_of(config, "fedavg")
    data, model = setup.data.clients, setup.model
    clients = torch.arange(config.data.num_clients)
    x = setup.x0.double()
    momenta = torch.zeros(len(clients), len(x), dtype=torch.float64)
    for round_index in range(1, ROUNDS + 1):
        positions = batch_positions(data, clients, round_index, 1, 8, config.seed)
        for client in clients.tolist():
            batch = positions[client, 0]
            inputs = data.features[data.sample_index[batch]].double()
            point = x.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(model.loss(point, inputs, data.labels[batch]), point)
            momenta[client] = 0.9 * momenta[client] + gradient + 0.001 * x
        x = x - 0.1 * momenta.mean(0)
        torch.testing.assert_close(states[round_index - 1].double(), x, atol=2e-6, rtol=1e-5)


def test_a_client_that_does_not_work_keeps_its_buffer():
    config = momentum_config("network.participation=0.5")
    network = Channel.from_config(config, build_setup(config).network)
    setup, work, _ = rounds_of(config, "pdmm", network)
    before = work.velocity.clone()
    draw = Channel.from_config(config, setup.network).draw(ROUNDS + 1)
    network.pending, network.busy = None, None
    algorithm = build_algorithm("pdmm", config, setup.network, setup.data.clients.sizes)
    state = algorithm.init(setup.x0)
    step(algorithm, state, work, ROUNDS + 1, seed=config.seed, channel=network)
    assert bool((~draw.working).any()) and bool(draw.working.any())
    assert torch.equal(work.velocity[~draw.working], before[~draw.working])
    assert not torch.equal(work.velocity[draw.working], before[draw.working])


def test_every_algorithm_runs_with_momentum_and_repeats_exactly():
    config = momentum_config(
        "local.steps=3",
        "rounds=3",
        'algorithms=["pdmm", "fedavg", "fedprox", "scaffold"]',
        'attacks=["none", "sign_flip"]',
    )
    _, results = run(config)
    _, again = run(config)
    for result, repeat in zip(results, again, strict=True):
        assert result.status == "ok"
        assert result.rows[-1]["test_accuracy"] == repeat.rows[-1]["test_accuracy"]
        if result.attack == "none":
            assert result.rows[-1]["test_loss"] < result.rows[0]["test_loss"], result.algorithm


@pytest.mark.parametrize(
    "assignment",
    ["local.momentum=1", "local.momentum=-0.1", "local.weight_decay=-1", 'local.momentum="x"'],
)
def test_bad_optimizer_settings_name_the_key(assignment):
    with pytest.raises(ConfigError, match="local"):
        load(None, [assignment])
