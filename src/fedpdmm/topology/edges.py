"""Matrices and edge tables of a graph: Metropolis weights, spectral gap, the edge index, its
communities."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch


def _num_nodes(graph: nx.Graph) -> int:
    """n, after checking that `graph` is undirected, loop-free and labelled 0..n-1."""
    if graph.is_directed() or graph.is_multigraph():
        raise ValueError(f"expected an undirected simple nx.Graph, got {type(graph).__name__}")
    n = graph.number_of_nodes()
    if set(graph.nodes) != set(range(n)):
        raise ValueError(
            f"graph nodes must be 0..{n - 1}; relabel with nx.convert_node_labels_to_integers"
        )
    loops = list(nx.selfloop_edges(graph))
    if loops:
        raise ValueError(f"graph has self-loops, e.g. at node {loops[0][0]}; remove them")
    return n


def communities(graph: nx.Graph) -> list[list[int]]:
    """The graph's communities by greedy modularity maximisation (Clauset, Newman and Moore
    2004; deterministic), each a sorted list of nodes, ordered by their smallest node. For
    `two_cliques` these are the two cliques."""
    _num_nodes(graph)
    found = nx.community.greedy_modularity_communities(graph)
    return sorted((sorted(int(node) for node in group) for group in found), key=lambda g: g[0])


def edge_list(graph: nx.Graph) -> list[tuple[int, int]]:
    """Undirected edges as sorted `(i, j)` pairs with i < j, in sorted order."""
    _num_nodes(graph)
    return sorted((min(i, j), max(i, j)) for i, j in graph.edges)


def metropolis_weights(graph: nx.Graph) -> torch.Tensor:
    """Metropolis-Hastings mixing matrix W [n, n] float64 (Xiao, Boyd, Lall 2005).

    W_ij = 1 / (1 + max(d_i, d_j)) for each edge, W_ii = 1 - sum_j W_ij, 0 elsewhere: symmetric,
    doubly stochastic and nonnegative.
    """
    n = _num_nodes(graph)
    weights = torch.zeros(n, n, dtype=torch.float64)
    if graph.number_of_edges():
        pairs = torch.tensor(edge_list(graph), dtype=torch.int64)
        degree = torch.tensor([graph.degree(i) for i in range(n)], dtype=torch.float64)
        i, j = pairs[:, 0], pairs[:, 1]
        w = 1.0 / (1.0 + torch.maximum(degree[i], degree[j]))
        weights[i, j] = w
        weights[j, i] = w
    weights += torch.diag(1.0 - weights.sum(dim=1))
    return weights


def spectral_gap(graph: nx.Graph) -> float:
    """1 - SLEM of the Metropolis matrix W, where SLEM = max(|lambda_2|, |lambda_n|) of W.

    Gossip x <- W x contracts the disagreement by the SLEM per round (Xiao and Boyd 2004), so a gap
    near 0 means slow mixing; it is 0 for a disconnected graph and 1 for n = 2 joined nodes.
    """
    eigenvalues = torch.linalg.eigvalsh(metropolis_weights(graph))  # ascending, last one is 1
    if eigenvalues.numel() < 2:
        return 1.0
    slem = eigenvalues[:-1].abs().max().item()
    return max(0.0, 1.0 - slem)


def algebraic_connectivity(graph: nx.Graph) -> float:
    """Second smallest eigenvalue of the Laplacian L = D - A (Fiedler 1973); > 0 iff connected."""
    n = _num_nodes(graph)
    if n < 2:
        return 0.0
    adjacency = (metropolis_weights(graph) > 0).to(torch.float64).fill_diagonal_(0.0)
    laplacian = torch.diag(adjacency.sum(dim=1)) - adjacency
    return max(0.0, torch.linalg.eigvalsh(laplacian)[1].item())


def isolated_honest(graph: nx.Graph, byzantine: torch.Tensor) -> list[int]:
    """Honest nodes all of whose neighbours are Byzantine (`byzantine`: bool [n]), sorted.

    No rule can protect such a node: every message it receives is the attacker's. A node without
    neighbours counts as isolated too.
    """
    n = _num_nodes(graph)
    if byzantine.dtype != torch.bool or byzantine.shape != (n,):
        raise ValueError(
            f"byzantine must be a bool tensor of shape [{n}], got {byzantine.dtype} "
            f"{list(byzantine.shape)}"
        )
    mask = byzantine.tolist()
    return [i for i in range(n) if not mask[i] and all(mask[j] for j in graph.neighbors(i))]


@dataclass(frozen=True)
class EdgeIndex:
    """The 2E directed edges of an undirected graph, sorted by (src, dst).

    Edge e runs src[e] -> dst[e]; reverse[e] is the index of dst[e] -> src[e];
    sign[e] = A(src|dst) = +1 if src < dst else -1 (the PDMM constraint matrix entry);
    degree[i] is the number of edges leaving node i. Per-edge quantities live in one [2E, ...]
    tensor indexed like these.
    """

    src: torch.Tensor  # [2E] int64
    dst: torch.Tensor  # [2E] int64
    reverse: torch.Tensor  # [2E] int64
    sign: torch.Tensor  # [2E] float64
    degree: torch.Tensor  # [n] int64
    num_nodes: int

    @property
    def num_directed_edges(self) -> int:
        """2E."""
        return int(self.src.numel())


def edge_index(graph: nx.Graph) -> EdgeIndex:
    """The `EdgeIndex` of `graph` (undirected, nodes 0..n-1, no self-loops)."""
    n = _num_nodes(graph)
    pairs = torch.tensor(edge_list(graph), dtype=torch.int64).reshape(-1, 2)
    both = torch.cat([pairs, pairs.flip(1)])
    key = both[:, 0] * n + both[:, 1]
    key, order = torch.sort(key)
    src, dst = both[order, 0], both[order, 1]
    reverse = torch.searchsorted(key, dst * n + src)
    sign = torch.where(src < dst, 1.0, -1.0).to(torch.float64)
    degree = torch.bincount(src, minlength=n)
    return EdgeIndex(src, dst, reverse, sign, degree, n)
