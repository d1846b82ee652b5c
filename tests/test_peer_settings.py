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


def test_client_samples_keep_a_seeded_subset_of_each_clients_own_samples():
    settings = ["data.num_clients=5", 'data.partition="sorted"']
    whole = build_setup(load(None, settings)).data
    capped = build_setup(load(None, [*settings, "data.client_samples=40"])).data
    again = build_setup(load(None, [*settings, "data.client_samples=40"])).data
    other = build_setup(load(None, [*settings, "data.client_samples=40", "seed=1"])).data
    for full, part, same in zip(whole.parts, capped.parts, again.parts, strict=True):
        assert len(part) == min(40, len(full))
        assert set(part.tolist()) <= set(full.tolist())
        assert bool((part[1:] > part[:-1]).all())  # sorted, no repeats
        assert torch.equal(part, same)
    # the sorted partition draws nothing: another seed changes only the subsets
    assert any(not torch.equal(a, b) for a, b in zip(capped.parts, other.parts, strict=True))
    assert capped.clients.sizes.tolist() == [len(part) for part in capped.parts]
    assert int(capped.histogram.sum()) == 5 * 40
    roomy = build_setup(load(None, [*settings, "data.client_samples=100000"])).data
    assert all(torch.equal(a, b) for a, b in zip(roomy.parts, whole.parts, strict=True))


@pytest.mark.parametrize("value", ["0", "-3", "2.5", '"many"', "true"])
def test_client_samples_must_be_a_positive_integer(value):
    with pytest.raises(ConfigError, match="client_samples"):
        load(None, [f"data.client_samples={value}"])


def test_max_degree_gossip_weights_are_one_over_the_largest_degree_plus_one():
    from fedpdmm.build import build_algorithm

    settings = ['topology.name="two_cliques"', "data.num_clients=20", 'algorithms=["dsgd"]']
    for weights, inside in (("metropolis", 1 / 10), ("max_degree", 1 / 11)):
        config = load(None, [*settings, f'gossip.weights="{weights}"'])
        setup = build_setup(config)
        algorithm = build_algorithm("dsgd", config, setup.network, setup.data.clients.sizes)
        edges = setup.network.edges
        mixing = torch.zeros(20, 20, dtype=torch.float64)
        mixing[edges.dst, edges.src] = algorithm.edge_weights
        assert bool((mixing.sum(1) <= 1 + 1e-12).all())
        assert torch.allclose(mixing, mixing.T)
        inner = (edges.degree[edges.src] == 9) & (edges.degree[edges.dst] == 9)
        assert torch.allclose(algorithm.edge_weights[inner], torch.tensor(inside).double())
        if weights == "max_degree":  # every edge, the bridge's too: He et al.'s 1/11
            assert torch.allclose(algorithm.edge_weights, torch.tensor(1 / 11).double())
        x = torch.randn(20, 3, dtype=torch.float64)
        state = algorithm.init(x[0])._replace(nodes=algorithm.init(x[0]).nodes._replace(x=x))
        messages = algorithm.encode_nodes(state.nodes, x)
        accepted = torch.ones(len(messages), dtype=torch.bool)
        mixed = algorithm.combine(state, messages, accepted).nodes.x
        expected = x * (1 - mixing.sum(1, keepdim=True)) + mixing @ x
        torch.testing.assert_close(mixed, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError, match=r"gossip\.weights"):
        load(None, ['gossip.weights="uniform"'])


def test_communities_need_a_graph():
    with pytest.raises(ConfigError, match="graph"):
        load(None, ['data.partition="communities"'])


def test_the_bucketing_papers_network_runs_from_a_config_and_repeats_exactly():
    config = load(
        None,
        [
            'model.name="cnn"',
            "model.channels=[8, 16]",
            "model.kernel=3",
            "model.padding=0",
            'model.pool="last"',
            "model.hidden=[32]",
            "model.dropout=[0.25, 0.5]",
            "data.num_clients=4",
            "rounds=2",
            "local.steps=2",
            "local.momentum=0.9",
            'attacks=["none"]',
            'algorithms=["fedavg"]',
        ],
    )
    setup = build_setup(config)
    assert [type(m).__name__ for m in setup.model.module].count("Dropout") == 2
    _, results = run(config)
    _, again = run(config)
    assert results[0].status == "ok"
    assert [r["test_loss"] for r in results[0].rows] == [r["test_loss"] for r in again[0].rows]


@pytest.mark.parametrize(
    "assignment",
    [
        "model.dropout=1",
        "model.dropout=[0.5, -0.1]",
        "model.channels=[]",
        "model.channels=[0]",
        "model.kernel=0",
        "model.padding=-1",
        'model.pool="avg"',
        "model.hidden=[0]",
    ],
)
def test_bad_model_settings_name_the_key(assignment):
    with pytest.raises(ConfigError, match="model"):
        load(None, [assignment])


