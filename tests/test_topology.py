"""Specification of `fedpdmm.topology`: structure, determinism, errors, matrices, edge tables."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch

from fedpdmm import topology
from fedpdmm.errors import ConfigError

RANDOM = ("erdos_renyi", "random_geometric", "k_regular", "small_world")
# (name, num_nodes, params) covering every topology, used by the generic checks below
CASES = [
    ("star", 7, {}),
    ("complete", 6, {}),
    ("ring", 9, {}),
    ("torus", 12, {}),
    ("torus", 15, {"rows": 5}),
    ("erdos_renyi", 12, {}),
    ("erdos_renyi", 12, {"p": 0.5}),
    ("random_geometric", 10, {}),
    ("random_geometric", 20, {"radius_scale": 1.5}),
    ("k_regular", 10, {"k": 3}),
    ("small_world", 12, {"k": 4, "p": 0.3}),
    ("two_cliques", 7, {}),
]


def degrees(graph: nx.Graph) -> list[int]:
    return [graph.degree(i) for i in range(graph.number_of_nodes())]


def test_every_topology_has_a_case_and_a_description() -> None:
    assert {name for name, _, _ in CASES} == set(topology.names())
    assert [name for name, _, _ in topology.describe()] == list(topology.names())


@pytest.mark.parametrize(("name", "n", "params"), CASES)
def test_graph_is_connected_on_nodes_0_to_n_minus_1(name: str, n: int, params: dict) -> None:
    graph = topology.build(name, n, seed=3, **params)
    assert sorted(graph.nodes) == list(range(n))
    assert nx.is_connected(graph)
    assert not graph.is_directed()
    assert nx.number_of_selfloops(graph) == 0


@pytest.mark.parametrize(("name", "n", "params"), CASES)
def test_same_seed_gives_the_same_graph(name: str, n: int, params: dict) -> None:
    first = topology.build(name, n, seed=11, **params)
    second = topology.build(name, n, seed=11, **params)
    assert topology.edge_list(first) == topology.edge_list(second)


@pytest.mark.parametrize("name", RANDOM)
def test_different_seeds_give_different_random_graphs(name: str) -> None:
    graphs = {tuple(topology.edge_list(topology.build(name, 16, seed=s))) for s in range(3)}
    assert len(graphs) == 3


@pytest.mark.parametrize("name", ["star", "complete", "ring", "torus", "two_cliques"])
def test_deterministic_topologies_ignore_the_seed(name: str) -> None:
    assert topology.edge_list(topology.build(name, 16, seed=0)) == topology.edge_list(
        topology.build(name, 16, seed=1)
    )


@pytest.mark.parametrize(("name", "n", "params"), [c for c in CASES if c[0] in RANDOM])
def test_random_graph_uses_only_the_given_seed(name: str, n: int, params: dict) -> None:
    state = torch.random.get_rng_state()
    topology.build(name, n, seed=5, **params)
    assert torch.equal(state, torch.random.get_rng_state())


def test_star_hub_is_node_0() -> None:
    assert degrees(topology.build("star", 8, seed=0)) == [7] + [1] * 7


def test_complete_has_every_pair() -> None:
    graph = topology.build("complete", 6, seed=0)
    assert degrees(graph) == [5] * 6
    assert graph.number_of_edges() == 15


def test_ring_is_the_cycle_in_node_order() -> None:
    assert topology.edge_list(topology.build("ring", 5, seed=0)) == [
        (0, 1),
        (0, 4),
        (1, 2),
        (2, 3),
        (3, 4),
    ]


@pytest.mark.parametrize(
    ("n", "params", "shape"),
    [(12, {}, (3, 4)), (16, {}, (4, 4)), (36, {}, (6, 6)), (15, {"cols": 3}, (5, 3))],
)
def test_torus_is_a_wrapped_grid_with_degree_4(n: int, params: dict, shape: tuple) -> None:
    rows, cols = shape
    graph = topology.build("torus", n, seed=0, **params)
    assert degrees(graph) == [4] * n
    for r in range(rows):
        for c in range(cols):
            expected = {
                ((r + 1) % rows) * cols + c,
                ((r - 1) % rows) * cols + c,
                r * cols + (c + 1) % cols,
                r * cols + (c - 1) % cols,
            }
            assert set(graph.neighbors(r * cols + c)) == expected


@pytest.mark.parametrize(("n", "k"), [(10, 3), (9, 4), (12, 2), (7, 6)])
def test_k_regular_has_every_degree_k(n: int, k: int) -> None:
    assert degrees(topology.build("k_regular", n, seed=1, k=k)) == [k] * n


def test_k_regular_default_degree() -> None:
    assert degrees(topology.build("k_regular", 10, seed=1)) == [4] * 10
    assert degrees(topology.build("k_regular", 4, seed=1)) == [3] * 4


@pytest.mark.parametrize("n", [4, 7, 10])
def test_two_cliques_are_joined_by_one_bridge(n: int) -> None:
    half = n // 2
    graph = topology.build("two_cliques", n, seed=0)
    left, right = range(half), range(half, n)
    assert graph.subgraph(left).number_of_edges() == half * (half - 1) // 2
    assert graph.subgraph(right).number_of_edges() == (n - half) * (n - half - 1) // 2
    crossing = [(i, j) for i, j in topology.edge_list(graph) if i < half <= j]
    assert crossing == [(half - 1, half)]
    if n >= 6:  # cliques of >= 3 nodes have no bridges of their own
        assert [tuple(sorted(e)) for e in nx.bridges(graph)] == [(half - 1, half)]


def test_random_geometric_joins_exactly_the_close_pairs() -> None:
    n = 20
    graph = topology.build("random_geometric", n, seed=2)
    radius = math.sqrt(math.log(n) / n)
    pos = torch.tensor([graph.nodes[i]["pos"] for i in range(n)], dtype=torch.float64)
    close = torch.cdist(pos, pos) <= radius
    expected = [(i, j) for i in range(n) for j in range(i + 1, n) if close[i, j]]
    assert topology.edge_list(graph) == expected
    assert ((pos >= 0) & (pos <= 1)).all()


def test_random_geometric_radius_overrides_the_scaled_default() -> None:
    graph = topology.build("random_geometric", 10, seed=0, radius=1.5)
    assert graph.number_of_edges() == 45  # 1.5 > sqrt(2), the diameter of the unit square


def test_erdos_renyi_with_p_1_is_complete() -> None:
    assert topology.build("erdos_renyi", 9, seed=0, p=1.0).number_of_edges() == 36


def test_small_world_keeps_the_lattice_edge_count() -> None:
    for seed in range(3):
        assert topology.build("small_world", 12, seed=seed, k=4, p=0.5).number_of_edges() == 24
    lattice = topology.build("small_world", 8, seed=0, k=2, p=0.0)
    assert topology.edge_list(lattice) == topology.edge_list(nx.cycle_graph(8))


def test_describe_lists_exactly_the_keys_build_accepts() -> None:
    for name, params, description in topology.describe():
        assert description
        topology.build(name, 16, seed=0, **dict.fromkeys(params))
        with pytest.raises(ConfigError, match=rf"topology\.bogus\b.*{name}"):
            topology.build(name, 16, seed=0, bogus=1)


@pytest.mark.parametrize(
    ("name", "n", "params", "message"),
    [
        ("hypercube", 8, {}, r"topology\.name 'hypercube'.*ring"),
        ("ring", 8, {"k": 2}, r"topology\.k .*valid keys: none"),
        ("ring", 2, {}, r"num_nodes >= 3, got 2"),
        ("star", 1, {}, r"num_nodes >= 2, got 1"),
        ("two_cliques", 3, {}, r"num_nodes >= 4"),
        ("complete", 4.0, {}, r"num_nodes must be an integer"),
        ("torus", 14, {}, r"torus.*rows \* cols.*14 has no such"),
        ("torus", 7, {}, r"num_nodes >= 9"),
        ("torus", 12, {"rows": 5}, r"topology\.rows"),
        ("torus", 12, {"rows": 2, "cols": 6}, r"topology\.rows must be in \[3, 12\]"),
        ("torus", 12, {"rows": 3, "cols": 3}, r"rows \* cols == num_nodes"),
        ("erdos_renyi", 8, {"p": 0.0}, r"topology\.p must be in \(0\.0, 1\.0\]"),
        ("erdos_renyi", 8, {"p": 1.5}, r"topology\.p"),
        ("erdos_renyi", 8, {"p": "high"}, r"topology\.p must be a finite number"),
        ("erdos_renyi", 8, {"p": float("nan")}, r"topology\.p"),
        ("random_geometric", 8, {"radius": -0.1}, r"topology\.radius "),
        ("random_geometric", 8, {"radius_scale": 0}, r"topology\.radius_scale"),
        ("random_geometric", 8, {"radius": 0.5, "radius_scale": 2.0}, r"set one of them"),
        ("k_regular", 8, {"k": 8}, r"topology\.k must be in \[2, 7\]"),
        ("k_regular", 8, {"k": 1}, r"topology\.k"),
        ("k_regular", 9, {"k": 3}, r"topology\.k.*even"),
        ("k_regular", 9, {"k": True}, r"topology\.k must be an integer"),
        ("small_world", 10, {"k": 3}, r"topology\.k must be even"),
        ("small_world", 10, {"p": 1.2}, r"topology\.p must be in \[0\.0, 1\.0\]"),
    ],
)
def test_invalid_input_names_the_key(name: str, n: int, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        topology.build(name, n, seed=0, **params)


def test_never_connected_random_graph_is_reported_with_its_params() -> None:
    with pytest.raises(ConfigError, match=r"erdos_renyi.*p=0\.01.*100 draws.*larger topology\.p"):
        topology.build("erdos_renyi", 20, seed=0, p=0.01)
    with pytest.raises(ConfigError, match=r"random_geometric.*radius=0\.01.*topology\.radius"):
        topology.build("random_geometric", 20, seed=0, radius=0.01)


def test_seed_must_be_an_integer() -> None:
    with pytest.raises(ConfigError, match="seed must be an integer"):
        topology.build("ring", 5, seed=1.5)


@pytest.mark.parametrize(("name", "n", "params"), CASES)
def test_metropolis_weights_are_symmetric_doubly_stochastic(
    name: str, n: int, params: dict
) -> None:
    graph = topology.build(name, n, seed=0, **params)
    w = topology.metropolis_weights(graph)
    assert w.dtype == torch.float64 and w.shape == (n, n)
    assert torch.equal(w, w.T)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(n, dtype=torch.float64))
    assert (w >= 0).all()
    off_diagonal = (w > 0) & ~torch.eye(n, dtype=torch.bool)
    assert {(i, j) for i, j in off_diagonal.nonzero().tolist() if i < j} == set(
        topology.edge_list(graph)
    )


def test_metropolis_weights_of_a_star() -> None:
    w = topology.metropolis_weights(topology.build("star", 4, seed=0))
    expected = torch.tensor(
        [[1, 1, 1, 1], [1, 3, 0, 0], [1, 0, 3, 0], [1, 0, 0, 3]], dtype=torch.float64
    )
    torch.testing.assert_close(w, expected / 4, rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [5, 6, 9])
def test_spectral_gap_of_a_ring(n: int) -> None:
    # W = (I + shift + shift^T) / 3, eigenvalues (1 + 2 cos(2 pi k / n)) / 3
    eigenvalues = [(1 + 2 * math.cos(2 * math.pi * k / n)) / 3 for k in range(1, n)]
    expected = 1 - max(abs(e) for e in eigenvalues)
    assert topology.spectral_gap(topology.build("ring", n, seed=0)) == pytest.approx(expected)


def test_spectral_gap_extremes() -> None:
    assert topology.spectral_gap(nx.complete_graph(7)) == pytest.approx(1.0)
    assert topology.spectral_gap(nx.Graph([(0, 1), (2, 3)])) == pytest.approx(0.0, abs=1e-12)
    gaps = [topology.spectral_gap(topology.build("ring", n, seed=0)) for n in (6, 12, 24)]
    assert gaps[0] > gaps[1] > gaps[2] > 0


def test_algebraic_connectivity() -> None:
    assert topology.algebraic_connectivity(nx.cycle_graph(8)) == pytest.approx(
        2 - 2 * math.cos(2 * math.pi / 8)
    )
    assert topology.algebraic_connectivity(nx.complete_graph(6)) == pytest.approx(6.0)
    assert topology.algebraic_connectivity(nx.Graph([(0, 1), (2, 3)])) == pytest.approx(
        0.0, abs=1e-12
    )


def test_edge_list_is_sorted_pairs() -> None:
    graph = nx.Graph([(3, 1), (2, 0), (1, 0), (3, 2)])
    assert topology.edge_list(graph) == [(0, 1), (0, 2), (1, 3), (2, 3)]


def test_isolated_honest_nodes() -> None:
    star = topology.build("star", 5, seed=0)
    hub_byzantine = torch.tensor([True, False, False, False, False])
    assert topology.isolated_honest(star, hub_byzantine) == [1, 2, 3, 4]
    assert topology.isolated_honest(star, ~hub_byzantine) == [0]
    ring = topology.build("ring", 6, seed=0)
    assert topology.isolated_honest(ring, torch.tensor([0, 1, 0, 1, 0, 0], dtype=torch.bool)) == [2]
    assert topology.isolated_honest(ring, torch.zeros(6, dtype=torch.bool)) == []
    with pytest.raises(ValueError, match=r"bool tensor of shape \[6\]"):
        topology.isolated_honest(ring, torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"bool tensor"):
        topology.isolated_honest(ring, torch.zeros(6))


@pytest.mark.parametrize(("name", "n", "params"), CASES)
def test_edge_index_invariants(name: str, n: int, params: dict) -> None:
    graph = topology.build(name, n, seed=0, **params)
    edges = topology.edge_index(graph)
    num = 2 * graph.number_of_edges()
    assert edges.num_nodes == n and edges.num_directed_edges == num
    assert edges.src.dtype == edges.dst.dtype == edges.reverse.dtype == torch.int64
    pairs = list(zip(edges.src.tolist(), edges.dst.tolist(), strict=True))
    assert pairs == sorted(pairs) and len(set(pairs)) == num
    assert {(min(p), max(p)) for p in pairs} == set(topology.edge_list(graph))
    assert torch.equal(edges.reverse[edges.reverse], torch.arange(num))
    assert torch.equal(edges.src[edges.reverse], edges.dst)
    assert torch.equal(edges.dst[edges.reverse], edges.src)
    assert torch.equal(edges.sign[edges.reverse], -edges.sign)
    assert torch.equal(edges.sign, torch.where(edges.src < edges.dst, 1.0, -1.0).double())
    assert edges.degree.tolist() == degrees(graph)


def test_edge_index_rejects_graphs_it_cannot_index() -> None:
    with pytest.raises(ValueError, match=r"nodes must be 0\.\.1"):
        topology.edge_index(nx.Graph([(1, 2)]))
    with pytest.raises(ValueError, match="self-loops"):
        topology.edge_index(nx.Graph([(0, 1), (1, 1)]))
    with pytest.raises(ValueError, match="undirected"):
        topology.edge_index(nx.DiGraph([(0, 1)]))
