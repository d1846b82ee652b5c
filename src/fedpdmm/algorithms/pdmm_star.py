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
that is not accepted (non-finite) leaves that client's server dual unchanged. An edge that is not
open (a client that dropped out, `CombineContext.open`) leaves the server's mean and degree:
x_s = mean over open edges; `reopen` re-initialises a returning client's edge at z_s[i] = c x_s,
which leaves x_s unchanged.

Robust PDMM (`robust`): x_s = x_s + rule(z_s / c - x_s), a robust estimate in place of the mean
of the votes z_s[i] / c (see `fedpdmm.algorithms.robust`); with `mean` it is PDMM exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch

from fedpdmm.algorithms.base import CombineContext, LocalProblem, RoundState, ServerAlgorithm
from fedpdmm.algorithms.fedavg import server_rule
from fedpdmm.algorithms.robust import RobustCombine


class PDMMServer(NamedTuple):
    z: torch.Tensor  # [n, d] z(s|i)
    x: torch.Tensor  # [d]
    rule_state: Any = None  # memory of a stateful robust rule (FoolsGold)


class PDMMClients(NamedTuple):
    x: torch.Tensor  # [m, d]
    z: torch.Tensor  # [m, d] z(i|s)


@dataclass(frozen=True)
class PDMMStar(ServerAlgorithm):
    num_clients: int
    c: float
    theta: float
    robust: RobustCombine | None = None
    name: ClassVar[str] = "pdmm"
    transport_hooks: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config, network, robust, sizes) -> PDMMStar:
        return cls(network.num_nodes, c=config.pdmm.c, theta=config.pdmm.theta, robust=robust)

    def init(self, x0: torch.Tensor) -> RoundState:
        n = self.num_clients
        server = PDMMServer(torch.zeros(n, x0.numel(), dtype=x0.dtype), torch.zeros_like(x0))
        clients = PDMMClients(x0.expand(n, -1).clone(), torch.zeros(n, x0.numel(), dtype=x0.dtype))
        return RoundState(server, clients)

    def downlink(self, hub: PDMMServer) -> torch.Tensor:
        return hub.z - 2 * self.c * hub.x

    def receive(
        self,
        nodes: PDMMClients,
        downlink: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[PDMMClients, LocalProblem]:
        z = (1 - self.theta) * nodes.z + self.theta * downlink
        center = -z / self.c
        return PDMMClients(nodes.x, z), LocalProblem(start=nodes.x, center=center, rho=self.c)

    def finish(self, nodes: PDMMClients, trained: torch.Tensor) -> PDMMClients:
        return PDMMClients(trained, nodes.z)

    def encode(self, nodes: PDMMClients, row_models: torch.Tensor) -> torch.Tensor:
        return nodes.z + 2 * self.c * row_models

    def combine(
        self,
        state: RoundState,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> RoundState:
        server = state.hub
        edges = context.open
        if edges is not None and bool(edges.all()):
            edges = None
        if edges is not None:
            accepted = accepted & edges
        z = server.z.clone()
        z[accepted] = (1 - self.theta) * z[accepted] + self.theta * messages[accepted]
        if edges is not None and not bool(edges.any()):
            return RoundState(server._replace(z=z), state.nodes)
        votes = z if edges is None else z[edges]
        if not self.is_robust:
            return RoundState(
                PDMMServer(z, votes.mean(dim=0) / self.c, server.rule_state), state.nodes
            )
        ids = torch.ones(self.num_clients, dtype=torch.bool) if edges is None else edges
        x, rule_state = server_rule(
            self.robust, votes / self.c, server.x, server.rule_state, ids, context
        )
        return RoundState(PDMMServer(z, x, rule_state), state.nodes)

    def models(self, state: RoundState) -> tuple[torch.Tensor, torch.Tensor]:
        return state.hub.x, state.nodes.x

    def reopen(self, hub: PDMMServer, nodes: list[int]) -> PDMMServer:
        """Re-open the edges of `nodes` at z_s[i] = c x_s, which leaves x_s unchanged."""
        if not nodes:
            return hub
        z = hub.z.clone()
        z[nodes] = self.c * hub.x
        return hub._replace(z=z)
