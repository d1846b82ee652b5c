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
                         x_s  =  argmin <sum_{open i} A(s|i) z_s[i], x> + (c |open| / 2) ||x||^2
                              =  mean_{open i} z_s[i] / c

At theta = 1 the server's rows z_s[i] / c = 2 x_i - v_i are FedSplit's uploads (Pathak and
Wainwright 2020) and x_s is their mean.

Initialisation: z_s[i] = c x0 and z_i = -c x0, so x_s starts at the initial model x0 and every
client's first prox centre is x0 (zero duals would start the server at the zero model).

Rejection: a message that is not accepted (non-finite, malformed, or missing on a transport)
closes that client's edge: the server's mean and degree leave it out for as long as its messages
are not accepted, so the fixed point is that of the clients whose messages are accepted (no stale
or zero vote weighs on x_s). When a message is accepted again the edge re-opens at
z_s[i] = c x_s before the relaxation, which alone leaves x_s unchanged.

Lost messages (`[network]`, `fedpdmm.channel`): a message that does not arrive is not a fault.
The receiver keeps the previous dual of that edge and the edge stays open (stochastic PDMM):
a client whose downlink is lost, or that is not sampled, keeps z_i and x_i; the server keeps
z_s[i] for a client whose uplink is lost, so x_s still averages every open edge, some of them
stale. With theta < 1 this is a randomized coordinate update of PDMM's averaged operator, which
converges to the exact optimum (Bastianello, Todescato, Carli, Schenato; tested on quadratics).

Robust PDMM (`robust`): x_s = x_s + rule(z_s / c - x_s) over the open edges, a robust estimate in
place of the mean of the votes z_s[i] / c (see `fedpdmm.algorithms.robust`); with `mean` it is
PDMM exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch

from fedpdmm.algorithms.base import (
    CombineContext,
    LocalProblem,
    RoundState,
    ServerAlgorithm,
    kept_open,
)
from fedpdmm.algorithms.fedavg import server_rule
from fedpdmm.algorithms.robust import RobustCombine


class PDMMServer(NamedTuple):
    z: torch.Tensor  # [n, d] z(s|i)
    x: torch.Tensor  # [d]
    open: torch.Tensor  # [n] bool: the edges in the server's combination
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
    has_echo: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config, network, robust, sizes) -> PDMMStar:
        return cls(network.num_nodes, c=config.pdmm.c, theta=config.pdmm.theta, robust=robust)

    @property
    def echo_relaxation(self) -> float:
        return self.theta

    def init(self, x0: torch.Tensor) -> RoundState:
        rows = x0.expand(self.num_clients, -1)
        open_edges = torch.ones(self.num_clients, dtype=torch.bool)
        server = PDMMServer(self.c * rows, x0.clone(), open_edges)
        return RoundState(server, PDMMClients(rows.clone(), -self.c * rows))

    def downlink(self, hub: PDMMServer) -> torch.Tensor:
        return torch.add(hub.z, hub.x, alpha=-2 * self.c)

    def receive(
        self,
        nodes: PDMMClients,
        downlink: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[PDMMClients, LocalProblem]:
        z = downlink if self.theta == 1 else torch.lerp(nodes.z, downlink, self.theta)
        problem = LocalProblem(start=nodes.x, center=z, rho=self.c, center_scale=-1 / self.c)
        return PDMMClients(nodes.x, z), problem

    def finish(self, nodes: PDMMClients, trained: torch.Tensor, steps=None) -> PDMMClients:
        return PDMMClients(trained, nodes.z)

    def encode(self, nodes: PDMMClients, row_models: torch.Tensor) -> torch.Tensor:
        return torch.add(nodes.z, row_models, alpha=2 * self.c)

    def echo(self, state: RoundState, rows: torch.Tensor) -> torch.Tensor:
        """The server's dual of the edges of clients `rows`, built from their messages and sent
        back to them in the next downlink."""
        return state.hub.z[rows]

    def votes(self, state: RoundState, messages: torch.Tensor) -> torch.Tensor:
        """What the server combines from each message row: ((1 - theta) z_s + theta y) / c."""
        return torch.lerp(state.hub.z, messages, self.theta) / self.c

    def from_votes(self, state: RoundState, votes: torch.Tensor, rows: torch.Tensor):
        """The messages of `rows` whose votes are `votes` (the inverse of `votes`)."""
        return (self.c * votes - (1 - self.theta) * state.hub.z[rows]) / self.theta

    def combine(
        self,
        state: RoundState,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> RoundState:
        server = state.hub
        if bool(accepted.all()) and bool(server.open.all()):  # one pass over [n, d]
            z = messages if self.theta == 1 else torch.lerp(server.z, messages, self.theta)
            x, rule_state = self.estimate(z, server, accepted, context)
            return RoundState(PDMMServer(z, x, accepted, rule_state), state.nodes)
        z = server.z.clone()
        reopened = accepted & ~server.open
        if bool(reopened.any()):
            z[reopened] = self.c * server.x
        z[accepted] = (1 - self.theta) * z[accepted] + self.theta * messages[accepted]
        open_edges = kept_open(server.open, accepted, context)
        if not bool(accepted.any()):
            return RoundState(server._replace(z=z, open=open_edges), state.nodes)
        x, rule_state = self.estimate(z, server, open_edges, context)
        return RoundState(PDMMServer(z, x, open_edges, rule_state), state.nodes)

    def estimate(
        self, z: torch.Tensor, server: PDMMServer, open_edges: torch.Tensor, context: CombineContext
    ) -> tuple[torch.Tensor, Any]:
        """x_s from the duals of the open edges: their mean / c, or the robust rule's estimate."""
        duals = z if bool(open_edges.all()) else z[open_edges]
        if not self.is_robust:
            return duals.mean(dim=0) / self.c, server.rule_state
        dropped = int((~open_edges).sum())
        return server_rule(
            self.robust, duals / self.c, server.x, server.rule_state, open_edges, context, dropped
        )

    def combination(
        self,
        state: RoundState,
        votes: torch.Tensor,
        accepted: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> tuple[torch.Tensor, Any]:
        """x_s from the votes z_s / c of the accepted edges (see `votes`)."""
        return self.estimate(self.c * votes, state.hub, accepted, context)

    def models(self, state: RoundState) -> tuple[torch.Tensor, torch.Tensor]:
        return state.hub.x, state.nodes.x
