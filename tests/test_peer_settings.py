"""The data settings of the robust-aggregation literature: standardised inputs, Byzantine clients
without data, and labels dealt by a graph's communities, in whole setups and runs."""

from __future__ import annotations

import pytest
import torch

from fedpdmm.algorithms.scaffold import Scaffold
from fedpdmm.config import load
from fedpdmm.data import load_dataset, standardized
from fedpdmm.engine import run
from fedpdmm.errors import ConfigError
from fedpdmm.local import ClientData, train, without_data
from fedpdmm.models import FlatModel
from fedpdmm.setup import build_setup


def test_mnist_standardised_with_its_own_constants(real_data_dir):
    """The training set's channel mean and std are MNIST's well-known 0.1307 and 0.3081; after
    standardising, the training inputs have mean 0 and std 1 and the test inputs are scaled by
    the same constants (not their own)."""
    raw = load_dataset("mnist", data_dir=real_data_dir)
    assert float(raw.x_train.mean()) == pytest.approx(0.1307, abs=5e-5)
    assert float(raw.x_train.std()) == pytest.approx(0.3081, abs=5e-5)
    scaled = standardized(raw)
    assert float(scaled.x_train.double().mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(scaled.x_train.double().std()) == pytest.approx(1.0, abs=1e-4)
    expected_test = (raw.x_test[:50] - 0.1307) / 0.3081
    torch.testing.assert_close(scaled.x_test[:50], expected_test, atol=2e-3, rtol=0)
    assert torch.equal(scaled.y_train, raw.y_train) and scaled.x_train.dtype == torch.float32


def test_a_constant_channel_is_only_centred():
    from fedpdmm.data import Dataset

    x = torch.full((4, 2, 3, 3), 0.5)
    x[:, 1] = torch.arange(4.0).view(4, 1, 1)
    dataset = Dataset("toy", x, torch.zeros(4, dtype=torch.int64), x[:1], torch.zeros(1).long(), 2)
    scaled = standardized(dataset)
    assert torch.equal(scaled.x_train[:, 0], torch.zeros(4, 3, 3))
    assert torch.isfinite(scaled.x_train).all()


def test_normalize_is_off_by_default_and_changes_the_run():
    base = ["data.num_clients=4", "rounds=2", 'attacks=["none"]', 'algorithms=["fedavg"]']
    plain = build_setup(load(None, base))
    scaled = build_setup(load(None, [*base, "data.normalize=true"]))
    assert float(plain.data.dataset.x_train.min()) >= 0.0
    assert float(scaled.data.dataset.x_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert torch.equal(plain.data.parts[0], scaled.data.parts[0])


def honest_only(*extra: str):
    return load(
        None,
        [
            "data.num_clients=6",
            "attack.num_byzantine=2",
            "data.byzantine_data=false",
            "rounds=3",
            "eval_every=3",
            *extra,
        ],
    )


def test_byzantine_clients_hold_no_data_and_honest_ones_all_of_it():
    config = honest_only()
    setup = build_setup(config)
    byzantine = setup.network.byzantine
    sizes = setup.data.clients.sizes
    assert bool((sizes[byzantine] == 0).all()) and bool((sizes[~byzantine] > 0).all())
    assert int(sizes.sum()) == len(setup.data.dataset.y_train)
    assert int(setup.data.histogram[byzantine].sum()) == 0


def test_runs_with_data_less_byzantine_clients_count_only_honest_samples():
    config = honest_only(
        'algorithms=["pdmm", "fedavg", "scaffold"]',
        'attacks=["none", "ipm", "sign_flip"]',
        "attack.params.ipm.epsilon=0.5",
    )
    _, results = run(config)
    honest = config.data.num_clients - config.num_byzantine
    for result in results:
        assert result.status == "ok"
        last = result.rows[-1]
        assert last["samples"] == 3 * honest * config.local.steps * config.local.batch_size
        if result.attack == "none":
            assert last["test_accuracy"] > 0.5, result.algorithm


def test_a_client_without_data_has_a_zero_objective():
    """Its steps follow the rest of its objective: with a prox term it moves to the centre; with
    SCAFFOLD's correction only, Option II gives it the control variate of f = 0, zero."""
    model = FlatModel.build("logreg", (1, 8, 8), 3)
    features = torch.randn(10, 1, 8, 8)
    data = ClientData.from_parts(
        features, torch.zeros(10, dtype=torch.int64), [torch.arange(10), torch.empty(0).long()]
    )
    start = torch.randn(2, model.dim)
    center = torch.randn(2, model.dim)
    rho = torch.tensor([1.0, 1.0])
    options = dict(steps=200, batch_size=4, lr=0.1, seed=0, center=center, rho=rho)
    trained = train(model, start, data, torch.arange(2), 1, **options)
    torch.testing.assert_close(trained[1], center[1], atol=1e-6, rtol=0)  # (1 - 0.1)^200
    assert not torch.allclose(trained[0], center[0], atol=1e-2)

    algorithm = Scaffold(num_clients=2, lr=0.1, steps=5, server_lr=1.0)
    state = algorithm.init(torch.zeros(model.dim))
    nodes = state.nodes._replace(c=torch.randn(2, model.dim))
    nodes, problem = algorithm.receive(nodes, algorithm.downlink(state.hub))
    trained = train(
        model,
        problem.start,
        data,
        torch.arange(2),
        1,
        steps=5,
        batch_size=4,
        lr=0.1,
        seed=0,
        linear=problem.linear,
    )
    finished = algorithm.finish(nodes, trained)
    torch.testing.assert_close(finished.c[1], torch.zeros(model.dim), atol=1e-5, rtol=0)


def test_without_data_with_momentum_keeps_its_buffer():
    start, center = torch.zeros(1, 3), torch.ones(1, 3)
    velocity = torch.zeros(1, 3)
    kwargs = dict(steps=1, lr=0.1, center=center, center_scale=1.0, rho=torch.tensor([2.0]))
    first = without_data(
        start, **kwargs, linear=None, momentum=0.9, weight_decay=0.0, velocity=velocity
    )
    torch.testing.assert_close(first, torch.full((1, 3), 0.2))  # x - lr * rho (x - v)
    torch.testing.assert_close(velocity, torch.full((1, 3), -2.0))


@pytest.mark.parametrize(
    ("assignments", "match"),
    [
        (['attacks=["label_flip"]'], "label_flip"),
        (['fedavg.weighting="samples"'], "weighting"),
    ],
)
def test_settings_that_data_less_byzantine_clients_cannot_run_are_refused(assignments, match):
    with pytest.raises(ConfigError, match=match):
        build_setup(honest_only(*assignments))


def test_flower_refuses_a_split_by_the_simulated_byzantine_set():
    from fedpdmm.flower.settings import check_deployable

    with pytest.raises(ConfigError, match="byzantine_data"):
        check_deployable(honest_only())


def test_dumbbell_cliques_hold_different_labels():
    config = load(
        None,
        [
            'topology.name="two_cliques"',
            "data.num_clients=10",
            'data.partition="communities"',
            'algorithms=["pdmm", "dsgd"]',
        ],
    )
    histogram = build_setup(config).data.histogram
    assert bool((histogram[:5, 5:] == 0).all()) and bool((histogram[5:, :5] == 0).all())
    assert bool((histogram[:5, :5].sum(0) > 0).all()) and bool((histogram[5:, 5:].sum(0) > 0).all())


def test_communities_need_a_graph():
    with pytest.raises(ConfigError, match="graph"):
        load(None, ['data.partition="communities"'])
