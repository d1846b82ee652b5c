"""FedAvg (McMahan et al. 2017): K local SGD steps from the global model, then the server averages.

The average is uniform over the clients whose message was accepted, or weighted by their sample
counts (`fedavg.weighting = "samples"`), renormalised over those clients. Messages not accepted
(lost, not sent by an offline client, missing, non-finite) are left out: under partial
participation x <- sum_{i in S} w_i y_i / sum_{i in S} w_i over the clients S whose messages
arrived (McMahan et al.'s estimator for sampled clients); no message arriving leaves x as it is.
With a robust rule (`robust`, see `fedpdmm.algorithms.robust`) the server takes
x + rule(models - x) over the accepted models instead (sample weights do not apply).
A client keeps no state between rounds, so what a Byzantine client remembers does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch

from fedpdmm.aggregators import RuleContext
from fedpdmm.algorithms.base import (
    CombineContext,
    LocalProblem,
    RoundState,
    ServerAlgorithm,
    missing_rows,
)
from fedpdmm.algorithms.robust import RobustCombine


class FedAvgServer(NamedTuple):
    x: torch.Tensor  # [d] global model
    rule_state: Any = None  # memory of a stateful robust rule (FoolsGold)


class FedAvgClients(NamedTuple):
    x: torch.Tensor  # [m, d] each client's model after its last local training


def server_rule(
    robust: RobustCombine,
    rows: torch.Tensor,
    base: torch.Tensor,
    rule_state: Any,
    accepted: torch.Tensor,
    context: CombineContext,
    dropped: int,
    absent: int = 0,
) -> tuple[torch.Tensor, Any]:
    """base + rule(rows - base) over the accepted clients' rows (`dropped` others rejected,
    `absent` others lost or not sent)."""
    return robust(
        rows,
        base,
        RuleContext(
            reference=context.reference,
            generator=context.generator,
            clients=accepted.nonzero().flatten(),
            state=rule_state,
            dropped=dropped,
            absent=absent,
        ),
    )


@dataclass(frozen=True)
class FedAvg(ServerAlgorithm):
    num_clients: int
    weights: torch.Tensor | None = None  # [n] sample counts; None for the uniform average
    robust: RobustCombine | None = None
    name: ClassVar[str] = "fedavg"

    @classmethod
    def from_config(cls, config, network, robust, sizes) -> FedAvg:
        weights = sizes if config.fedavg.weighting == "samples" else None
        return cls(num_clients=network.num_nodes, weights=weights, robust=robust)

    def receiver_weights(self, rows: torch.Tensor) -> torch.Tensor | None:
        """The server's sample weights of `rows` (None: uniform, or a robust rule)."""
        if self.weights is None or self.is_robust:
            return None
        return self.weights[rows].to(torch.float64)

    def init(self, x0: torch.Tensor) -> RoundState:
        clients = FedAvgClients(x0.expand(self.num_clients, -1).clone())
        return RoundState(FedAvgServer(x0.clone()), clients)

    def downlink(self, hub: FedAvgServer) -> torch.Tensor:
        return hub.x.expand(self.num_clients, -1)

    def receive(
        self,
        nodes: FedAvgClients,
        downlink: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[FedAvgClients, LocalProblem]:
        return nodes, LocalProblem(start=downlink, center=None, rho=0.0)

    def finish(self, nodes: FedAvgClients, trained: torch.Tensor, steps=None) -> FedAvgClients:
        return FedAvgClients(trained)

    def encode(self, nodes: FedAvgClients, row_models: torch.Tensor) -> torch.Tensor:
        return row_models

    def combine(
        self,
        state: RoundState,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> RoundState:
        if not bool(accepted.any()):
            return state
        x, rule_state = self.combination(state, messages, accepted, context)
        return RoundState(FedAvgServer(x, rule_state), state.nodes)

    def combination(
        self,
        state: RoundState,
        votes: torch.Tensor,
        accepted: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> tuple[torch.Tensor, Any]:
        """The new global model from the accepted rows (and the rule's new state)."""
        server = state.hub
        rows = votes if bool(accepted.all()) else votes[accepted]
        if self.is_robust:
            dropped, absent = missing_rows(accepted, context)
            return server_rule(
                self.robust, rows, server.x, server.rule_state, accepted, context, dropped, absent
            )
        if self.weights is None:
            return rows.mean(dim=0), server.rule_state
        weights = self.weights[accepted].to(rows.dtype)
        return (weights @ rows) / weights.sum(), server.rule_state

    def models(self, state: RoundState) -> tuple[torch.Tensor, torch.Tensor]:
        return state.hub.x, state.nodes.x
