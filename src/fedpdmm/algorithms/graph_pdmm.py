"""PDMM on any graph (`fedpdmm.pdmm`), with inexact x-updates by local SGD, warm-started.

    x_i = argmin f_i(x) + (c d_i / 2) ||x - v_i||^2,  v_i = -sum_j A(i|j) z(i|j) / (c d_i)
    y(i|j) = z(i|j) + 2 c A(i|j) x_i;  z(j|i) <- (1 - theta) z(j|i) + theta y(i|j)

A message that is not accepted leaves its receiver's dual of that edge unchanged. With a robust
rule, node i's prox centre v_i, the mean of its edges' votes -A(i|j) z(i|j) / c, is replaced by
the rule over those votes (base: the node's model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from fedpdmm import pdmm
from fedpdmm.algorithms.base import CombineContext, LocalProblem, RoundState
from fedpdmm.algorithms.graph import GraphAlgorithm, outgoing_edges
from fedpdmm.algorithms.robust import RobustCombine
from fedpdmm.topology import EdgeIndex


class GraphPDMMState(NamedTuple):
    x: torch.Tensor  # [n, d] node models
    z: torch.Tensor  # [2E, d] duals, row e = z(src|dst)


@dataclass(frozen=True)
class GraphPDMM(GraphAlgorithm):
    edges: EdgeIndex
    c: float
    theta: float
    robust: RobustCombine | None = None
    name: ClassVar[str] = "pdmm"

    @classmethod
    def from_config(cls, config, network, robust, sizes) -> GraphPDMM:
        return cls(network.edges, c=config.pdmm.c, theta=config.pdmm.theta, robust=robust)

    def init(self, x0: torch.Tensor) -> RoundState:
        x = x0.expand(self.edges.num_nodes, -1).clone()
        z = torch.zeros(self.edges.num_directed_edges, x0.numel(), dtype=x0.dtype)
        return RoundState(None, GraphPDMMState(x, z))

    def receive(
        self,
        nodes: GraphPDMMState,
        downlink: None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[GraphPDMMState, LocalProblem]:
        center, rho = pdmm.prox_centers(nodes.z, self.edges, self.c)
        if self.is_robust:
            votes = -nodes.z * self.edges.sign.to(nodes.z.dtype).unsqueeze(1) / self.c
            for node in range(self.edges.num_nodes):
                rows = votes[outgoing_edges(self.edges, node)]
                center[node] = self.node_rule(rows, nodes.x[node], generator)
        return nodes, LocalProblem(start=nodes.x, center=center, rho=rho)

    def finish(self, nodes: GraphPDMMState, trained: torch.Tensor) -> GraphPDMMState:
        return GraphPDMMState(trained, nodes.z)

    def encode(self, nodes: GraphPDMMState, row_models: torch.Tensor) -> torch.Tensor:
        sign = self.edges.sign.to(nodes.z.dtype).unsqueeze(1)
        return torch.addcmul(nodes.z, sign, row_models, value=2.0 * self.c)

    def encode_nodes(self, nodes: GraphPDMMState, models: torch.Tensor) -> torch.Tensor:
        """`encode` when every node sends its one model `[n, d]` on all its edges."""
        return pdmm.messages(nodes.z, models, self.edges, self.c)

    def combine(
        self,
        state: RoundState,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> RoundState:
        nodes = state.nodes
        z = pdmm.receive(nodes.z, messages, self.edges, self.theta)
        arrived = accepted.index_select(0, self.edges.reverse)
        if not bool(arrived.all()):
            z = torch.where(arrived.unsqueeze(1), z, nodes.z)
        return RoundState(None, GraphPDMMState(nodes.x, z))

    def models(self, state: RoundState) -> tuple[None, torch.Tensor]:
        return None, state.nodes.x
