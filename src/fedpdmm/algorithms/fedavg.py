"""FedAvg (McMahan et al. 2017): K local SGD steps from the global model, then the server averages.

The average is uniform over the clients whose message arrived, or weighted by their sample counts
(`weights`). Messages that were not accepted (missing, or non-finite) are left out of the average.
With a robust rule (`robust`, see `fedpdmm.algorithms.robust`) the server takes
x + rule(models - x) over the accepted models instead (sample weights do not apply).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from fedpdmm.algorithms.common import LocalProblem
from fedpdmm.algorithms.robust import RobustCombine


class FedAvgServer(NamedTuple):
    x: torch.Tensor  # [d] global model
    rule_state: Any = None  # memory of a stateful robust rule (FoolsGold)


class FedAvgClients(NamedTuple):
    x: torch.Tensor  # [m, d] each client's model after its last local training


@dataclass(frozen=True)
class FedAvg:
    num_clients: int
    weights: torch.Tensor | None = None  # [n] sample counts; None for the uniform average
    robust: RobustCombine | None = None
    name: str = "fedavg"

    @property
    def needs_reference(self) -> bool:
        """Whether the server needs its own update on a root dataset (FLTrust)."""
        return self.robust is not None and self.robust.rule.needs_reference

    def init(self, x0: torch.Tensor) -> tuple[FedAvgServer, FedAvgClients]:
        return FedAvgServer(x0.clone()), FedAvgClients(x0.expand(self.num_clients, -1).clone())

    def downlink(self, server: FedAvgServer) -> torch.Tensor:
        return server.x.expand(self.num_clients, -1)

    def receive(
        self, clients: FedAvgClients, received: torch.Tensor
    ) -> tuple[FedAvgClients, LocalProblem]:
        return clients, LocalProblem(start=received, center=None, rho=0.0)

    def finish(self, clients: FedAvgClients, trained: torch.Tensor) -> FedAvgClients:
        return FedAvgClients(trained)

    def encode(self, clients: FedAvgClients, models: torch.Tensor) -> torch.Tensor:
        return models

    def update(
        self,
        server: FedAvgServer,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        *,
        reference: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> FedAvgServer:
        if not bool(accepted.any()):
            return server
        rows = messages[accepted]
        if self.robust is not None and not self.robust.is_plain_mean:
            x, state = self.robust(
                rows,
                server.x,
                state=server.rule_state,
                reference=reference,
                generator=generator,
                clients=accepted.nonzero().flatten(),
            )
            return FedAvgServer(x, state)
        if self.weights is None:
            return FedAvgServer(rows.mean(dim=0), server.rule_state)
        weights = self.weights[accepted].to(rows.dtype)
        return FedAvgServer((weights @ rows) / weights.sum(), server.rule_state)

    def global_model(self, server: FedAvgServer) -> torch.Tensor:
        return server.x

    def client_models(self, clients: FedAvgClients) -> torch.Tensor:
        return clients.x
