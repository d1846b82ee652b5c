"""Specification of `fedpdmm.pdmm`: exact consensus on quadratics, and the vectorized round
equals a per-edge loop written straight from the PDMM update equations."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from quadratics import consensus_optimum, quadratic_prox, quadratics

from fedpdmm import pdmm, topology
from fedpdmm.errors import ConfigError, NonFiniteError
from fedpdmm.seeding import generator

DIM = 5


# ---------------------------------------------------------------------------------------------
# Quadratic losses f_i(x) = 0.5 (x - a_i)^T Q_i (x - a_i) with closed-form prox and optimum
# ---------------------------------------------------------------------------------------------


def batched_prox(q: torch.Tensor, a: torch.Tensor):
    """`prox_all(v [n, d], rho [n])` for all quadratics at once."""
    eye = torch.eye(q.shape[1], dtype=q.dtype)

    def prox_all(v: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        rhs = (q @ a.unsqueeze(2)).squeeze(2) + rho.unsqueeze(1) * v
        return torch.linalg.solve(q + rho[:, None, None] * eye, rhs)

    return prox_all


def relative_error(x: torch.Tensor, optimum: torch.Tensor) -> float:
    """max_i ||x_i - x*|| / ||x*||."""
    return ((x - optimum).norm(dim=1).max() / optimum.norm()).item()


GRAPHS = {
    "star": lambda: topology.build("star", 8, seed=0),
    "ring": lambda: topology.build("ring", 8, seed=0),
    "random_geometric": lambda: topology.build("random_geometric", 10, seed=0),
    "two_cliques": lambda: topology.build("two_cliques", 8, seed=0),
    "complete": lambda: topology.build("complete", 6, seed=0),
    "erdos_renyi": lambda: topology.build("erdos_renyi", 10, seed=1),
}


# ---------------------------------------------------------------------------------------------
# Exactness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [1.0, 0.5])
@pytest.mark.parametrize("graph_name", list(GRAPHS))
def test_solve_reaches_the_centralized_optimum(graph_name: str, theta: float) -> None:
    graph = GRAPHS[graph_name]()
    q, a = quadratics(graph.number_of_nodes(), DIM, seed=7)
    optimum = consensus_optimum(q, a)

    def prox(i: int, v: torch.Tensor, rho: float) -> torch.Tensor:
        return quadratic_prox(q, a, i, v, rho)

    # c = 1 reaches 1e-10 within about 220 rounds on each of these graphs; 600 leaves a margin
    x = pdmm.solve(prox, graph, DIM, c=1.0, theta=theta, rounds=600)
    assert x.dtype == torch.float64 and x.shape == (graph.number_of_nodes(), DIM)
    assert relative_error(x, optimum) < 1e-8


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_star_with_a_lossless_server_reaches_the_clients_optimum(theta: float) -> None:
    # the federated case: the hub holds f_0 = 0, whose prox is the identity
    graph = topology.build("star", 7, seed=0)
    q, a = quadratics(7, DIM, seed=3)
    optimum = consensus_optimum(q[1:], a[1:])

    def prox(i: int, v: torch.Tensor, rho: float) -> torch.Tensor:
        return v.clone() if i == 0 else quadratic_prox(q, a, i, v, rho)

    x = pdmm.solve(prox, graph, DIM, c=1.0, theta=theta, rounds=600)
    assert relative_error(x, optimum) < 1e-8


def test_first_round_is_each_nodes_own_prox_at_zero() -> None:
    graph = topology.build("ring", 6, seed=0)
    q, a = quadratics(6, DIM, seed=1)

    def prox(i: int, v: torch.Tensor, rho: float) -> torch.Tensor:
        return quadratic_prox(q, a, i, v, rho)

    x = pdmm.solve(prox, graph, DIM, c=1.0, theta=1.0, rounds=1)
    expected = torch.stack([quadratic_prox(q, a, i, torch.zeros(DIM), 2.0) for i in range(6)])
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-14)


def test_step_with_batched_prox_matches_solve() -> None:
    graph = topology.build("random_geometric", 10, seed=0)
    q, a = quadratics(10, DIM, seed=2)
    edges = topology.edge_index(graph)
    state = pdmm.init(edges, DIM, torch.float64)
    for _ in range(40):
        state = pdmm.step(state, batched_prox(q, a), edges, 0.7, 0.5)
    x = pdmm.solve(
        lambda i, v, rho: quadratic_prox(q, a, i, v, rho), graph, DIM, c=0.7, theta=0.5, rounds=40
    )
    torch.testing.assert_close(state.x, x, rtol=1e-12, atol=1e-12)


def test_estimates_keep_the_dtype_of_the_prox() -> None:
    graph = topology.build("complete", 4, seed=0)
    target = torch.arange(4.0)  # f_i(x) = 0.5 ||x - t_i||^2, prox (t_i + rho v) / (1 + rho)

    def prox(i: int, v: torch.Tensor, rho: float) -> torch.Tensor:
        return ((target[i] + rho * v) / (1 + rho)).to(torch.float32).reshape(1)

    x = pdmm.solve(prox, graph, 1, c=1.0, theta=1.0, rounds=200)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, torch.full((4, 1), 1.5), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Vectorized round == per-edge loop
# ---------------------------------------------------------------------------------------------


def naive_round(z: dict, prox, graph: nx.Graph, c: float, theta: float):
    """One PDMM round from the update equations, node by node and edge by edge, in float64."""
    n = graph.number_of_nodes()
    x = {}
    for i in range(n):
        d_i = graph.degree(i)
        total = sum((1.0 if i < j else -1.0) * z[(i, j)] for j in graph.neighbors(i))
        x[i] = prox(i, -total / (c * d_i), c * d_i)
    y = {(i, j): z[(i, j)] + 2 * c * (1.0 if i < j else -1.0) * x[i] for (i, j) in z}
    z_new = {(j, i): (1 - theta) * z[(j, i)] + theta * y[(i, j)] for (i, j) in z}
    return x, z_new


@pytest.mark.parametrize("theta", [1.0, 0.5, 0.3])
def test_vectorized_step_equals_the_per_edge_loop(theta: float) -> None:
    graph = topology.build("erdos_renyi", 7, seed=4, p=0.5)
    n, c = 7, 0.8
    q, a = quadratics(n, DIM, seed=5)
    edges = topology.edge_index(graph)
    z0 = torch.randn(
        edges.num_directed_edges, DIM, generator=generator(0, "z"), dtype=torch.float64
    )
    state = pdmm.PDMMState(torch.zeros(n, DIM, dtype=torch.float64), z0)
    pairs = list(zip(edges.src.tolist(), edges.dst.tolist(), strict=True))
    z = {pair: z0[e] for e, pair in enumerate(pairs)}
    for _ in range(4):
        state = pdmm.step(state, batched_prox(q, a), edges, c, theta)
        x, z = naive_round(z, lambda i, v, rho: quadratic_prox(q, a, i, v, rho), graph, c, theta)
        naive_x = torch.stack([x[i] for i in range(n)])
        naive_z = torch.stack([z[pair] for pair in pairs])
        torch.testing.assert_close(state.x, naive_x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state.z, naive_z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_chunked_messages_and_in_place_receive_equal_the_whole_tensor_formulas(
    theta: float, monkeypatch
) -> None:
    graph = topology.build("erdos_renyi", 9, seed=2, p=0.5)
    edges = topology.edge_index(graph)
    gen = generator(0, "chunks")
    z = torch.randn(edges.num_directed_edges, 5, generator=gen, dtype=torch.float64)
    x = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    monkeypatch.setattr(pdmm, "MESSAGE_CHUNK_BYTES", 3 * 5 * 8)  # three rows per chunk
    y = pdmm.messages(z, x, edges, 0.7)
    expected = z + 2 * 0.7 * edges.sign.double().unsqueeze(1) * x[edges.src]
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-14)
    fresh = pdmm.receive(z, y, edges, theta)
    in_place = pdmm.receive_into(z.clone(), y, edges, theta)
    torch.testing.assert_close(in_place, fresh, rtol=0, atol=1e-15)


def test_building_blocks_on_a_path() -> None:
    # path 0 - 1 - 2; directed edges sorted: 0->1, 1->0, 1->2, 2->1
    edges = topology.edge_index(nx.path_graph(3))
    z = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    v, rho = pdmm.prox_centers(z, edges, c=0.5)
    torch.testing.assert_close(rho, torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64))
    # v_0 = -(+z01)/0.5, v_1 = -(-z10 + z12)/1, v_2 = -(-z21)/0.5
    torch.testing.assert_close(v, torch.tensor([[-2.0], [-1.0], [8.0]], dtype=torch.float64))
    x = torch.tensor([[10.0], [20.0], [30.0]], dtype=torch.float64)
    y = pdmm.messages(z, x, edges, c=0.5)
    torch.testing.assert_close(y, torch.tensor([[11.0], [-18.0], [23.0], [-26.0]]).double())
    # z_new(j|i) = 0.75 z(j|i) + 0.25 y(i|j)
    z_new = pdmm.receive(z, y, edges, theta=0.25)
    expected = 0.75 * z + 0.25 * torch.tensor([[-18.0], [11.0], [-26.0], [23.0]]).double()
    torch.testing.assert_close(z_new, expected)


def test_init_is_zero() -> None:
    edges = topology.edge_index(topology.build("ring", 5, seed=0))
    state = pdmm.init(edges, 3, torch.float32)
    assert state.x.shape == (5, 3) and state.z.shape == (10, 3)
    assert state.x.dtype == state.z.dtype == torch.float32
    assert not state.x.any() and not state.z.any()


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def identity_prox(i: int, v: torch.Tensor, rho: float) -> torch.Tensor:
    return v


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"c": 0.0}, r"c must be a finite number > 0.*got 0\.0"),
        ({"c": -1.0}, r"c must be"),
        ({"c": float("inf")}, r"c must be"),
        ({"theta": 0.0}, r"theta must be in \(0, 1\].*got 0\.0"),
        ({"theta": 1.5}, r"theta must be in \(0, 1\]"),
        ({"rounds": 0}, r"rounds must be an integer >= 1, got 0"),
        ({"rounds": 2.5}, r"rounds must be an integer"),
        ({"dim": 0}, r"dim must be an integer >= 1"),
    ],
)
def test_solve_rejects_invalid_hyperparameters(kwargs: dict, message: str) -> None:
    args = {"dim": 2, "c": 1.0, "theta": 1.0, "rounds": 3} | kwargs
    dim = args.pop("dim")
    with pytest.raises(ConfigError, match=message):
        pdmm.solve(identity_prox, nx.path_graph(3), dim, **args)


def test_solve_rejects_disconnected_graphs() -> None:
    with pytest.raises(ConfigError, match=r"connected graph.*2 component"):
        pdmm.solve(identity_prox, nx.Graph([(0, 1), (2, 3)]), 2, c=1.0, theta=1.0, rounds=3)
    single = nx.Graph()
    single.add_node(0)
    with pytest.raises(ConfigError, match=r">= 2 nodes, got 1"):
        pdmm.solve(identity_prox, single, 2, c=1.0, theta=1.0, rounds=3)


def test_solve_checks_the_prox_output() -> None:
    with pytest.raises(ValueError, match=r"prox for node 0 must return a tensor of shape \[2\]"):
        pdmm.solve(lambda i, v, rho: v[:1], nx.path_graph(3), 2, c=1.0, theta=1.0, rounds=3)
    with pytest.raises(NonFiniteError, match="not finite after 3 rounds"):
        pdmm.solve(lambda i, v, rho: v + torch.inf, nx.path_graph(3), 2, c=1.0, theta=1.0, rounds=3)
