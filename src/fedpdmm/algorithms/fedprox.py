"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

FedAvg whose local objective adds a proximal term to the global model x received this round:

    x_i = K SGD steps on f_i(x) + (mu / 2) ||x - x_global||^2, from x_global

then the server combines exactly as FedAvg (mean, sample weights or a robust rule). `fedprox.mu`
(default 0.01); with mu = 0 it is FedAvg, exactly. Clients keep no state between rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from fedpdmm.algorithms.base import LocalProblem
from fedpdmm.algorithms.fedavg import FedAvg, FedAvgClients


@dataclass(frozen=True)
class FedProx(FedAvg):
    mu: float = 0.01
    name: ClassVar[str] = "fedprox"

    @classmethod
    def from_config(cls, config, network, robust, sizes) -> FedProx:
        weights = sizes if config.fedavg.weighting == "samples" else None
        return cls(network.num_nodes, weights=weights, robust=robust, mu=config.fedprox.mu)

    def receive(
        self,
        nodes: FedAvgClients,
        downlink: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[FedAvgClients, LocalProblem]:
        return nodes, LocalProblem(start=downlink, center=downlink, rho=self.mu)
