"""Decentralized SGD with gossip averaging (Lian et al. 2017), K local steps per round.

After local training each node sends its model to its neighbours and averages with
Metropolis-Hastings weights: x_i <- W_ii x_i + sum_j W_ij x_j, W_ij = 1 / (1 + max(d_i, d_j)),
or (`gossip.weights = "max_degree"`) W_ij = 1 / (1 + max_k d_k) on every edge, the weights of
He, Karimireddy and Jaggi's dumbbell runs (1/11 on every edge of two 10-cliques and a bridge).
The weight of a message that is not accepted (rejected, or lost over an unreliable network, or
not sent by an offline neighbour) goes to the node's own model, so rows of W still sum to one;
an offline node keeps its model. With a robust rule (`dsgd+rule`), node i takes
x_i + rule({0} u {m_ji - x_i}) over its own model and its neighbours' accepted messages
(rejected ones lower the rule's f); `dsgd+centered_clipping` is self-centred clipping (He,
Karimireddy, Jaggi 2022) with uniform weights. Nodes keep no state beyond their
models, so what a Byzantine node remembers does not change what it sends.
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


class DSGDState(NamedTuple):
    x: torch.Tensor  # [n, d]


@dataclass(frozen=True)
class DSGD(GraphAlgorithm):
    edges: EdgeIndex
    robust: RobustCombine | None = None
    weights: str = "metropolis"
    name: ClassVar[str] = "dsgd"
    combines_own_row: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config, network, robust, sizes) -> DSGD:
        """Gossip with `gossip.weights` unless a rule is configured (`robust` is not None)."""
        return cls(network.edges, robust=robust, weights=config.gossip.weights)

    @property
    def edge_weights(self) -> torch.Tensor:
        """W[dst, src] for every directed edge, `[2E]` float64."""
        degree = self.edges.degree.to(torch.float64)
        if self.weights == "max_degree":
            largest = degree.max() if len(degree) else degree.new_zeros(())
            return torch.full_like(self.edges.sign, 1.0 / (1.0 + float(largest)))
        larger = torch.maximum(degree[self.edges.src], degree[self.edges.dst])
        return 1.0 / (1.0 + larger)

    def receiver_weights(self, rows: torch.Tensor) -> torch.Tensor | None:
        """The gossip weights W[dst, src] of the incoming `rows`."""
        return None if self.robust is not None else self.edge_weights[rows]

    def init(self, x0: torch.Tensor) -> RoundState:
        return RoundState(None, DSGDState(x0.expand(self.edges.num_nodes, -1).clone()))

    def receive(
        self, nodes: DSGDState, downlink: None = None, *, generator: torch.Generator | None = None
    ) -> tuple[DSGDState, LocalProblem]:
        return nodes, LocalProblem(start=nodes.x, center=None, rho=0.0)

    def finish(self, nodes: DSGDState, trained: torch.Tensor, steps=None) -> DSGDState:
        return DSGDState(trained)

    def encode(self, nodes: DSGDState, row_models: torch.Tensor) -> torch.Tensor:
        return row_models

    def encode_nodes(self, nodes: DSGDState, models: torch.Tensor) -> torch.Tensor:
        return models.index_select(0, self.edges.src)

    def combine(
        self,
        state: RoundState,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> RoundState:
        x = state.nodes.x
        if self.robust is not None:
            return RoundState(None, DSGDState(self._robust_mix(x, messages, accepted, context)))
        weights = self.edge_weights.to(x.dtype) * accepted.to(x.dtype)
        incoming = pdmm.weighted_edge_sum(
            messages, self.edges.dst, weights, self.edges.num_nodes, keep=accepted
        )
        received_weight = torch.zeros(self.edges.num_nodes, dtype=x.dtype).index_add_(
            0, self.edges.dst, weights
        )
        return RoundState(None, DSGDState(x * (1.0 - received_weight).unsqueeze(1) + incoming))

    def _robust_mix(self, x, messages, accepted, context: CombineContext) -> torch.Tensor:
        mixed = x.clone()
        for node in range(self.edges.num_nodes):
            incoming = self.edges.reverse[outgoing_edges(self.edges, node)]
            kept = accepted[incoming]
            rows = torch.cat([x[node : node + 1], messages[incoming[kept]]])
            absent = 0 if context.lost is None else int((~kept & context.lost[incoming]).sum())
            dropped = int((~kept).sum()) - absent
            mixed[node] = self.node_rule(rows, x[node], context.generator, dropped, absent)
        return mixed

    def combine_at(
        self,
        state: RoundState,
        receiver: int,
        rows: torch.Tensor,
        votes: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> torch.Tensor:
        """Node `receiver`'s next model if its incoming rows `rows` carry `votes`."""
        own = state.nodes.x[receiver]
        if self.robust is not None:
            return self.node_rule(torch.cat([own.unsqueeze(0), votes]), own, context.generator)
        weights = self.edge_weights.to(votes.dtype)[rows].unsqueeze(1)
        return own * (1.0 - weights.sum()) + (weights * votes).sum(dim=0)

    def models(self, state: RoundState) -> tuple[None, torch.Tensor]:
        return None, state.nodes.x
