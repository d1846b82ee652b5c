"""Omniscient attacks: the Byzantine rows are computed from the honest rows.

They model a colluding attacker who sees every honest message (or simulates them well); none can
run on a real deployment where a node sees only its own message. Statistics of the honest rows use
a working dtype of at least float32; the sample standard deviation (divisor h - 1, h honest rows)
is used throughout, as in the reference code of ALIE and of Shejwalkar and Houmansadr, and in ByzFL.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar

import torch
from torch import Tensor

from fedpdmm.attacks.base import (
    Attack,
    StrikeContext,
    check_choice,
    check_int,
    check_real,
    honest_rows,
    set_param,
)
from fedpdmm.errors import ConfigError

PERTURBATIONS = ("std", "unit_vec", "sign")


def coordinate_mean(x: Tensor) -> Tensor:
    """The plain average `[n, d] -> [d]`: the default rule optimal attacks are tuned against."""
    return x.mean(dim=0)


def alie_z(n: int, f: int) -> float:
    """ALIE's z for n nodes of which f are Byzantine (Baruch, Baruch, Goldberg, NeurIPS 2019).

    s = floor(n/2 + 1) - f supporters needed for a majority, z = Phi^{-1}((n - s) / n). Undefined
    (ConfigError) when s <= 0, i.e. when the Byzantine nodes already form a majority.
    """
    s = math.floor(n / 2 + 1) - f
    if s <= 0:
        raise ConfigError(
            f"attack 'alie': z = Phi^-1((n - s)/n) with s = floor(n/2 + 1) - f is undefined for "
            f"n={n}, f={f} (s={s} <= 0: Byzantine majority); pass z explicitly"
        )
    return NormalDist().inv_cdf((n - s) / n)


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances `[p, d] x [q, d] -> [p, q]` (no Gram-matrix trick)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square()


def perturbation_vector(honest: Tensor, kind: str) -> Tensor:
    """Shejwalkar and Houmansadr's perturbation p `[d]` from honest rows `[h, d]`.

    "std": p = -std(honest); "unit_vec": p = -mu / ||mu|| (zero when mu = 0); "sign": p = -sign(mu),
    with mu the mean of the honest rows.
    """
    if kind == "std":
        return -honest.std(dim=0)
    mu = honest.mean(dim=0)
    if kind == "sign":
        return -torch.sign(mu)
    norm = torch.linalg.vector_norm(mu)
    return -mu / norm if bool(norm > 0) else torch.zeros_like(mu)


def largest_feasible_gamma(
    feasible: Callable[[float], bool], gamma_init: float, tol: float
) -> float:
    """Shejwalkar and Houmansadr's binary search: largest feasible gamma in [0, 2 gamma_init).

    Start at gamma_init with step gamma_init; after each test move up by step/2 if feasible, else
    down, halving the step; stop once the last feasible gamma and the next proposal differ by at
    most tol. Returns the last feasible gamma (0 if none was).
    """
    gamma, step, success = gamma_init, gamma_init, 0.0
    while abs(success - gamma) > tol:
        if feasible(gamma):
            success = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return success


def min_max_gamma(honest: Tensor, perturbation: Tensor, gamma_init: float, tol: float) -> float:
    """Largest gamma with max_i ||mu + gamma p - g_i||^2 <= max_{i,j} ||g_i - g_j||^2 (Min-Max)."""
    mu = honest.mean(dim=0)
    bound = float(squared_distances(honest, honest).max())

    def feasible(gamma: float) -> bool:
        malicious = (mu + gamma * perturbation).unsqueeze(0)
        return float(squared_distances(malicious, honest).max()) <= bound

    return largest_feasible_gamma(feasible, gamma_init, tol)


def min_sum_gamma(honest: Tensor, perturbation: Tensor, gamma_init: float, tol: float) -> float:
    """Largest gamma with sum_i ||mu + gamma p - g_i||^2 <= min_i sum_j ||g_i - g_j||^2 (Min-Sum).

    The bound takes the min over honest i, as in the authors' released code (the paper's text
    reads "any benign gradient"); it is the stricter reading.
    """
    mu = honest.mean(dim=0)
    bound = float(squared_distances(honest, honest).sum(dim=1).min())

    def feasible(gamma: float) -> bool:
        malicious = (mu + gamma * perturbation).unsqueeze(0)
        return float(squared_distances(malicious, honest).sum()) <= bound

    return largest_feasible_gamma(feasible, gamma_init, tol)


@dataclass(frozen=True)
class ALIE(Attack):
    """A Little Is Enough (Baruch, Baruch, Goldberg, NeurIPS 2019): row = mu - z * sigma.

    mu, sigma: coordinate-wise mean and sample std (divisor h - 1) of the h honest rows, as in
    ByzFL; the paper does not state the divisor. z = None uses the paper's z for n nodes, f
    Byzantine: s = floor(n/2 + 1) - f, z = Phi^{-1}((n - s)/n) (see `alie_z`; ByzFL has no
    such default and fixes z = 1.5). Needs at least two honest rows.

    Knows: the rows its receiver combines (per receiver; on a graph the receiver's own model is one
    more honest row, and n, f are counted there). Keeps: nothing. Sends that receiver mu - z sigma;
    a receiver with fewer than two honest rows gets honest rows.
    """

    z: float | None = None
    name: ClassVar[str] = "alie"
    omniscient: ClassVar[bool] = True
    min_honest: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if self.z is not None:
            set_param(self, "z", check_real(self, "z"))

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        honest = honest_rows(self, messages, byzantine, minimum=self.min_honest)
        z = self.z if self.z is not None else alie_z(messages.shape[0], int(byzantine.sum()))
        return honest.mean(dim=0) - z * honest.std(dim=0)


@dataclass(frozen=True)
class IPM(Attack):
    """Inner Product Manipulation (Xie, Koyejo, Gupta, UAI 2019): row = -epsilon * mean(honest).

    Small epsilon (e.g. 0.1) targets median/Krum-like rules, large epsilon the plain mean.

    Knows: the rows its receiver combines (per receiver; on a graph with the receiver's own model).
    Keeps: nothing. Sends that receiver -epsilon times their honest mean.
    """

    epsilon: float
    name: ClassVar[str] = "ipm"
    omniscient: ClassVar[bool] = True

    def __post_init__(self) -> None:
        set_param(self, "epsilon", check_real(self, "epsilon", low=0.0))

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        return -self.epsilon * honest_rows(self, messages, byzantine).mean(dim=0)


@dataclass(frozen=True)
class _DistanceBounded(Attack):
    """Shared parameters of Min-Max and Min-Sum: row = mu + gamma * p, gamma by binary search."""

    gamma_init: float = 10.0
    tol: float = 1e-5
    perturbation: str = "std"
    omniscient: ClassVar[bool] = True

    @property
    def min_honest(self) -> int:  # type: ignore[override]
        """The std perturbation needs two honest rows, the others one."""
        return 2 if self.perturbation == "std" else 1

    def __post_init__(self) -> None:
        set_param(self, "gamma_init", check_real(self, "gamma_init", low=0.0, low_open=True))
        set_param(self, "tol", check_real(self, "tol", low=0.0, low_open=True))
        check_choice(self, "perturbation", PERTURBATIONS)

    def gamma(self, honest: Tensor, perturbation: Tensor) -> float:
        raise NotImplementedError

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        honest = honest_rows(self, messages, byzantine, minimum=self.min_honest)
        p = perturbation_vector(honest, self.perturbation)
        return honest.mean(dim=0) + self.gamma(honest, p) * p


@dataclass(frozen=True)
class MinMax(_DistanceBounded):
    """Min-Max (Shejwalkar, Houmansadr, "Manipulating the Byzantine", NDSS 2021).

    row = mu + gamma p with the largest gamma in [0, 2 gamma_init) such that
    max_i ||row - g_i||^2 <= max_{i,j} ||g_i - g_j||^2 over honest g; gamma by the paper's binary
    search to tolerance `tol`. p from `perturbation`: "std" (default), "unit_vec" or "sign".

    Knows: the rows its receiver combines (per receiver; on a graph with the receiver's own model).
    Keeps: nothing. Sends that receiver mu + gamma p; fewer than two honest rows: honest rows.
    """

    name: ClassVar[str] = "min_max"

    def gamma(self, honest: Tensor, perturbation: Tensor) -> float:
        return min_max_gamma(honest, perturbation, self.gamma_init, self.tol)


@dataclass(frozen=True)
class MinSum(_DistanceBounded):
    """Min-Sum (Shejwalkar, Houmansadr, "Manipulating the Byzantine", NDSS 2021).

    row = mu + gamma p with the largest gamma in [0, 2 gamma_init) such that
    sum_i ||row - g_i||^2 <= min_i sum_j ||g_i - g_j||^2 over honest g (see `min_sum_gamma`).

    Knows: the rows its receiver combines (per receiver; on a graph with the receiver's own model).
    Keeps: nothing. Sends that receiver mu + gamma p; fewer than two honest rows: honest rows.
    """

    name: ClassVar[str] = "min_sum"

    def gamma(self, honest: Tensor, perturbation: Tensor) -> float:
        return min_sum_gamma(honest, perturbation, self.gamma_init, self.tol)


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
        return honest.mean(dim=0), -honest.std(dim=0)

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
