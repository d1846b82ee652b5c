"""SCAFFOLD (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning", ICML 2020), with the control-variate update of option II.

The server holds the model x and a control variate c; client i holds its control variate c_i
(zero at the start). One round, with K local steps of size lr:

    server -> client i:  (x, c)
    client i:            y_i = K SGD steps on f_i(y) + <c - c_i, y> from x
                         (each step y <- y - lr (g_i(y) - c_i + c))
                         c_i+ = c_i - c + (x - y_i) / (K lr)                    (option II)
    client i -> server:  (y_i, c_i+ - c_i)
    server:              x <- x + server_lr (mean_S y_i - x)
                         c <- c + (|S| / n) mean_S (c_i+ - c_i)       (S: accepted messages)

Under partial participation (`[network]`) this is the paper's sampled-client update (its
Algorithm 1 with S the sampled clients whose messages arrived); clients outside S keep their c_i.
A client that ran fewer local steps (a straggler) divides by the steps it ran.

A client transmits its model y_i (as in FedAvg, so the `model` and `message` attack targets
coincide on the model half) next to its control-variate change, one `[2d]` row. With a robust
rule (`scaffold+trimmed_mean`) the rule replaces the mean of the model updates y_i - x; the
control variates are averaged over the accepted messages. `scaffold.server_lr` (default 1).
A client's state is its control variate: a Byzantine client keeps its honest one.
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
    missing_rows,
)
from fedpdmm.algorithms.fedavg import server_rule
from fedpdmm.algorithms.robust import RobustCombine


class ScaffoldServer(NamedTuple):
    x: torch.Tensor  # [d] global model
    c: torch.Tensor  # [d] server control variate
    rule_state: Any = None


class ScaffoldClients(NamedTuple):
    x: torch.Tensor  # [m, d] model after the last local training
    c: torch.Tensor  # [m, d] control variate c_i
    start: torch.Tensor  # [m, d] the global model received this round
    server_c: torch.Tensor  # [m, d] the server control variate received this round
    delta_c: torch.Tensor  # [m, d] c_i+ - c_i of the last round


@dataclass(frozen=True)
class Scaffold(ServerAlgorithm):
    num_clients: int
    steps: int
    lr: float
    server_lr: float = 1.0
    robust: RobustCombine | None = None
    name: ClassVar[str] = "scaffold"

    @classmethod
    def from_config(cls, config, network, robust, sizes) -> Scaffold:
        return cls(
            network.num_nodes,
            steps=config.local.steps,
            lr=config.local.lr,
            server_lr=config.scaffold.server_lr,
            robust=robust,
        )

    def message_size(self, dim: int) -> int:
        return 2 * dim

    def init(self, x0: torch.Tensor) -> RoundState:
        rows = x0.expand(self.num_clients, -1)
        zeros = torch.zeros_like(rows)
        clients = ScaffoldClients(rows.clone(), zeros, rows.clone(), zeros, zeros)
        return RoundState(ScaffoldServer(x0.clone(), torch.zeros_like(x0)), clients)

    def downlink(self, hub: ScaffoldServer) -> torch.Tensor:
        return torch.cat([hub.x, hub.c]).expand(self.num_clients, -1)

    def receive(
        self,
        nodes: ScaffoldClients,
        downlink: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[ScaffoldClients, LocalProblem]:
        start, server_c = downlink.chunk(2, dim=1)
        nodes = nodes._replace(start=start, server_c=server_c)
        return nodes, LocalProblem(start=start, center=None, rho=0.0, linear=server_c - nodes.c)

    def finish(
        self, nodes: ScaffoldClients, trained: torch.Tensor, steps: torch.Tensor | None = None
    ) -> ScaffoldClients:
        """Option II with the steps each client ran (`steps` `[m]`; None: K)."""
        if steps is None:
            scale = self.steps * self.lr
        else:
            scale = (steps.to(trained.dtype) * self.lr).unsqueeze(1)
        updated = nodes.c - nodes.server_c + (nodes.start - trained) / scale
        return nodes._replace(x=trained, c=updated, delta_c=updated - nodes.c)

    def encode(self, nodes: ScaffoldClients, row_models: torch.Tensor) -> torch.Tensor:
        return torch.cat([row_models, nodes.delta_c], dim=1)

    def combine(
        self,
        state: RoundState,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> RoundState:
        server = state.hub
        if not bool(accepted.any()):
            return state
        x, rule_state = self.combination(state, messages, accepted, context)
        delta_c = messages[accepted, x.numel() :]
        c = server.c + delta_c.sum(dim=0) / self.num_clients
        return RoundState(ScaffoldServer(x, c, rule_state), state.nodes)

    def combination(
        self,
        state: RoundState,
        votes: torch.Tensor,
        accepted: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> tuple[torch.Tensor, Any]:
        """The new global model from the model halves of the accepted rows."""
        server = state.hub
        models = votes[accepted, : server.x.numel()]
        rule_state = server.rule_state
        if self.is_robust:
            dropped, absent = missing_rows(accepted, context)
            combined, rule_state = server_rule(
                self.robust, models, server.x, rule_state, accepted, context, dropped, absent
            )
        else:
            combined = models.mean(dim=0)
        return server.x + self.server_lr * (combined - server.x), rule_state

    def receiver_base(self, state: RoundState, receiver: int) -> torch.Tensor:
        """Where the server's combination of a `[2d]` row starts: its model for the model half,
        zero for the control-variate change (no change)."""
        server = state.hub
        return torch.cat([server.x, torch.zeros_like(server.c)])

    def models(self, state: RoundState) -> tuple[torch.Tensor, torch.Tensor]:
        return state.hub.x, state.nodes.x
