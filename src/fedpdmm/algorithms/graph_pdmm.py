"""PDMM on any graph (`fedpdmm.pdmm`), with inexact x-updates by local SGD, warm-started.

    x_i = argmin f_i(x) + (c d_i / 2) ||x - v_i||^2,  v_i = -sum_j A(i|j) z(i|j) / (c d_i)
    y(i|j) = z(i|j) + 2 c A(i|j) x_i;  z(j|i) <- (1 - theta) z(j|i) + theta y(i|j)

The vote of edge (i|j) is -A(i|j) z(i|j) / c, and v_i is the mean of node i's votes. Duals start
at z(i|j) = -A(i|j) c x0, so every vote, and every first prox centre, is the initial model x0.

Rejection: a message y(j|i) that is not accepted closes node i's edge to j: its vote leaves i's
prox centre and the edge leaves i's degree d_i (rho_i = c d_i over the open edges) for as long as
j's messages are rejected; a node with no open edge trains on f_i alone. When a message is
accepted again, the edge re-opens with its vote set to i's current prox centre before the
relaxation, which alone leaves the centre unchanged. A message that does not arrive (`[network]`:
lost, or its sender or receiver offline) is not a fault: the receiver keeps its dual of the edge
and the edge stays in its centre (stochastic PDMM; an offline node keeps all its state). With a
robust rule, node i's prox centre is
the rule over its open edges' votes (base: the node's model) instead of their mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from fedpdmm import pdmm
from fedpdmm.algorithms.base import CombineContext, LocalProblem, RoundState, kept_open
from fedpdmm.algorithms.graph import GraphAlgorithm, outgoing_edges
from fedpdmm.algorithms.robust import RobustCombine
from fedpdmm.topology import EdgeIndex


class GraphPDMMState(NamedTuple):
    x: torch.Tensor  # [n, d] node models
    z: torch.Tensor  # [2E, d] duals, row e = z(src|dst)
    open: torch.Tensor  # [2E] bool: dual rows in their node's combination
    # [2E, d] the last round's message buffer, handed back by a combine that reused the state:
    # the next `encode_nodes` writes into it instead of allocating (None: allocate)
    spare: torch.Tensor | None = None


@dataclass(frozen=True)
class GraphPDMM(GraphAlgorithm):
    edges: EdgeIndex
    c: float
    theta: float
    robust: RobustCombine | None = None
    name: ClassVar[str] = "pdmm"
    has_echo: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config, network, robust, sizes) -> GraphPDMM:
        return cls(network.edges, c=config.pdmm.c, theta=config.pdmm.theta, robust=robust)

    @property
    def echo_relaxation(self) -> float:
        return self.theta

    def sign(self, like: torch.Tensor) -> torch.Tensor:
        """A(src|dst) per directed edge, `[2E, 1]` in `like`'s dtype."""
        return self.edges.sign.to(like.dtype).unsqueeze(1)

    def init(self, x0: torch.Tensor) -> RoundState:
        x = x0.expand(self.edges.num_nodes, -1).clone()
        z = -self.c * self.sign(x0) * x0.unsqueeze(0)
        open_rows = torch.ones(self.edges.num_directed_edges, dtype=torch.bool)
        return RoundState(None, GraphPDMMState(x, z, open_rows))

    def centers(
        self, nodes: GraphPDMMState, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every node's prox centre `[n, d]` and weight rho `[n]` over its open edges."""
        every = bool(nodes.open.all())
        center, rho = pdmm.prox_centers(nodes.z, self.edges, self.c, None if every else nodes.open)
        if self.is_robust:
            votes = -nodes.z * self.sign(nodes.z) / self.c
            for node in range(self.edges.num_nodes):
                rows = outgoing_edges(self.edges, node)
                kept = nodes.open[rows]
                if bool(kept.any()):
                    dropped = int((~kept).sum())
                    center[node] = self.node_rule(
                        votes[rows][kept], nodes.x[node], generator, dropped
                    )
        return center, rho

    def receive(
        self,
        nodes: GraphPDMMState,
        downlink: None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[GraphPDMMState, LocalProblem]:
        center, rho = self.centers(nodes, generator)
        return nodes, LocalProblem(start=nodes.x, center=center, rho=rho)

    def finish(self, nodes: GraphPDMMState, trained: torch.Tensor, steps=None) -> GraphPDMMState:
        return nodes._replace(x=trained)

    def encode(self, nodes: GraphPDMMState, row_models: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(nodes.z, self.sign(nodes.z), row_models, value=2.0 * self.c)

    def encode_nodes(self, nodes: GraphPDMMState, models: torch.Tensor) -> torch.Tensor:
        """`encode` when every node sends its one model `[n, d]` on all its edges (into the
        state's spare buffer when it has one: call it once per round)."""
        return pdmm.messages(nodes.z, models, self.edges, self.c, out=nodes.spare)

    def combine(
        self,
        state: RoundState,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> RoundState:
        nodes = state.nodes
        arrived = accepted.index_select(0, self.edges.reverse)
        z = nodes.z
        reopened = arrived & ~nodes.open
        if bool(reopened.any()):
            center, _ = self.centers(nodes, context.generator)
            z = z.clone()
            rows = reopened.nonzero().flatten()
            z[rows] = -self.c * self.sign(z)[rows] * center[self.edges.src[rows]]
        if context.reuse_state and z is nodes.z and bool(arrived.all()):
            received = pdmm.receive_into(z, messages, self.edges, self.theta)
            spare = messages if messages.shape == z.shape and messages.is_contiguous() else None
            return RoundState(None, GraphPDMMState(nodes.x, received, arrived, spare))
        received = pdmm.receive(z, messages, self.edges, self.theta)
        if not bool(arrived.all()):
            received = torch.where(arrived.unsqueeze(1), received, z)
        lost = None if context.lost is None else context.lost.index_select(0, self.edges.reverse)
        open_rows = kept_open(nodes.open, arrived, context._replace(lost=lost))
        return RoundState(None, GraphPDMMState(nodes.x, received, open_rows))

    def models(self, state: RoundState) -> tuple[None, torch.Tensor]:
        return None, state.nodes.x

    def echo(self, state: RoundState, rows: torch.Tensor) -> torch.Tensor:
        """Per message row i -> j of `rows`, the receiver's dual z(j|i): built from i's messages,
        it is carried back to i in j's next message y(j|i) = z(j|i) + 2 c A(j|i) x_j."""
        return state.nodes.z.index_select(0, self.edges.reverse[rows])

    def votes(self, state: RoundState, messages: torch.Tensor) -> torch.Tensor:
        """What receiver j combines from message row i -> j: -A(j|i) z_new(j|i) / c with
        z_new = (1 - theta) z(j|i) + theta y(i|j); A(j|i) = -A(i|j), the row's own sign."""
        echo = state.nodes.z.index_select(0, self.edges.reverse)
        relaxed = torch.lerp(echo, messages, self.theta)
        return relaxed * self.sign(relaxed) / self.c

    def from_votes(self, state: RoundState, votes: torch.Tensor, rows: torch.Tensor):
        """The messages of `rows` whose votes are `votes` (the inverse of `votes`)."""
        sign = self.sign(votes)[rows]
        echo = state.nodes.z[self.edges.reverse[rows]]
        return (self.c * sign * votes - (1 - self.theta) * echo) / self.theta

    def combine_at(
        self,
        state: RoundState,
        receiver: int,
        rows: torch.Tensor,
        votes: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> torch.Tensor:
        """Node `receiver`'s next prox centre if its incoming rows `rows` carry `votes`."""
        if self.is_robust:
            return self.node_rule(votes, state.nodes.x[receiver], context.generator, 0)
        return votes.mean(dim=0)
