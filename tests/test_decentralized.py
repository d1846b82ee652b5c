"""Peer-to-peer algorithms: PDMM and gossip averaging on graphs, with Byzantine nodes."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from quadratics import all_prox, consensus_optimum, run_graph_algorithm
from quadratics import quadratics as _quadratics

from fedpdmm import config as config_module
from fedpdmm import engine, pdmm, topology
from fedpdmm.algorithms import DSGD, GraphPDMM, RoundState
from fedpdmm.algorithms.base import CombineContext
from fedpdmm.attacks import get as get_attack
from fedpdmm.build import build_algorithm
from fedpdmm.errors import ConfigError
from fedpdmm.results import TIMING_COLUMNS
from fedpdmm.rounds import corrupt
from fedpdmm.setup import build_setup


def quadratics(n: int, dim: int, seed: int = 0):
    q, a = _quadratics(n, dim, seed)
    return q, a, consensus_optimum(q, a)


@pytest.mark.parametrize("theta", [1.0, 0.5])
@pytest.mark.parametrize("name", ["ring", "random_geometric", "two_cliques", "star"])
def test_graph_pdmm_protocol_reaches_the_consensus_optimum(name: str, theta: float) -> None:
    graph = topology.build(name, 8, seed=3)
    edges = topology.edge_index(graph)
    q, a, optimum = quadratics(8, 4)
    algorithm = GraphPDMM(edges, c=1.0, theta=theta)
    models = run_graph_algorithm(algorithm, q, a, 800)
    error = (models - optimum).norm(dim=1).max() / optimum.norm()
    assert error < 1e-8


def test_graph_pdmm_protocol_equals_the_generic_solver() -> None:
    graph = topology.build("erdos_renyi", 7, seed=1)
    edges = topology.edge_index(graph)
    q, a, _ = quadratics(7, 3, seed=5)
    algorithm = GraphPDMM(edges, c=0.7, theta=0.5)
    models = run_graph_algorithm(algorithm, q, a, 25)

    def prox(i, v, rho):
        return all_prox(
            q[i : i + 1], a[i : i + 1], v.unsqueeze(0), torch.tensor([rho], dtype=torch.float64)
        )[0]

    reference = pdmm.solve(prox, graph, 3, c=0.7, theta=0.5, rounds=25)
    torch.testing.assert_close(models, reference, rtol=1e-12, atol=1e-12)


def test_encode_per_edge_equals_encode_per_node() -> None:
    edges = topology.edge_index(topology.build("ring", 5, seed=0))
    algorithm = GraphPDMM(edges, c=0.3, theta=1.0)
    gen = torch.Generator().manual_seed(0)
    nodes = algorithm.init(torch.zeros(2, dtype=torch.float64)).nodes
    nodes = nodes._replace(z=torch.randn(edges.num_directed_edges, 2, generator=gen).double())
    models = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    per_edge = algorithm.encode(nodes, models.index_select(0, edges.src))
    torch.testing.assert_close(per_edge, algorithm.encode_nodes(nodes, models))


def test_rejected_pdmm_message_leaves_the_receivers_dual_unchanged() -> None:
    edges = topology.edge_index(topology.build("ring", 4, seed=0))
    algorithm = GraphPDMM(edges, c=0.5, theta=1.0)
    state = algorithm.init(torch.zeros(2, dtype=torch.float64))
    messages = torch.ones(edges.num_directed_edges, 2, dtype=torch.float64)
    accepted = torch.ones(edges.num_directed_edges, dtype=torch.bool)
    accepted[0] = False  # edge src[0] -> dst[0] lost: dual z(dst|src) keeps its value
    new = algorithm.combine(state, messages, accepted).nodes
    receiver_row = int(edges.reverse[0])
    assert torch.equal(new.z[receiver_row], state.nodes.z[receiver_row])
    others = torch.arange(edges.num_directed_edges) != receiver_row
    assert torch.equal(new.z[others], messages[edges.reverse][others])


def with_models(state: RoundState, x: torch.Tensor) -> RoundState:
    """`state` with the node models replaced by `x` `[n, d]`."""
    return state._replace(nodes=state.nodes._replace(x=x))


@pytest.mark.parametrize("name", ["ring", "torus", "random_geometric", "two_cliques"])
def test_gossip_reaches_the_average(name: str) -> None:
    n = 9 if name == "torus" else 8
    edges = topology.edge_index(topology.build(name, n, seed=2))
    algorithm = DSGD(edges)
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    state = with_models(algorithm.init(torch.zeros(3, dtype=torch.float64)), x)
    accepted = torch.ones(edges.num_directed_edges, dtype=torch.bool)
    for _ in range(3000):
        messages = algorithm.encode_nodes(state.nodes, state.nodes.x)
        state = algorithm.combine(state, messages, accepted)
    assert torch.allclose(state.nodes.x, x.mean(0).expand(n, -1), atol=1e-10)


def test_gossip_step_equals_the_metropolis_matrix() -> None:
    graph = topology.build("small_world", 10, seed=4)
    edges = topology.edge_index(graph)
    algorithm = DSGD(edges)
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    state = with_models(algorithm.init(torch.zeros(4, dtype=torch.float64)), x)
    accepted = torch.ones(edges.num_directed_edges, dtype=torch.bool)
    mixed = algorithm.combine(state, algorithm.encode_nodes(state.nodes, x), accepted).nodes.x
    torch.testing.assert_close(mixed, topology.metropolis_weights(graph) @ x)


def test_dsgd_with_local_gradient_steps_reaches_the_average_optimum() -> None:
    """f_i = 0.5 ||x - a_i||^2: decentralized SGD with decaying steps converges to mean(a_i)."""
    n = 8
    edges = topology.edge_index(topology.build("ring", n, seed=0))
    algorithm = DSGD(edges)
    a = torch.randn(n, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    state = algorithm.init(torch.zeros(2, dtype=torch.float64))
    accepted = torch.ones(edges.num_directed_edges, dtype=torch.bool)
    for t in range(20000):
        lr = 1.0 / (t + 10)
        x = state.nodes.x
        trained = x - lr * (x - a)
        nodes = algorithm.finish(state.nodes, trained)
        messages = algorithm.encode_nodes(nodes, trained)
        state = algorithm.combine(state._replace(nodes=nodes), messages, accepted)
    assert (state.nodes.x - a.mean(0)).norm(dim=1).max() < 2e-3


def test_rejected_gossip_message_weight_stays_with_the_receiver() -> None:
    edges = topology.edge_index(nx.path_graph(3))
    algorithm = DSGD(edges)
    x = torch.tensor([[0.0], [3.0], [6.0]], dtype=torch.float64)
    state = with_models(algorithm.init(torch.zeros(1, dtype=torch.float64)), x)
    messages = algorithm.encode_nodes(state.nodes, x)
    messages[0] = float("nan")  # 0 -> 1 lost
    accepted = torch.isfinite(messages).all(1)
    mixed = algorithm.combine(state, messages, accepted).nodes.x
    # node 1 (degree 2) weights 1/3 for each neighbour; the lost one stays on itself
    assert mixed[1, 0].item() == pytest.approx(3.0 * 2 / 3 + 6.0 / 3)
    assert torch.isfinite(mixed).all()


def digits_config(**overrides) -> config_module.Config:
    sets = [f"{key}={value}" for key, value in overrides.items()]
    return config_module.load(None, sets)


def test_per_edge_attacks_change_only_messages_from_byzantine_senders() -> None:
    config = digits_config(**{"topology.name": "ring", "rounds": 1})
    setup = build_setup(config)
    edges = setup.network.edges
    rows = torch.randn(edges.num_directed_edges, 6, generator=torch.Generator().manual_seed(0))
    byzantine_edges = setup.network.byzantine.index_select(0, edges.src)
    attacked = corrupt(
        get_attack("gaussian", sigma=1.0), rows, byzantine_edges, 0, 1, setup.network.keys
    )
    assert torch.equal(attacked[~byzantine_edges], rows[~byzantine_edges])
    assert not torch.equal(attacked[byzantine_edges], rows[byzantine_edges])
    noise = attacked - rows
    byzantine_node = int(setup.network.byzantine.nonzero()[0])
    own_edges = (edges.src == byzantine_node).nonzero().flatten()
    assert not torch.allclose(noise[own_edges[0]], noise[own_edges[1]])


@pytest.mark.parametrize("graph", ["ring", "random_geometric"])
def test_without_attack_both_reach_high_accuracy_on_digits(graph: str) -> None:
    config = digits_config(
        **{"topology.name": graph, "rounds": 30, "eval_every": 30, "attacks": '["none"]'}
    )
    _, results = engine.run(config)
    for result in results:
        final = result.rows[-1]
        assert final["honest_accuracy_mean"] > 0.85, (result.algorithm, final)
        assert final["honest_accuracy_min"] > 0.8, (result.algorithm, final)


def test_decentralized_runs_are_deterministic() -> None:
    config = digits_config(**{"topology.name": "erdos_renyi", "rounds": 4, "eval_every": 2})
    _, first = engine.run(config)
    _, second = engine.run(config)
    for a, b in zip(first, second, strict=True):
        for row_a, row_b in zip(a.rows, b.rows, strict=True):
            row_a, row_b = dict(row_a), dict(row_b)
            for column in TIMING_COLUMNS:
                row_a.pop(column), row_b.pop(column)
            assert row_a == row_b


def test_graph_with_no_honest_node_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no honest client"):
        digits_config(**{"topology.name": "ring", "data.num_clients": 4, "attack.num_byzantine": 4})


def test_honest_node_surrounded_by_byzantine_nodes_warns() -> None:
    # seed 0 picks clients 0 and 8 of 10 as Byzantine: on a ring, node 9 sits between them
    config = digits_config(**{"topology.name": "ring"})
    with pytest.warns(UserWarning, match=r"honest node\(s\) \[9\] have only Byzantine"):
        setup = build_setup(config)
    assert any("[9]" in note for note in setup.network.warnings)


def test_server_algorithms_are_refused_on_a_graph() -> None:
    config = digits_config(**{"topology.name": "ring", "algorithms": '["fedavg"]'})
    with pytest.raises(ConfigError, match="not available for peer-to-peer"):
        build_setup(config)


def test_unknown_topology_parameter_is_an_error() -> None:
    config = digits_config(**{"topology.name": "ring", "topology.p": 0.5})
    with pytest.raises(ConfigError, match=r"topology\.p"):
        build_setup(config)


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_a_combine_that_reuses_the_state_gives_the_fresh_result(theta: float) -> None:
    config = digits_config(**{"topology.name": "ring", "pdmm.theta": theta})
    setup = build_setup(config)
    algorithm = build_algorithm("pdmm", config, setup.network, setup.data.clients.sizes)
    state = algorithm.init(setup.x0)
    gen = torch.Generator().manual_seed(3)
    models = setup.x0 + 0.1 * torch.randn(setup.network.num_nodes, setup.model.dim, generator=gen)
    state = state._replace(nodes=state.nodes._replace(z=torch.randn_like(state.nodes.z)))
    messages = algorithm.encode_nodes(state.nodes, models)
    accepted = torch.ones(len(messages), dtype=torch.bool)
    fresh = algorithm.combine(state, messages, accepted)
    kept_z = state.nodes.z.clone()
    reused = algorithm.combine(state, messages, accepted, CombineContext(reuse_state=True))
    torch.testing.assert_close(reused.nodes.z, fresh.nodes.z, rtol=0, atol=0)
    assert reused.nodes.z.data_ptr() == state.nodes.z.data_ptr()  # written in place
    assert not torch.equal(fresh.nodes.z, kept_z)
    assert reused.nodes.spare is messages  # the next round's message buffer
    again = algorithm.encode_nodes(reused.nodes, models)
    assert again.data_ptr() == messages.data_ptr()
    torch.testing.assert_close(again, algorithm.encode_nodes(fresh.nodes, models), rtol=0, atol=0)