def test_a_network_that_shrinks_images_to_nothing_is_refused_before_training():
    config = load(None, ['model.name="cnn"', "model.channels=[4, 4, 4]", "model.padding=0"])
    with pytest.raises(ConfigError, match="shrinks 8x8 images to nothing"):
        build_setup(config)


# ---------------------------------------------------------------------------------------------
# the peers' attack and defence conventions
# ---------------------------------------------------------------------------------------------


def test_centered_clipping_can_start_from_the_previous_aggregate():
    """`start = "previous"`: round t's clipping starts from round t-1's aggregated difference
    (Karimireddy et al.'s server memory), `"base"` from the zero difference."""
    from fedpdmm import aggregators
    from fedpdmm.algorithms.base import CombineContext
    from fedpdmm.build import build_algorithm

    def fedavg(start: str):
        config = load(
            None,
            [
                "data.num_clients=5",
                'algorithms=["fedavg+centered_clipping"]',
                f'algorithm.params.centered_clipping.start="{start}"',
                "algorithm.params.centered_clipping.tau=0.3",
                "algorithm.params.centered_clipping.iters=2",
            ],
        )
        return build_algorithm("fedavg+centered_clipping", config, build_setup(config).network)

    gen = torch.Generator().manual_seed(0)
    x0 = torch.zeros(4, dtype=torch.float64)
    first = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    second = torch.randn(5, 4, generator=gen, dtype=torch.float64) + 2.0
    every = torch.ones(5, dtype=torch.bool)
    rule = aggregators.get("centered_clipping", tau=0.3, iters=2)
    for start in ("base", "previous"):
        algorithm = fedavg(start)
        state = algorithm.init(x0)
        state = algorithm.combine(state, x0 + first, every, CombineContext())
        x1 = algorithm.models(state)[0]
        torch.testing.assert_close(x1, rule(first, center=torch.zeros(4, dtype=torch.float64)))
        state = algorithm.combine(state, x1 + second, every, CombineContext())
        center = x1 - x0 if start == "previous" else torch.zeros(4, dtype=torch.float64)
        want = x1 + rule(second, center=center)
        torch.testing.assert_close(algorithm.models(state)[0], want)


def test_centered_clipping_with_memory_needs_a_server():
    config = load(
        None,
        [
            'topology.name="ring"',
            'algorithms=["dsgd+centered_clipping"]',
            'algorithm.params.centered_clipping.start="previous"',
        ],
    )
    with pytest.raises(ConfigError, match="previous aggregate"):
        build_setup(config)
    with pytest.raises(ConfigError, match="start"):
        from fedpdmm import aggregators

        aggregators.get("centered_clipping", tau=1.0, start="middle")


def test_mimic_after_a_warm_up_copies_the_sender_of_largest_variance_projection():
    """Rows vary most along the first coordinate; the honest sender with the largest <h, z>
    is chosen in the warm-up round and kept afterwards, whatever the later rows."""
    from fedpdmm import attacks
    from fedpdmm.strike import MessageRows, per_receiver

    byzantine = torch.tensor([True, True, False, False, False, False])
    spread = torch.tensor([0.0, 0.0, -3.0, -1.0, 1.0, 3.5], dtype=torch.float64)
    rows = torch.zeros(6, 3, dtype=torch.float64)
    rows[:, 0] = spread
    rows[:, 1] = torch.tensor([0.0, 0.0, 0.1, -0.1, 0.1, -0.1])
    mimic = attacks.get("mimic", warmup=1)
    memory: dict = {}

    def strike_round(values, round_index):
        return per_receiver(
            mimic,
            values,
            byzantine,
            MessageRows(None, list(range(6))),
            0,
            round_index,
            combine=lambda receiver, group, v: v.mean(0),
            base=lambda receiver: torch.zeros(3, dtype=torch.float64),
            weights=lambda group: None,
            memory=memory,
        )

    out = strike_round(rows, 1)
    z = memory[0]["z"]
    target = 2 + int((rows[2:] @ z).argmax())
    assert target in (2, 5)  # an end of the spread, whichever sign z took
    assert torch.equal(out[0], rows[target]) and torch.equal(out[1], rows[target])
    later = rows.flip(0).clone()
    later[:2] = 0.0
    again = strike_round(later, 2)
    assert memory[0]["target"] == target
    assert torch.equal(again[0], later[target])  # the same sender, not the new extreme
    with pytest.raises(ConfigError, match="not both"):
        attacks.get("mimic", warmup=1, target=3)


# ---------------------------------------------------------------------------------------------
# fedpdmm reproduce peers
# ---------------------------------------------------------------------------------------------


