"""Omniscient attacks: the Byzantine rows are computed from the honest rows.

They model a colluding attacker who sees every honest message (or simulates them well); none can
run on a real deployment where a node sees only its own message. Statistics of the honest rows use
a working dtype of at least float32; the sample standard deviation (divisor h - 1, h honest rows)
is used throughout, as in the reference code of ALIE and of Shejwalkar and Houmansadr, and in ByzFL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar

import torch
from torch import Tensor

from fedpdmm.attacks.base import (
    Attack,
    check_choice,
    check_real,
    column_std,
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
        return -column_std(honest)
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
        mean = honest.mean(dim=0)
        return mean - z * column_std(honest, mean)


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
