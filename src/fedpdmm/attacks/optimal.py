"""Attacks tuned against the combination in use: the scale of ALIE's and IPM's rows found by a
line search (ByzFL's Optimal ALIE and Optimal IPM)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
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
from fedpdmm.attacks.omniscient import alie_z, coordinate_mean


def line_search_max(
    objective: Callable[[float], float],
    low: float,
    high: float,
    grid_points: int,
    refine_steps: int,
    extra: tuple[float, ...] = (),
) -> float:
    """Best-effort argmax of `objective` on [low, high]: grid, then golden-section refinement.

    Evaluates `grid_points` evenly spaced points and the `extra` candidates, then spends
    `refine_steps` evaluations on a golden-section search in the grid cell either side of the best
    point. Returns the best point seen (the first one on ties); NaN scores never win.
    """
    best_x, best_y = low, -math.inf

    def score(x: float) -> float:
        nonlocal best_x, best_y
        y = objective(x)
        if y > best_y:
            best_x, best_y = x, y
        return y

    for x in [*torch.linspace(low, high, grid_points, dtype=torch.float64).tolist(), *extra]:
        score(x)
    cell = (high - low) / (grid_points - 1)
    a, b = max(low, best_x - cell), min(high, best_x + cell)
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    score_c = score(c) if refine_steps >= 1 else -math.inf
    score_d = score(d) if refine_steps >= 2 else -math.inf
    for _ in range(refine_steps - 2):
        if score_c > score_d:
            b, d, score_d = d, c, score_c
            c = b - inv_phi * (b - a)
            score_c = score(c)
        else:
            a, c, score_c = c, d, score_d
            d = a + inv_phi * (b - a)
            score_d = score(d)
    return best_x


@dataclass(frozen=True)
class _LineSearched(Attack):
    """Shared search of the attack scale against a bound aggregation rule (ByzFL-style).

    The scale s in [scale_min, scale_max] maximises ||agg(attacked stack) - agg(stack)||_2, how
    far the attack moves the combination from what it would have been had the Byzantine rows
    been honest: a grid of `grid_points` scales, then `refine_steps` golden-section evaluations
    (see `line_search_max`), so `grid_points + refine_steps` calls of `aggregator` (`[n, d] ->
    [d]`) per attack call. In a run, `bind` replaces `aggregator` by the combination the
    receiver actually applies this round (its base, reference, centre, relaxation and target:
    `fedpdmm.rounds.strike`); the default, the coordinate mean, is for direct calls.
    """

    aggregator: Callable[[Tensor], Tensor] = coordinate_mean
    scale_min: float = 0.0
    scale_max: float = 10.0
    grid_points: int = 21
    refine_steps: int = 12
    omniscient: ClassVar[bool] = True
    needs_rule: ClassVar[bool] = True
    min_honest: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if not callable(self.aggregator):
            raise self.fail(f"aggregator must be a callable [n, d] -> [d], got {self.aggregator!r}")
        set_param(self, "scale_min", check_real(self, "scale_min"))
        set_param(self, "scale_max", check_real(self, "scale_max"))
        if self.scale_max <= self.scale_min:
            raise self.fail(
                f"scale_max must be > scale_min={self.scale_min}, got scale_max={self.scale_max}"
            )
        check_int(self, "grid_points", low=2)
        check_int(self, "refine_steps", low=0)

    def bind(self, context: StrikeContext) -> _LineSearched:
        """This attack searching against the receiver's real combination, when one is given."""
        if context.combine is None:
            return self
        return dataclasses.replace(self, aggregator=context.combine)

    def direction(self, honest: Tensor) -> tuple[Tensor, Tensor]:
        """(base, step) `[d]` each: the Byzantine row at scale s is base + s * step."""
        raise NotImplementedError

    def candidates(self, n: int, f: int) -> tuple[float, ...]:
        """Scales evaluated besides the grid."""
        return ()

    def best_scale(self, messages: Tensor, byzantine: Tensor) -> float:
        """The scale the search picks for these messages `[n, d]` and Byzantine mask `[n]`."""
        return self._search(messages, byzantine)[0]

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        scale, base, step = self._search(messages, byzantine)
        return base + scale * step

    def displacement(self, messages: Tensor, byzantine: Tensor, scale: float) -> float:
        """||agg(stack at `scale`) - agg(messages)||: the objective the search maximises."""
        honest = honest_rows(self, messages, byzantine, minimum=self.min_honest)
        base, step = self.direction(honest)
        return self._objective(messages, byzantine, base, step)(scale)

    def _objective(self, messages: Tensor, byzantine: Tensor, base: Tensor, step: Tensor):
        unattacked = self._aggregate(messages)

        def moved(scale: float) -> float:
            stack = messages.clone()
            stack[byzantine] = (base + scale * step).to(messages.dtype)
            aggregate = self._aggregate(stack)
            return float(torch.linalg.vector_norm(aggregate.to(unattacked) - unattacked))

        return moved

    def _aggregate(self, stack: Tensor) -> Tensor:
        aggregate = self.aggregator(stack)
        if not isinstance(aggregate, Tensor) or aggregate.dim() != 1:
            got = tuple(aggregate.shape) if isinstance(aggregate, Tensor) else aggregate
            raise self.fail(f"aggregator must map [n, d] -> [d], got {got!r}")
        return aggregate

    def _search(self, messages: Tensor, byzantine: Tensor) -> tuple[float, Tensor, Tensor]:
        honest = honest_rows(self, messages, byzantine, minimum=self.min_honest)
        base, step = self.direction(honest)
        moved = self._objective(messages, byzantine, base, step)

        extra = tuple(
            s
            for s in self.candidates(messages.shape[0], int(byzantine.sum()))
            if self.scale_min <= s <= self.scale_max
        )
        scale = line_search_max(
            moved, self.scale_min, self.scale_max, self.grid_points, self.refine_steps, extra
        )
        return scale, base, step


