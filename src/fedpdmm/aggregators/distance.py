"""Rules built on distances between whole rows: Krum, Multi-Krum, Bulyan, geometric median.

Pairwise squared distances come from one Gram matrix (`_kernels.pairwise_sq_distances`), so the
cost is one `[n, d] @ [d, n]` product, not n^2 passes over the rows. Equal scores are ordered by
the rows' values (lexicographically, `_kernels.rank_rows`), so every selection is permutation
invariant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from fedpdmm.aggregators._base import (
    Aggregator,
    check_matrix,
    lower_f,
    need_float,
    need_int,
    need_rows,
    set_field,
)
from fedpdmm.aggregators._kernels import (
    distances_to,
    lowest_row,
    map_column_blocks,
    mean_closest_to_median_rows,
    pairwise_sq_distances,
    rank_rows,
    weighted_rows_sum,
)


def krum_scores(sq_dist: Tensor, f: int, alive: Tensor | None = None, power: float = 2.0) -> Tensor:
    """`[n]` Krum scores: score_i = sum of the k smallest ||x_i - x_j||^power over j != i
    (`power` 2, squared distances, as in Blanchard et al.).

    `sq_dist` is `[n, n]`; `alive` (bool `[n]`) restricts both i and j to s = alive.sum() rows;
    rows not alive score +inf. k = s - f - 2 as in Blanchard et al., NeurIPS 2017, kept within
    [1, s - 1] for the last rounds of Bulyan's selection, where s < 2f + 3.
    """
    n = sq_dist.shape[0]
    alive = torch.ones(n, dtype=torch.bool) if alive is None else alive
    blocked = ~(alive[:, None] & alive[None, :]) | torch.eye(n, dtype=torch.bool)
    others = sq_dist.masked_fill(blocked, math.inf)
    rows = int(alive.sum())
    neighbours = min(max(rows - f - 2, 1), rows - 1)
    nearest = others.topk(neighbours, dim=1, largest=False).values  # the same for any power
    if power != 2.0:
        nearest = nearest.clamp_min(0.0).pow(power / 2.0)
    return nearest.sum(dim=1).masked_fill(~alive, math.inf)


@dataclass(frozen=True)
class Krum(Aggregator):
    """The row with the lowest Krum score (`krum_scores`); `[n, d] -> [d]`, needs n >= 2f + 3.

    Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine learning with adversaries: Byzantine
    tolerant gradient descent", NeurIPS 2017. `power`: the score sums distances to this power
    (2, squared distances, as in the paper); the code of Karimireddy, He and Jaggi's bucketing
    paper (epfml/byzantine-robust-noniid-optimizer, codes/aggregator/krum.py) squares the squared
    distances again, which is `power = 4`.
    """

    f: int
    power: float = 2.0
    name: ClassVar[str] = "krum"

    def __post_init__(self) -> None:
        set_field(self, "f", need_int(self.name, "f", self.f, 0))
        set_field(self, "power", need_float(self.name, "power", self.power))

    def check(self, n: int) -> None:
        super().check(n)
        need_rows(self, n, n >= 2 * self.f + 3, "n >= 2f + 3", lower_f((n - 3) // 2))

    def __call__(self, x: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        best = lowest_row(krum_scores(pairwise_sq_distances(x), self.f, power=self.power), x)
        return x[best].clone()


@dataclass(frozen=True)
class MultiKrum(Aggregator):
    """Mean of the m rows with the lowest Krum scores (m = n - f if None); needs n >= 2f + 3.

    El Mhamdi, Guerraoui, Rouault, "The hidden vulnerability of distributed learning in
    Byzantium", ICML 2018 (Multi-Krum of Blanchard et al. 2017). `[n, d] -> [d]`.
    """

    f: int
    m: int | None = None
    name: ClassVar[str] = "multi_krum"

    def __post_init__(self) -> None:
        set_field(self, "f", need_int(self.name, "f", self.f, 0))
        if self.m is not None:
            set_field(self, "m", need_int(self.name, "m", self.m, 1))

    def check(self, n: int) -> None:
        super().check(n)
        need_rows(self, n, n >= 2 * self.f + 3, "n >= 2f + 3", lower_f((n - 3) // 2))
        need_rows(self, n, self.m is None or self.m <= n, "m <= n", f"lower m to at most {n}")

    def __call__(self, x: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        m = n - self.f if self.m is None else self.m
        scores = krum_scores(pairwise_sq_distances(x), self.f)
        chosen = torch.tensor(rank_rows(scores, x)[:m])
        weights = torch.zeros(n, dtype=torch.float64).index_fill_(0, chosen, 1.0 / m)
        return weighted_rows_sum(weights, x)


@dataclass(frozen=True)
class Bulyan(Aggregator):
    """Bulyan over Krum: select n - 2f rows, then a coordinate-wise mean around the median.

    El Mhamdi, Guerraoui, Rouault, ICML 2018. Selection: repeat n - 2f times, taking the row
    with the lowest Krum score among the rows not yet taken (`krum_scores` on the rest, same f).
    Aggregation: per coordinate, the mean of the n - 4f selected values closest to their median
    (of two equally far, the smaller is kept). `[n, d] -> [d]`; needs n >= 4f + 3.
    """

    f: int
    name: ClassVar[str] = "bulyan"

    def __post_init__(self) -> None:
        set_field(self, "f", need_int(self.name, "f", self.f, 0))

    def check(self, n: int) -> None:
        super().check(n)
        need_rows(self, n, n >= 4 * self.f + 3, "n >= 4f + 3", lower_f((n - 3) // 4))

    def __call__(self, x: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        sq_dist = pairwise_sq_distances(x)
        alive = torch.ones(n, dtype=torch.bool)
        for _ in range(n - 2 * self.f):
            alive[lowest_row(krum_scores(sq_dist, self.f, alive), x)] = False
        selected = (~alive).nonzero()[:, 0]
        keep = n - 4 * self.f
        return map_column_blocks(x, mean_closest_to_median_rows, keep, rows=selected)


@dataclass(frozen=True)
class GeometricMedian(Aggregator):
    """Smoothed Weiszfeld iterations towards argmin_z sum_i ||z - x_i||.

    Pillutla, Kakade, Harchaoui, "Robust aggregation for federated learning", IEEE TSP 2022:
    z <- sum_i b_i x_i / sum_i b_i with b_i = 1 / max(eps, ||z - x_i||), from z = mean(x); stops
    after `max_iter` steps or when sum_i ||z - x_i|| decreases by at most `tol` (relative).
    `[n, d] -> [d]`.
    """

    eps: float = 1e-6
    max_iter: int = 100
    tol: float = 1e-6
    name: ClassVar[str] = "geometric_median"

    def __post_init__(self) -> None:
        set_field(self, "eps", need_float(self.name, "eps", self.eps))
        set_field(self, "max_iter", need_int(self.name, "max_iter", self.max_iter, 1))
        set_field(self, "tol", need_float(self.name, "tol", self.tol, positive=False))

    def __call__(self, x: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        z = x.mean(dim=0)
        dist = distances_to(x, z)
        objective = float(dist.double().sum())
        for _ in range(self.max_iter):
            weights = 1.0 / dist.double().clamp(min=self.eps)
            z = weighted_rows_sum(weights / weights.sum(), x)
            dist = distances_to(x, z)
            previous, objective = objective, float(dist.double().sum())
            if previous - objective <= self.tol * objective:
                break
        return z
