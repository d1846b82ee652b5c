"""Attacks on the consensus mechanism itself: gossip's mixing step and PDMM's dual dynamics.

Each is computed per receiver in the space the receiver combines (`fedpdmm.rounds.strike`): a
Byzantine node's rows to receiver j are built from the rows j combines this round (its honest
neighbours' votes or models, and with a server the other clients'), so on a graph a Byzantine
node sends each neighbour a different message.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from fedpdmm.attacks.base import (
    Attack,
    StrikeContext,
    check_int,
    check_real,
    column_std,
    honest_rows,
    set_param,
)


@dataclass(frozen=True)
class Dissensus(Attack):
    """Dissensus (He, Karimireddy, Jaggi, "Byzantine-robust decentralized learning via
    self-centered clipping", 2022): cancel, or reverse, the receiver's consensus step.

    For receiver j with model x_j, honest rows v_h with weights w_h and Byzantine weights w_b,
    every Byzantine row is x_j - epsilon * sum_h w_h (v_h - x_j) / sum_b w_b. Gossip then moves
    x_j by (1 - epsilon) sum_h w_h (v_h - x_j): epsilon = 1 cancels its consensus step, epsilon > 1
    pushes it away from its honest neighbours. For PDMM the rows are the votes that enter the
    receiver's prox centre (uniform weights), so the centre is pulled back to, or past, x_j; with
    a server the receiver is the server and x_j its model.

    Knows: the receiver's model, its honest neighbours' rows this round and the weights it uses
    (omniscient). Keeps: nothing. epsilon (default 1.5, as in the authors' code a parameter of
    the attack) must be >= 0.
    """

    epsilon: float = 1.5
    context: StrikeContext | None = dataclasses.field(default=None, repr=False, compare=False)
    name: ClassVar[str] = "dissensus"
    omniscient: ClassVar[bool] = True
    needs_receiver: ClassVar[bool] = True

    def __post_init__(self) -> None:
        set_param(self, "epsilon", check_real(self, "epsilon", low=0.0))

    def bind(self, context: StrikeContext) -> Dissensus:
        return dataclasses.replace(self, context=context)

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        honest = honest_rows(self, messages, byzantine)
        if self.context is None or self.context.base is None:
            raise self.fail("needs the receiver's model (it runs inside a round's strike)")
        base = self.context.base.to(honest)
        weights = self.context.weights
        if weights is None:
            weights = torch.ones(messages.shape[0], dtype=honest.dtype)
        weights = weights.to(honest)
        pull = (weights[~byzantine].unsqueeze(1) * (honest - base)).sum(dim=0)
        return base - self.epsilon * pull / weights[byzantine].sum()


@functools.lru_cache(maxsize=4)
def sign_pattern(seed: int, dim: int) -> Tensor:
    """A fixed pattern in {-1, +1}^dim drawn from `seed` (each sign with probability 1/2)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(dim, generator=gen, device=gen.device) < 0.5, -1.0, 1.0)


@dataclass(frozen=True)
class Drift(Attack):
    """Stealthy drift: a row inside the honest spread that leans the same way every round.

    row = mu + kappa * sigma * s, with mu, sigma the coordinate-wise mean and sample std of the
    honest rows the attacker sees for the receiver (on a graph also the receiver's own model) and
    s a fixed sign pattern in {-1, +1}^d drawn once from `pattern_seed` (the same in every round
    and for every receiver). With kappa <= 1 the row stays within about one standard deviation of
    the honest mean, so trimming and distance filters keep it. It leans the same way every round:
    at the message target it sets the receiver's vote (the relaxed dual) to that row each round,
    so the bias enters every centre and, through the primal-dual coupling, every later message;
    at the model and update targets it enters the message through the sender's dual, which the
    receiver's theta-relaxed dual integrates round after round.

    Knows: the honest rows the receiver combines this round (omniscient). Keeps: its sign
    pattern. Where a receiver has fewer than two honest rows its Byzantine rows stay honest.
    kappa (default 1.0) >= 0.
    """

    kappa: float = 1.0
    pattern_seed: int = 0
    name: ClassVar[str] = "drift"
    omniscient: ClassVar[bool] = True
    min_honest: ClassVar[int] = 2

    def __post_init__(self) -> None:
        set_param(self, "kappa", check_real(self, "kappa", low=0.0))
        check_int(self, "pattern_seed", low=0)

    def pattern(self, dim: int) -> Tensor:
        """The fixed sign pattern s `[dim]` (drawn once per seed and size: callers must not
        write into it)."""
        return sign_pattern(self.pattern_seed, dim)

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        honest = honest_rows(self, messages, byzantine, minimum=self.min_honest)
        sign = self.pattern(messages.shape[1]).to(honest)
        mean = honest.mean(dim=0)
        return mean + self.kappa * column_std(honest, mean) * sign


@dataclass(frozen=True)
class Replay(Attack):
    """Dual replay: each Byzantine node re-sends its own honest row of `lag` rounds ago.

    At the message target the replayed PDMM message carries the sender's stale dual z(i|j) and
    stale model, so the receiver's dual is overwritten (theta = 1) or pulled (theta < 1) back to
    an old state every round; at the model target the current dual carries a stale model, at the
    update target the current start a stale update; for FedAvg and gossip it is a stale model.
    In round 1 it sends its current row, then its round-1 row until `lag` rounds have passed.
    The rows are perfectly well-formed and were once honest, so no filter on a single round can
    tell them apart from slow clients.

    Knows: only its own past rows. Keeps: its last `lag` honest rows (at the attack's target).
    lag (default 5) >= 1.
    """

    lag: int = 5
    context: StrikeContext | None = dataclasses.field(default=None, repr=False, compare=False)
    name: ClassVar[str] = "replay"

    def __post_init__(self) -> None:
        check_int(self, "lag", low=1)

    @property
    def history(self) -> int:  # type: ignore[override]
        return self.lag

    def bind(self, context: StrikeContext) -> Replay:
        return dataclasses.replace(self, context=context)

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        if self.context is None or self.context.past is None:
            return messages[byzantine]
        return self.context.past
