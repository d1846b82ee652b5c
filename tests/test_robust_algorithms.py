"""Robust rules inside the algorithms: exactness with the mean, robustness, configuration."""

from __future__ import annotations

import pytest
import torch
from quadratics import all_prox, consensus_optimum, run_graph_algorithm
from quadratics import quadratics as _quadratics

from fedpdmm import aggregators, engine, topology
from fedpdmm import config as config_module
from fedpdmm.algorithms import DSGD, FedAvg, GraphPDMM, PDMMStar
from fedpdmm.algorithms.robust import RobustCombine, build_combine, parse_algorithm
from fedpdmm.build import build_algorithm, build_attack
from fedpdmm.errors import ConfigError
from fedpdmm.setup import build_setup


def quadratics(n: int, dim: int, seed: int = 0):
    q, a = _quadratics(n, dim, seed)
    return q, a, consensus_optimum(q, a)


# trimmed_mean with f = 0 is the mean computed by the robust path (it is not `is_plain_mean`)
MEAN_BY_ROBUST_PATH = RobustCombine(aggregators.get("trimmed_mean", f=0))


def run_pdmm_star(algorithm: PDMMStar, q, a, rounds: int) -> torch.Tensor:
    state = algorithm.init(torch.zeros(q.shape[1], dtype=torch.float64))
    accepted = torch.ones(algorithm.num_clients, dtype=torch.bool)
    for _ in range(rounds):
        clients, problem = algorithm.receive(state.nodes, algorithm.downlink(state.hub))
        trained = all_prox(q, a, problem.prox_center, problem.rho)
        clients = algorithm.finish(clients, trained)
        messages = algorithm.encode(clients, trained)
        state = algorithm.combine(state._replace(nodes=clients), messages, accepted)
    return algorithm.models(state)[0]


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_robust_pdmm_with_the_mean_is_pdmm(theta: float) -> None:
    q, a, optimum = quadratics(6, 3)
    plain = run_pdmm_star(PDMMStar(6, c=1.0, theta=theta), q, a, 300)
    robust = run_pdmm_star(PDMMStar(6, c=1.0, theta=theta, robust=MEAN_BY_ROBUST_PATH), q, a, 300)
    torch.testing.assert_close(robust, plain, rtol=1e-10, atol=1e-12)
    assert (robust - optimum).norm() / optimum.norm() < 1e-8


def test_robust_fedavg_with_the_mean_is_fedavg() -> None:
    gen = torch.Generator().manual_seed(0)
    models = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    accepted = torch.ones(7, dtype=torch.bool)
    accepted[2] = False
    plain = FedAvg(7).init(torch.zeros(5, dtype=torch.float64))
    robust = FedAvg(7, robust=MEAN_BY_ROBUST_PATH)
    state = robust.init(torch.ones(5, dtype=torch.float64))
    expected = FedAvg(7).combine(plain, models, accepted).hub.x
    torch.testing.assert_close(robust.combine(state, models, accepted).hub.x, expected)


def test_robust_graph_pdmm_with_the_mean_is_graph_pdmm() -> None:
    graph = topology.build("random_geometric", 8, seed=1)
    edges = topology.edge_index(graph)
    q, a, optimum = quadratics(8, 3, seed=2)
    results = []
    for robust in (None, MEAN_BY_ROBUST_PATH):
        algorithm = GraphPDMM(edges, c=1.0, theta=0.5, robust=robust)
        results.append(run_graph_algorithm(algorithm, q, a, 400))
    torch.testing.assert_close(results[1], results[0], rtol=1e-9, atol=1e-10)
    assert (results[1] - optimum).norm(dim=1).max() / optimum.norm() < 1e-8


