"""Peer-to-peer algorithms on a graph: PDMM and decentralized SGD (gossip averaging).

No server: node i keeps its own model x_i and talks to its graph neighbours only. One round:

    local_problem(state)                     -> LocalProblem for every node (start, center, rho)
    (the engine runs K local SGD steps)
    finish(state, trained)                   -> state
    encode(state, edge_models)               -> [2E, d] message on every directed edge i->j
    combine(state, messages, accepted)       -> state

Row e of a `[2E, d]` tensor belongs to the directed edge `edges.src[e] -> edges.dst[e]`
(`fedpdmm.topology.EdgeIndex`). `edge_models` is each sender's model as seen on that edge, so a
Byzantine node can send a different message on each of its edges. `accepted` `[2E]` marks the
messages that arrived finite; a rejected message changes nothing at its receiver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from fedpdmm import pdmm
from fedpdmm.algorithms.common import LocalProblem
from fedpdmm.algorithms.robust import RobustCombine
from fedpdmm.topology import EdgeIndex


def outgoing_edges(edges: EdgeIndex, node: int) -> slice:
    """Rows of the edges node -> j (edges are sorted by source, so they are contiguous)."""
    start = int(edges.degree[:node].sum())
    return slice(start, start + int(edges.degree[node]))


class GraphPDMMState(NamedTuple):
    x: torch.Tensor  # [n, d] node models
    z: torch.Tensor  # [2E, d] duals, row e = z(src|dst)


@dataclass(frozen=True)
class GraphPDMM:
    """PDMM on any graph (`fedpdmm.pdmm`), with inexact x-updates by local SGD, warm-started.

    x_i = argmin f_i(x) + (c d_i / 2) ||x - v_i||^2 with v_i = -sum_j A(i|j) z(i|j) / (c d_i);
    y(i|j) = z(i|j) + 2 c A(i|j) x_i;  z(j|i) <- (1 - theta) z(j|i) + theta y(i|j).
    """

    edges: EdgeIndex
    c: float
    theta: float
    robust: RobustCombine | None = None
    name: str = "pdmm"

    def init(self, x0: torch.Tensor) -> GraphPDMMState:
        x = x0.expand(self.edges.num_nodes, -1).clone()
        z = torch.zeros(self.edges.num_directed_edges, x0.numel(), dtype=x0.dtype)
        return GraphPDMMState(x, z)

    def local_problem(
        self, state: GraphPDMMState, *, generator: torch.Generator | None = None
    ) -> LocalProblem:
        center, rho = pdmm.prox_centers(state.z, self.edges, self.c)
        if self.robust is not None and not self.robust.is_plain_mean:
            votes = -state.z * self.edges.sign.to(state.z.dtype).unsqueeze(1) / self.c
            for node in range(self.edges.num_nodes):
                rows = votes[outgoing_edges(self.edges, node)]
                center[node], _ = self.robust(rows, state.x[node], generator=generator)
        return LocalProblem(start=state.x, center=center, rho=rho)

    def finish(self, state: GraphPDMMState, trained: torch.Tensor) -> GraphPDMMState:
        return GraphPDMMState(trained, state.z)

    def encode(self, state: GraphPDMMState, edge_models: torch.Tensor) -> torch.Tensor:
        sign = self.edges.sign.to(state.z.dtype).unsqueeze(1)
        return torch.addcmul(state.z, sign, edge_models, value=2.0 * self.c)

    def encode_nodes(self, state: GraphPDMMState, models: torch.Tensor) -> torch.Tensor:
        """`encode` when every node sends its one model `[n, d]` on all its edges."""
        return pdmm.messages(state.z, models, self.edges, self.c)

    def combine(
        self,
        state: GraphPDMMState,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> GraphPDMMState:
        z = pdmm.receive(state.z, messages, self.edges, self.theta)
        arrived = accepted.index_select(0, self.edges.reverse)
        if not bool(arrived.all()):
            z = torch.where(arrived.unsqueeze(1), z, state.z)
        return GraphPDMMState(state.x, z)

    def node_models(self, state: GraphPDMMState) -> torch.Tensor:
        return state.x


class DSGDState(NamedTuple):
    x: torch.Tensor  # [n, d]


@dataclass(frozen=True)
class DSGD:
    """Decentralized SGD with gossip averaging (Lian et al. 2017), K local steps per round.

    After local training each node sends its model to its neighbours and averages with
    Metropolis-Hastings weights: x_i <- W_ii x_i + sum_j W_ij x_j, W_ij = 1 / (1 + max(d_i, d_j)).
    The weight of a rejected message goes to the node's own model, so rows of W still sum to one.
    """

    edges: EdgeIndex
    robust: RobustCombine | None = None
    name: str = "dsgd"

    @property
    def edge_weights(self) -> torch.Tensor:
        """W[dst, src] for every directed edge, `[2E]` float64."""
        degree = self.edges.degree.to(torch.float64)
        larger = torch.maximum(degree[self.edges.src], degree[self.edges.dst])
        return 1.0 / (1.0 + larger)

    def init(self, x0: torch.Tensor) -> DSGDState:
        return DSGDState(x0.expand(self.edges.num_nodes, -1).clone())

    def local_problem(
        self, state: DSGDState, *, generator: torch.Generator | None = None
    ) -> LocalProblem:
        return LocalProblem(start=state.x, center=None, rho=0.0)

    def finish(self, state: DSGDState, trained: torch.Tensor) -> DSGDState:
        return DSGDState(trained)

    def encode(self, state: DSGDState, edge_models: torch.Tensor) -> torch.Tensor:
        return edge_models

    def encode_nodes(self, state: DSGDState, models: torch.Tensor) -> torch.Tensor:
        return models.index_select(0, self.edges.src)

    def combine(
        self,
        state: DSGDState,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> DSGDState:
        if self.robust is not None:
            return DSGDState(self._robust_combine(state.x, messages, accepted, generator))
        weights = self.edge_weights.to(state.x.dtype) * accepted.to(state.x.dtype)
        incoming = pdmm.weighted_edge_sum(
            messages, self.edges.dst, weights, self.edges.num_nodes, keep=accepted
        )
        received_weight = torch.zeros(self.edges.num_nodes, dtype=state.x.dtype).index_add_(
            0, self.edges.dst, weights
        )
        x = state.x * (1.0 - received_weight).unsqueeze(1) + incoming
        return DSGDState(x)

    def _robust_combine(self, x, messages, accepted, generator) -> torch.Tensor:
        """x_i <- x_i + rule({0} u {m_ji - x_i}) over i and its neighbours' accepted messages."""
        mixed = x.clone()
        for node in range(self.edges.num_nodes):
            incoming = self.edges.reverse[outgoing_edges(self.edges, node)]
            incoming = incoming[accepted[incoming]]
            rows = torch.cat([x[node : node + 1], messages[incoming]])
            mixed[node], _ = self.robust(rows, x[node], generator=generator)
        return mixed

    def node_models(self, state: DSGDState) -> torch.Tensor:
        return state.x
