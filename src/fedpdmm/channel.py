"""Unreliable networks: lost messages, partial participation and stragglers (`[network]`).

Every round the channel draws, from `generator(seed, "network", round)`, which nodes take part
and which messages arrive; the round step (`fedpdmm.rounds.step`) applies the draw the same way
in process and over a transport. With the defaults (no loss, full participation, no stragglers)
nothing is drawn and the round is exactly the reliable one.

- `participation = p`: each node (not busy with a delayed message, below) is online with
  probability p. With a server these are the sampled clients (Flower's fraction_fit, drawn
  independently per client); on a graph, randomly activated nodes. An offline node neither
  receives, trains nor sends, and keeps its state; messages addressed to it are not delivered.
- `loss = q`: every transmitted message is lost independently with probability q: with a
  server each online client's downlink and each uplink; on a graph each directed edge's message
  whose two ends are online. A client whose downlink is lost never learns that the round
  started, so it does not work this round (as if offline; the lost downlink is counted).
- `stragglers = s`: int(s * working + 1/2) of the working nodes, drawn uniformly each round, are
  slow. `straggler_mode = "partial"`: they run only `max(1, round(straggler_work * K))` of
  their K local steps. `"delay"`: their messages of round t arrive in round t + 1 (each again
  subject to `loss`), and they spend round t + 1 delivering them (busy: no new work, no
  downlink).

A message that does not arrive is not evidence of a fault: the receiver keeps what it had for
that row (see each algorithm's docstring), whereas a message that arrives non-finite or
malformed is rejected and closes its edge (`fedpdmm.algorithms.base`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedpdmm.seeding import generator

__all__ = ["Channel", "RoundConditions"]


@dataclass(frozen=True)
class RoundConditions:
    """One round's draw. Node masks are `[n]` bool, row masks `[m]` bool (message rows)."""

    working: torch.Tensor  # [n] nodes that receive, train and send this round
    steps: torch.Tensor  # [n] int64 local steps of each working node (K, or fewer)
    withheld: torch.Tensor  # [n] working nodes whose messages arrive next round
    busy: torch.Tensor  # [n] nodes whose messages of last round arrive this round
    arrived: torch.Tensor  # [m] rows that reach their receiver this round
    lost: int  # messages lost this round (downlinks and uplinks, or edge messages)

    @property
    def online(self) -> torch.Tensor:
        """`[n]` nodes that work or deliver this round."""
        return self.working | self.busy


@dataclass
class Channel:
    """The seeded network of one combination; holds the messages delayed to the next round."""

    loss: float
    participation: float
    stragglers: float
    straggler_mode: str
    straggler_work: float
    steps: int  # K
    senders: torch.Tensor  # [m] the node that sends each row
    receivers: torch.Tensor | None  # [m] the node that receives each row (None: the server)
    seed: int
    nodes: int | None = None  # n (None: one per row with a server, the senders on a graph)
    pending: torch.Tensor | None = field(default=None, repr=False)  # [m, w] delayed messages
    busy: torch.Tensor | None = field(default=None, repr=False)  # [n] delivering next round

    @classmethod
    def from_config(cls, config, network) -> Channel | None:
        """The config's channel, or None for a reliable network."""
        settings = config.network
        if settings.reliable:
            return None
        receivers = None if network.edges is None else network.edges.dst
        return cls(
            settings.loss,
            settings.participation,
            settings.stragglers,
            settings.straggler_mode,
            settings.straggler_work,
            config.local.steps,
            network.senders,
            receivers,
            config.seed,
            network.num_nodes,
        )

    @property
    def num_nodes(self) -> int:
        if self.nodes is not None:
            return self.nodes
        return int(self.senders.max()) + 1 if self.receivers is not None else len(self.senders)

    def partial_steps(self) -> int:
        return max(1, round(self.straggler_work * self.steps))

    def draw(self, round_index: int) -> RoundConditions:
        """The round's conditions (every draw made, whatever the settings, so that one
        setting's stream does not shift another's)."""
        n, m = self.num_nodes, len(self.senders)
        gen = generator(self.seed, "network", round_index)
        online_draw = torch.rand(n, generator=gen, dtype=torch.float64)
        downlink_draw = torch.rand(n, generator=gen, dtype=torch.float64)
        uplink_draw = torch.rand(m, generator=gen, dtype=torch.float64)
        straggler_order = torch.randperm(n, generator=gen)
        busy = torch.zeros(n, dtype=torch.bool) if self.busy is None else self.busy
        online = (online_draw < self.participation) & ~busy
        lost = 0
        if self.receivers is None:  # the downlink is the instruction to work
            downlink_lost = online & (downlink_draw < self.loss)
            lost += int(downlink_lost.sum())
            working = online & ~downlink_lost
        else:
            working = online
        withheld, steps = self._stragglers(working, straggler_order)
        sending = (working & ~withheld) | busy
        rows = sending.index_select(0, self.senders)
        if self.receivers is not None:
            reachable = (working | busy).index_select(0, self.receivers)
            rows &= reachable
        row_lost = rows & (uplink_draw < self.loss)
        lost += int(row_lost.sum())
        return RoundConditions(working, steps, withheld, busy, rows & ~row_lost, lost)

    def _stragglers(
        self, working: torch.Tensor, order: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(withheld `[n]`, steps `[n]`): the round's slow nodes among the working ones."""
        n = working.shape[0]
        steps = torch.full((n,), self.steps, dtype=torch.int64)
        withheld = torch.zeros(n, dtype=torch.bool)
        count = int(self.stragglers * int(working.sum()) + 0.5)
        if count == 0:
            return withheld, steps
        candidates = order[working.index_select(0, order)]
        slow = candidates[:count]
        if self.straggler_mode == "delay":
            withheld[slow] = True
        else:
            steps[slow] = self.partial_steps()
        return withheld, steps

    def deliver(self, messages: torch.Tensor, conditions: RoundConditions) -> torch.Tensor:
        """The rows as received: a busy node's rows carry its delayed messages; the rows of
        this round's delayed nodes are kept for the next round. `messages` is not modified."""
        delivered = messages
        busy_rows = conditions.busy.index_select(0, self.senders)
        if self.pending is not None and bool(busy_rows.any()):
            delivered = messages.clone()
            delivered[busy_rows] = self.pending[busy_rows].to(messages.dtype)
        withheld_rows = conditions.withheld.index_select(0, self.senders)
        if bool(withheld_rows.any()):
            self.pending = torch.zeros_like(messages)
            self.pending[withheld_rows] = messages[withheld_rows]
        else:
            self.pending = None
        self.busy = conditions.withheld.clone()
        return delivered
