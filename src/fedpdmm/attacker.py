"""What Byzantine nodes remember between rounds: `attack.state`, and their own past rows.

`attack.state = "honest"` (the default): a Byzantine node keeps the state an honest node would
have. It knows what it sent and what it would have sent honestly, so it removes the direct echo
of its own corruption from what it receives:

- PDMM with a server: the downlink y(s|b) = z_s[b] - 2 c x_s carries the server's dual of b's
  edge, z_s[b], which the server built from b's corrupted messages. b keeps a shadow of that dual
  as its honest messages would have built it (z <- (1 - theta) z + theta y_honest) and receives
  y(s|b) + shadow - z_s[b]. The server's model x_s, which the attack did move, is not undone.
- PDMM on a graph: neighbour j's message y(j|b) = z(j|b) + 2 c A(j|b) x_j carries j's dual of the
  edge, built from b's messages to j; b receives it with z(j|b) replaced by its shadow, per edge.
  Byzantine neighbours collude: they send each other their honest messages, so neither's state
  absorbs the other's corruption.
- FedAvg, FedProx, gossip: nodes keep no state that echoes their own messages (FedAvg clients
  restart from the global model; a gossip node's own model enters its mix directly), so the two
  values coincide. SCAFFOLD: the server's control variate is an average over all clients, not an
  echo of one edge; a Byzantine client's own control variate is computed honestly either way.

`attack.state = "received"`: a Byzantine node follows the protocol on whatever comes back, as a
node with a faulty transmitter would; its duals absorb the echo of its corrupted messages, so its
corruption partly cancels from one round to the next.

The simulator reads the receivers' duals from the state; a real attacker tracks them from what it
sent and the protocol's rules (the Flower client does so, `fedpdmm.flower.client`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from fedpdmm.algorithms.base import Algorithm, RoundState


@dataclass
class AttackerMemory:
    """The Byzantine nodes' memory in one combination (rows: their message rows `[m]` mask)."""

    shadow: torch.Tensor | None = None  # [k, w] receivers' duals as honest messages build them
    history: deque = field(default_factory=deque)  # [k, w] own rows of the last rounds
    pending_honest: torch.Tensor | None = None  # [k, w] honest versions of delayed rows
    receivers: dict = field(default_factory=dict)  # receiver -> what its attacker keeps

    def echo_correction(
        self, algorithm: Algorithm, state: RoundState, rows: torch.Tensor
    ) -> torch.Tensor | None:
        """shadow - actual receiver duals `[k, w]` of the Byzantine rows (None: no echo)."""
        actual = algorithm.echo(state, rows.nonzero().flatten())
        if actual is None:
            return None
        if self.shadow is None:
            self.shadow = actual.clone()
        return self.shadow - actual

    @staticmethod
    def correct_downlink(
        downlink: torch.Tensor, rows: torch.Tensor, correction: torch.Tensor
    ) -> torch.Tensor:
        """With a server: the Byzantine clients' downlink rows with the echo removed."""
        corrected = downlink.clone()
        corrected[rows] += correction.to(corrected.dtype)
        return corrected

    @staticmethod
    def correct_incoming(
        messages: torch.Tensor,
        rows: torch.Tensor,
        correction: torch.Tensor,
        reverse: torch.Tensor,
    ) -> torch.Tensor:
        """On a graph: the messages j -> b to Byzantine b with the echo of b -> j removed, in
        place (`messages` is the round's own tensor)."""
        incoming = reverse[rows.nonzero().flatten()]
        return messages.index_add_(0, incoming, correction.to(messages.dtype))

    def remember(
        self,
        algorithm: Algorithm,
        honest_rows: torch.Tensor,
        rows: torch.Tensor | None = None,
        conditions=None,
        senders: torch.Tensor | None = None,
    ) -> None:
        """Absorb this round's honest Byzantine messages `[k, w]` (Byzantine rows `rows` `[m]`)
        into the shadow, as the receivers would. Over an unreliable network (`conditions`,
        `fedpdmm.channel`) only the rows that arrive are absorbed; a delayed row is absorbed
        in the round it arrives, with the honest message it was built from. The attacker
        knows which of its messages arrived (as a sender with acknowledgements would)."""
        if self.shadow is None:
            return
        theta = algorithm.echo_relaxation
        if conditions is None:
            self.shadow.lerp_(honest_rows.to(self.shadow.dtype), theta)  # the memory's own tensor
            return
        own = senders[rows]
        arrived = conditions.arrived[rows]
        delivered = honest_rows
        busy = conditions.busy[own]
        if self.pending_honest is not None and bool(busy.any()):
            delivered = torch.where(busy.unsqueeze(1), self.pending_honest, honest_rows)
        withheld = conditions.withheld[own]
        self.pending_honest = honest_rows.clone() if bool(withheld.any()) else None
        relaxed = torch.lerp(self.shadow, delivered, theta)
        self.shadow = torch.where(arrived.unsqueeze(1), relaxed, self.shadow)

    def keep_history(self, space_rows: torch.Tensor, rows: torch.Tensor, depth: int) -> None:
        """Keep the Byzantine rows `[k, w]` of this round (for attacks that replay `depth` rounds
        back)."""
        if depth <= 0 or not bool(rows.any()):
            return
        self.history.append(space_rows.clone())
        while len(self.history) > depth:
            self.history.popleft()

    def past(self, depth: int, rows: torch.Tensor) -> torch.Tensor | None:
        """`[m, w]` with the Byzantine rows of `depth` rounds ago (the oldest kept, early on)."""
        if depth <= 0 or not self.history:
            return None
        old = self.history[0]
        full = torch.zeros(rows.shape[0], old.shape[1], dtype=old.dtype)
        full[rows] = old
        return full
