"""PDMM on any graph, vectorized over the 2E directed edges.

The primal-dual method of multipliers (Zhang and Heusdens 2018; Sherson, Heusdens and Kleijn 2019)
solves min sum_i f_i(x_i) s.t. x_i = x_j on every edge, written A(i|j) x_i + A(j|i) x_j = 0 with
A(i|j) = +1 if i < j else -1. Node i holds a dual z(i|j) per neighbour j (row i->j of the [2E, d]
dual tensor, see `fedpdmm.topology.EdgeIndex`), degree d_i, penalty c > 0, averaging theta:

    x_i    = argmin_x f_i(x) + < sum_j A(i|j) z(i|j), x > + (c d_i / 2) ||x||^2
           = prox_{f_i, rho_i}(v_i),  rho_i = c d_i,  v_i = -sum_j A(i|j) z(i|j) / rho_i
    y(i|j) = z(i|j) + 2 c A(i|j) x_i                         (the message i sends to j)
    z(j|i) = (1 - theta) z(j|i) + theta y(i|j)

theta = 1 is PDMM (Peaceman-Rachford splitting, converges for strongly convex f_i); theta = 1/2 is
averaged PDMM (Douglas-Rachford, converges for convex f_i). Here prox_{f, rho}(v) =
argmin_x f(x) + (rho / 2) ||x - v||^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import NamedTuple

import networkx as nx
import torch

from fedpdmm.errors import ConfigError, NonFiniteError
from fedpdmm.topology import EdgeIndex, edge_index

ProxAll = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`prox_all(v [n, d], rho [n]) -> x [n, d]`: every node's prox in one call."""

NodeProx = Callable[[int, torch.Tensor, float], torch.Tensor]
"""`prox(i, v [d], rho) -> argmin_x f_i(x) + (rho / 2) ||x - v||^2`, shape [d]."""


class PDMMState(NamedTuple):
    """Estimates `x` [n, d] of the last x-update; duals `z` [2E, d], row e holding z(src|dst)."""

    x: torch.Tensor
    z: torch.Tensor


def init(edges: EdgeIndex, dim: int, dtype: torch.dtype = torch.float64) -> PDMMState:
    """All-zero estimates [n, dim] and duals [2E, dim]."""
    x = torch.zeros(edges.num_nodes, dim, dtype=dtype)
    z = torch.zeros(edges.num_directed_edges, dim, dtype=dtype)
    return PDMMState(x, z)