def test_the_peers_presets_hold_their_papers_settings():
    """Every number a preset takes from a peer, read back from the built configs."""
    from fedpdmm import reproduce

    experiments = {e.name: e for e in reproduce.peers_experiments(quick=True)}
    assert set(experiments) == {
        "byzfl",
        "bucketing-iid",
        "bucketing-noniid",
        "bucketing-noniid-bucketed",
        "dumbbell",
    }
    assert all(e.seeds == 1 for e in experiments.values())
    assert all(e.seeds == 3 for e in reproduce.peers_experiments(quick=False))
    byzfl = reproduce.build_config(experiments["byzfl"])
    assert (byzfl.data.num_clients, byzfl.num_byzantine, byzfl.rounds) == (4, 1, 1000)
    assert not byzfl.data.byzantine_data and byzfl.data.normalize
    assert (byzfl.local.steps, byzfl.local.batch_size, byzfl.local.momentum) == (1, 25, 0.9)
    assert byzfl.local.lr == pytest.approx(0.1 * (1 - 0.9))  # ByzFL's lr on its EMA momentum
    assert build_setup_dim(byzfl) == 431_080  # ByzFL's cnn_mnist
    noniid = reproduce.build_config(experiments["bucketing-noniid"])
    assert (noniid.data.num_clients, noniid.num_byzantine, noniid.rounds) == (25, 5, 600)
    assert noniid.data.partition == "sorted" and noniid.local.momentum == 0.0
    assert build_setup_dim(noniid) == 1_199_882  # PyTorch's MNIST example network
    assert noniid.algorithm.params["krum"] == {"power": 4}  # the paper's code's Krum score
    bucketed = reproduce.build_config(experiments["bucketing-noniid-bucketed"])
    assert all("+bucketing+" in name for name in bucketed.algorithms)
    assert len(bucketed.algorithms) == 5
    dumbbell = reproduce.build_config(experiments["dumbbell"])
    assert dumbbell.topology.name == "two_cliques" and dumbbell.data.partition == "communities"
    assert (dumbbell.data.num_clients, dumbbell.rounds, dumbbell.local.momentum) == (20, 900, 0.9)
    assert dumbbell.data.client_samples == 960 and dumbbell.gossip.weights == "max_degree"
    for config in (noniid, dumbbell):  # the peers' `Net` and their simulators' dropout masks
        model = config.model
        assert (model.last_conv_relu, model.conv_dropout, model.dropout_masks) == (
            False,
            "channel",
            "fixed",
        )
    assert build_setup_dim(dumbbell) == 1_199_882
    for name, experiment in experiments.items():
        config = reproduce.build_config(experiment)
        attack = [a for a in config.attacks if a != "none"] or ["none"]
        for algorithm in config.algorithms:  # a published number for all but PDMM
            published = (name, algorithm, attack[0]) in reproduce.PUBLISHED
            assert published or algorithm == "pdmm", algorithm


def build_setup_dim(config) -> int:
    from fedpdmm.resources import num_parameters

    return num_parameters(
        config.model.name, (1, 28, 28), 10, config.model.widths(), config.model.conv()
    )


def test_the_peers_report_puts_fedpdmm_beside_the_published_numbers(tmp_path):
    """A tiny (digits) sweep under the bucketing experiment's name: the report averages the
    last 5 evaluations, as the paper does, and prints the published number and difference."""
    from fedpdmm import reproduce, sweep

    tiny = reproduce.Experiment("bucketing-noniid", "tiny", "mnist_bucketing", {})
    base = load(
        None,
        [
            "rounds=6",
            "eval_every=1",
            "data.num_clients=8",
            "attack.num_byzantine=2",
            'algorithms=["fedavg", "fedavg+median"]',
            'attacks=["mimic"]',
            "attack.params.mimic.warmup=1",
            'data.partition="sorted"',
        ],
    )
    plan = sweep.plan(base, {}, seeds=1)
    sweep.run_sweep(plan, tmp_path / "bucketing-noniid", workers=1, reuse=False)
    written, tables = reproduce.write_peers_report([tiny], tmp_path)
    (_title, rows), *_ = tables
    assert [row[0] for row in rows] == ["Avg", "CM"]
    assert rows[0][3] == "92.73 ± 0.32" and rows[1][3] == "64.27 ± 3.70"
    results = sweep_rows(tmp_path / "bucketing-noniid")
    last_five = [100 * float(r["test_accuracy"]) for r in results["fedavg"][-5:]]
    assert float(rows[0][2]) == pytest.approx(sum(last_five) / 5, abs=0.01)
    assert float(rows[0][4]) == pytest.approx(float(rows[0][2]) - 92.73, abs=0.011)
    text = (written / "report.md").read_text()
    assert "published %" in text and "byzantine-robust-noniid-optimizer" in text


def sweep_rows(root):
    import csv

    rows: dict[str, list[dict]] = {}
    with (root / "index.csv").open() as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(row["algorithm"], []).append(row)
    return {k: sorted(v, key=lambda r: int(r["round"])) for k, v in rows.items()}
