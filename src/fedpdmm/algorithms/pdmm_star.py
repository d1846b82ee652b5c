"""PDMM with a server: the star graph whose hub (the server) has zero loss.

Notation of `fedpdmm.pdmm`: the server is node n (after the clients 0..n-1), so A(i|s) = +1 for a
client and A(s|i) = -1. Client i holds its model x_i and its dual z_i = z(i|s); the server holds
one dual per client, z_s[i] = z(s|i), and its model x_s. One round:

    server -> client i:  y(s|i) = z_s[i] - 2 c x_s
    client i:            z_i  <- (1 - theta) z_i + theta y(s|i)
                         x_i  =  argmin f_i(x) + <z_i, x> + (c / 2) ||x||^2
                              =  prox_{f_i, c}(-z_i / c)      (K SGD steps, warm-started at x_i)
    client i -> server:  y(i|s) = z_i + 2 c x_i
    server:              z_s[i] <- (1 - theta) z_s[i] + theta y(i|s)     (accepted messages only)
                         x_s  =  argmin <sum_i A(s|i) z_s[i], x> + (c n / 2) ||x||^2
                              =  mean_i z_s[i] / c

At theta = 1 the server's rows z_s[i] / c = 2 x_i - v_i are FedSplit's uploads (Pathak and
Wainwright 2020) and x_s is their mean. Duals start at zero, so x_s starts at 0 as well. A message
that does not arrive (or is non-finite) leaves that client's server dual unchanged.

Robust PDMM (`robust`): x_s = x_s + rule(z_s / c - x_s), a robust estimate in place of the mean
of the votes z_s[i] / c (see `fedpdmm.algorithms.robust`); with `mean` it is PDMM exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from fedpdmm.algorithms.common import LocalProblem
from fedpdmm.algorithms.robust import RobustCombine


class PDMMServer(NamedTuple):
    z: torch.Tensor  # [n, d] z(s|i)
    x: torch.Tensor  # [d]
    rule_state: Any = None  # memory of a stateful robust rule (FoolsGold)


class PDMMClients(NamedTuple):
    x: torch.Tensor  # [m, d]
    z: torch.Tensor  # [m, d] z(i|s)


@dataclass(frozen=True)
class PDMMStar:
    num_clients: int
    c: float
    theta: float
    robust: RobustCombine | None = None
    name: str = "pdmm"

    @property
    def needs_reference(self) -> bool:
        """Whether the server needs its own update on a root dataset (FLTrust)."""
        return self.robust is not None and self.robust.rule.needs_reference

    def init(self, x0: torch.Tensor) -> tuple[PDMMServer, PDMMClients]:
        n = self.num_clients
        server = PDMMServer(torch.zeros(n, x0.numel(), dtype=x0.dtype), torch.zeros_like(x0))
        clients = PDMMClients(x0.expand(n, -1).clone(), torch.zeros(n, x0.numel(), dtype=x0.dtype))
        return server, clients

    def downlink(self, server: PDMMServer) -> torch.Tensor:
        return server.z - 2 * self.c * server.x

    def receive(
        self, clients: PDMMClients, received: torch.Tensor
    ) -> tuple[PDMMClients, LocalProblem]:
        z = (1 - self.theta) * clients.z + self.theta * received
        center = -z / self.c
        return PDMMClients(clients.x, z), LocalProblem(start=clients.x, center=center, rho=self.c)

    def finish(self, clients: PDMMClients, trained: torch.Tensor) -> PDMMClients:
        return PDMMClients(trained, clients.z)

    def encode(self, clients: PDMMClients, models: torch.Tensor) -> torch.Tensor:
        return clients.z + 2 * self.c * models

    def update(
        self,
        server: PDMMServer,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        *,
        reference: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PDMMServer:
        z = server.z.clone()
        z[accepted] = (1 - self.theta) * z[accepted] + self.theta * messages[accepted]
        if self.robust is None or self.robust.is_plain_mean:
            return PDMMServer(z, z.mean(dim=0) / self.c, server.rule_state)
        x, state = self.robust(
            z / self.c,
            server.x,
            state=server.rule_state,
            reference=reference,
            generator=generator,
            clients=torch.arange(self.num_clients),
        )
        return PDMMServer(z, x, state)

    def global_model(self, server: PDMMServer) -> torch.Tensor:
        return server.x

    def client_models(self, clients: PDMMClients) -> torch.Tensor:
        return clients.x