def prox_centers(
    z: torch.Tensor, edges: EdgeIndex, c: float, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prox centers v [n, d] and weights rho [n] of the x-update.

    rho_i = c d_i,  v_i = -sum_{e: src[e] = i} sign[e] z[e] / rho_i, over the edges `keep` `[2E]`
    (all by default; d_i counts the kept ones). A node without a kept edge gets rho_i = 0 and
    v_i = 0 (no prox term).
    """
    degree = (
        edges.degree if keep is None else torch.bincount(edges.src[keep], minlength=edges.num_nodes)
    )
    rho = c * degree.to(z.dtype)
    weights = -edges.sign.to(z.dtype) / rho.index_select(0, edges.src).clamp_min(c)
    return weighted_edge_sum(z, edges.src, weights, edges.num_nodes, keep=keep), rho


def weighted_edge_sum(
    rows: torch.Tensor,
    nodes: torch.Tensor,
    weights: torch.Tensor,
    num_nodes: int,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """out[i] = sum_{e: nodes[e] = i, keep[e]} weights[e] rows[e]: `[num_nodes, d]` from `[m, d]`.

    One sparse-dense product: it reads each kept row once, with no `[m, d]` temporary (4x faster
    than scaling the rows and `index_add_` at 2E = 1,200, d = 159,010), and never reads rows left
    out by `keep` (so a rejected, non-finite message cannot leak into the sum).
    """
    columns = torch.arange(rows.shape[0])
    if keep is not None:
        nodes, columns, weights = nodes[keep], columns[keep], weights[keep]
    matrix = torch.sparse_coo_tensor(
        torch.stack([nodes, columns]),
        weights.to(rows.dtype),
        (num_nodes, rows.shape[0]),
        check_invariants=False,
    ).coalesce()
    return torch.sparse.mm(matrix, rows)


MESSAGE_CHUNK_BYTES = 8 * 2**20
"""`messages` builds this many bytes of rows at a time (their sender rows stay in cache)."""


def messages(
    z: torch.Tensor,
    x: torch.Tensor,
    edges: EdgeIndex,
    c: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Messages y [2E, d]: y[e] = y(src|dst) = z[e] + 2 c sign[e] x[src[e]].

    Built in chunks of rows: each chunk's sender rows are gathered into a cache-sized buffer and
    combined with the duals in one `addcmul` into the output, so `[2E, d]` is written once and
    `z` read once (a whole-tensor gather, scale and add made four passes). `out`: a buffer of
    z's shape and dtype to write into (not sharing memory with `z` or `x`)."""
    usable = out is not None and out.shape == z.shape and out.dtype == z.dtype
    y = out if usable else torch.empty_like(z)
    scale = (2.0 * c * edges.sign.to(z.dtype)).unsqueeze(1)
    rows = max(1, MESSAGE_CHUNK_BYTES // max(1, z.shape[1] * z.element_size()))
    senders, x = torch.empty(0, dtype=z.dtype), x.to(z.dtype)
    for first in range(0, z.shape[0], rows):
        last = min(first + rows, z.shape[0])
        senders.resize_(last - first, z.shape[1])
        torch.index_select(x, 0, edges.src[first:last], out=senders)
        torch.addcmul(z[first:last], senders, scale[first:last], out=y[first:last])
    return y


def receive(z: torch.Tensor, y: torch.Tensor, edges: EdgeIndex, theta: float) -> torch.Tensor:
    """Duals after receiving: z_new(j|i) = (1 - theta) z(j|i) + theta y(i|j), i.e.

    z_new = (1 - theta) z + theta y[reverse]  (shapes [2E, d]).
    """
    received = y.index_select(0, edges.reverse)
    return received if theta == 1.0 else torch.lerp(z, received, theta)


def receive_into(z: torch.Tensor, y: torch.Tensor, edges: EdgeIndex, theta: float) -> torch.Tensor:
    """`receive` written into `z` itself, `MESSAGE_CHUNK_BYTES` of rows at a time (no `[2E, d]`
    allocation); `y` must not share memory with `z`. Returns `z`."""
    rows = max(1, MESSAGE_CHUNK_BYTES // max(1, z.shape[1] * z.element_size()))
    buffer = torch.empty(0, dtype=z.dtype)
    for first in range(0, z.shape[0], rows):
        last = min(first + rows, z.shape[0])
        index = edges.reverse[first:last]
        if theta == 1.0:
            torch.index_select(y, 0, index, out=z[first:last])
        else:
            buffer.resize_(last - first, z.shape[1])
            z[first:last].lerp_(torch.index_select(y, 0, index, out=buffer), theta)
    return z


def step(
    state: PDMMState, prox_all: ProxAll, edges: EdgeIndex, c: float, theta: float
) -> PDMMState:
    """One synchronous PDMM round: x-update from the current duals, send, receive."""
    v, rho = prox_centers(state.z, edges, c)
    x = prox_all(v, rho)
    y = messages(state.z, x, edges, c)
    return PDMMState(x, receive(state.z, y, edges, theta))


def _check_hyperparameters(c: float, theta: float, rounds: int) -> None:
    if isinstance(c, bool) or not isinstance(c, Real) or not (math.isfinite(c) and c > 0):
        raise ConfigError(f"c must be a finite number > 0 (the PDMM penalty), got {c!r}")
    if isinstance(theta, bool) or not isinstance(theta, Real) or not 0 < theta <= 1:
        raise ConfigError(f"theta must be in (0, 1] (1: PDMM, 1/2: averaged PDMM), got {theta!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, Integral) or rounds < 1:
        raise ConfigError(f"rounds must be an integer >= 1, got {rounds!r}")


def _node_by_node(prox: NodeProx, dim: int) -> ProxAll:
    """`prox_all` that calls `prox(i, v[i], rho[i])` for each node and stacks the results."""

    def prox_all(v: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        rows = []
        for i in range(v.shape[0]):
            x_i = prox(i, v[i], float(rho[i]))
            if not isinstance(x_i, torch.Tensor) or x_i.shape != (dim,):
                shape = list(x_i.shape) if isinstance(x_i, torch.Tensor) else type(x_i).__name__
                raise ValueError(
                    f"prox for node {i} must return a tensor of shape [{dim}], got {shape}"
                )
            rows.append(x_i)
        return torch.stack(rows)

    return prox_all


def solve(
    prox: NodeProx, graph: nx.Graph, dim: int, *, c: float, theta: float, rounds: int
) -> torch.Tensor:
    """Run `rounds` synchronous PDMM rounds from zero duals; return the estimates x [n, dim].

    `prox(i, v, rho)` returns argmin_x f_i(x) + (rho / 2) ||x - v||^2 for node i; it is called
    with v a float64 tensor [dim] and rho = c d_i a float. The duals are kept in float64 and the
    estimates in the dtype `prox` returns. `graph`: connected, undirected, nodes 0..n-1, n >= 2.
    Raises ConfigError for invalid c, theta, rounds, dim or graph, NonFiniteError if it diverges.
    """
    _check_hyperparameters(c, theta, rounds)
    if isinstance(dim, bool) or not isinstance(dim, Integral) or dim < 1:
        raise ConfigError(f"dim must be an integer >= 1, got {dim!r}")
    edges = edge_index(graph)
    if graph.number_of_nodes() < 2 or not nx.is_connected(graph):
        raise ConfigError(
            f"PDMM needs a connected graph with >= 2 nodes, got {graph.number_of_nodes()} nodes "
            f"in {nx.number_connected_components(graph) if len(graph) else 0} component(s)"
        )
    prox_all = _node_by_node(prox, int(dim))
    state = init(edges, int(dim), torch.float64)
    for _ in range(int(rounds)):
        state = step(state, prox_all, edges, float(c), float(theta))
    if not torch.isfinite(state.x).all():
        raise NonFiniteError(
            f"PDMM estimates are not finite after {rounds} rounds with c={c}, theta={theta}; "
            "try theta=0.5 or another c"
        )
    return state.x