def test_robust_gossip_with_the_mean_averages_on_a_regular_graph() -> None:
    edges = topology.edge_index(topology.build("ring", 6, seed=0))
    algorithm = DSGD(edges, robust=MEAN_BY_ROBUST_PATH)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    state = algorithm.init(torch.zeros(2, dtype=torch.float64))
    state = state._replace(nodes=state.nodes._replace(x=x))
    accepted = torch.ones(edges.num_directed_edges, dtype=torch.bool)
    for _ in range(300):
        messages = algorithm.encode_nodes(state.nodes, state.nodes.x)
        state = algorithm.combine(state, messages, accepted)
    torch.testing.assert_close(state.nodes.x, x.mean(0).expand(6, -1), rtol=0, atol=1e-10)


def test_robust_server_ignores_a_huge_byzantine_vote() -> None:
    """2 of 7 clients send 1e6: median FedAvg stays in the honest range, the mean does not."""
    honest = torch.randn(5, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    models = torch.cat([honest, torch.full((2, 4), 1e6, dtype=torch.float64)])
    accepted = torch.ones(7, dtype=torch.bool)
    x0 = torch.zeros(4, dtype=torch.float64)
    median = FedAvg(7, robust=RobustCombine(aggregators.get("median")))
    value = median.combine(median.init(x0), models, accepted).hub.x
    assert bool(((value >= honest.min(0).values) & (value <= honest.max(0).values)).all())
    mean = FedAvg(7)
    assert mean.combine(mean.init(x0), models, accepted).hub.x.abs().min() > 1e5


def test_parse_and_build_a_chain() -> None:
    assert parse_algorithm("fedavg+nnm+krum") == ("fedavg", ["nnm", "krum"])
    assert parse_algorithm("pdmm") == ("pdmm", [])
    combine = build_combine(["nnm", "krum"], "mean", [], {}, default_f=2)
    assert combine.label == "nnm+krum"
    assert combine.rule.params["f"] == 2 and combine.pre[0].params["f"] == 2
    given = build_combine(["trimmed_mean"], "mean", [], {"trimmed_mean": {"f": 1}}, default_f=3)
    assert given.rule.params["f"] == 1
    default = build_combine([], "median", ["clip"], {}, default_f=0)
    assert default.label == "clip+median"


def load(**overrides) -> config_module.Config:
    return config_module.load(None, [f"{key}={value}" for key, value in overrides.items()])


def test_robust_rules_protect_fedavg_on_digits() -> None:
    config = load(
        algorithms='["fedavg", "fedavg+median", "fedavg+nnm+krum"]',
        attacks='["sign_flip"]',
        rounds=15,
        eval_every=15,
    )
    _, results = engine.run(config)
    final = {r.algorithm: r.rows[-1]["test_accuracy"] for r in results}
    assert final["fedavg"] < 0.3
    assert final["fedavg+median"] > 0.8
    assert final["fedavg+nnm+krum"] > 0.8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algorithms": '["fedavg+bulyan"]'}, r"bulyan needs n >= 4f \+ 3, got n=10, f=2"),
        (
            {"algorithms": '["fedavg+nosuchrule"]'},
            "unknown aggregation rule or pre-aggregation 'nosuchrule'",
        ),
        ({"algorithms": '["fedavg+median+nnm"]'}, "'nnm' is a pre-aggregation"),
        ({"algorithms": '["gossip+median"]'}, "not available for runs with a server"),
        (
            {"algorithms": '["dsgd+foolsgold"]', "topology.name": "ring"},
            "needs a server",
        ),
        (
            {"algorithms": '["pdmm+trimmed_mean"]', "topology.name": "ring"},
            "cannot run at node",
        ),
    ],
)
def test_impossible_robust_configurations_are_clear_errors(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_setup(load(**overrides))


def test_optimal_attack_plays_against_the_rule_in_use() -> None:
    config = load(algorithms='["fedavg+median"]', attacks='["optimal_alie"]')
    setup = build_setup(config)
    algorithm = build_algorithm(
        "fedavg+median", setup.config, setup.network, setup.data.clients.sizes
    )
    attack = build_attack("optimal_alie", config, algorithm.robust)
    rows = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(attack.params["aggregator"](rows), aggregators.get("median")(rows))