@dataclass(frozen=True)
class OptimalALIE(_LineSearched):
    """ALIE with z tuned against the rule in use: row = mu - z* sigma (ByzFL's Optimal ALIE).

    z* maximises ||agg(stack) - agg(unattacked stack)|| over [scale_min, scale_max] (see
    `_LineSearched`); the paper's z (`alie_z`) is also tried when defined and in range, so under
    the bound rule the result moves the aggregate at least as far as plain `alie`.

    Knows: the rows its receiver combines and, bound per round through `bind`, the combination
    that receiver applies. Keeps: nothing. Sends that receiver mu - z* sigma (honest rows if it
    has fewer than two honest rows).
    """

    name: ClassVar[str] = "optimal_alie"
    min_honest: ClassVar[int] = 2

    def direction(self, honest: Tensor) -> tuple[Tensor, Tensor]:
        mean = honest.mean(dim=0)
        return mean, -column_std(honest, mean)

    def candidates(self, n: int, f: int) -> tuple[float, ...]:
        return (alie_z(n, f),) if math.floor(n / 2 + 1) - f > 0 else ()


@dataclass(frozen=True)
class OptimalIPM(_LineSearched):
    """IPM with epsilon tuned against the rule in use: row = -epsilon* mean(honest) (ByzFL).

    epsilon* maximises ||agg(stack) - agg(unattacked stack)|| over [scale_min, scale_max].

    Knows: the rows its receiver combines and, bound per round through `bind`, the combination
    that receiver applies. Keeps: nothing. Sends that receiver -epsilon* times their honest mean.
    """

    name: ClassVar[str] = "optimal_ipm"

    def direction(self, honest: Tensor) -> tuple[Tensor, Tensor]:
        mu = honest.mean(dim=0)
        return torch.zeros_like(mu), -mu
