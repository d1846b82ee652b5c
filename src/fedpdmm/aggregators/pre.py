"""Pre-aggregations `[n, d] -> [m, d]`, applied in order before a rule.

Mixing (nnm, bucketing) averages rows together; clipping (clip, arc) rescales each row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from fedpdmm.aggregators._base import (
    PreAggregator,
    check_generator,
    check_matrix,
    lower_f,
    need_float,
    need_int,
    need_rows,
    set_field,
)
from fedpdmm.aggregators._kernels import pairwise_sq_distances
from fedpdmm.aggregators.clipping import clip_scales


def _scale_rows(x: Tensor, scales: Tensor) -> Tensor:
    return x * scales.to(x.dtype)[:, None]


@dataclass(frozen=True)
class NNM(PreAggregator):
    """Nearest-neighbour mixing: row i becomes the mean of its n - f nearest rows, itself included.

    Allouah et al., "Fixing by mixing: a recipe for optimal Byzantine ML under heterogeneity",
    AISTATS 2023. Equal distances: lower row index first. `[n, d] -> [n, d]`; needs n > f.
    """

    f: int
    name: ClassVar[str] = "nnm"
    mixes_rows: ClassVar[bool] = True

    def __post_init__(self) -> None:
        set_field(self, "f", need_int(self.name, "f", self.f, 0))

    def check(self, n: int) -> None:
        super().check(n)
        need_rows(self, n, n > self.f, "n > f", lower_f(n - 1))

    def __call__(self, x: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        keep = n - self.f
        sq_dist = pairwise_sq_distances(x).fill_diagonal_(-1.0)  # each row is its own nearest
        nearest = sq_dist.sort(dim=1, stable=True).indices[:, :keep]
        mixing = torch.zeros(n, n, dtype=torch.float64).scatter_(1, nearest, 1.0 / keep)
        return mixing.to(x.dtype) @ x


@dataclass(frozen=True)
class Bucketing(PreAggregator):
    """Shuffle the rows, cut them into buckets of s (the last may be smaller), average each.

    Karimireddy, He, Jaggi, "Byzantine-robust learning on heterogeneous datasets via
    bucketing", ICLR 2022. `agg(x, generator=g)`; `[n, d] -> [ceil(n / s), d]`; needs s <= n.
    """

    s: int
    name: ClassVar[str] = "bucketing"
    randomized: ClassVar[bool] = True
    mixes_rows: ClassVar[bool] = True

    def __post_init__(self) -> None:
        set_field(self, "s", need_int(self.name, "s", self.s, 1))

    def check(self, n: int) -> None:
        super().check(n)
        need_rows(self, n, self.s <= n, "s <= n", f"lower s to at most {n}")

    def output_rows(self, n: int) -> int:
        return math.ceil(n / self.s)

    def __call__(self, x: Tensor, *, generator: torch.Generator) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        generator = check_generator(self.name, generator)
        order = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
        bucket = torch.arange(n, device=x.device) // self.s
        sizes = torch.bincount(bucket).double()
        mixing = torch.zeros(self.output_rows(n), n, dtype=torch.float64, device=x.device)
        mixing[bucket, order] = 1.0 / sizes[bucket]
        return mixing.to(x.dtype) @ x


@dataclass(frozen=True)
class Clip(PreAggregator):
    """Static clipping: x_i <- x_i min(1, tau / ||x_i||). `[n, d] -> [n, d]`."""

    tau: float
    name: ClassVar[str] = "clip"

    def __post_init__(self) -> None:
        set_field(self, "tau", need_float(self.name, "tau", self.tau))

    def __call__(self, x: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        return _scale_rows(x, clip_scales(torch.linalg.vector_norm(x, dim=1), self.tau))


@dataclass(frozen=True)
class ARC(PreAggregator):
    """Adaptive robust clipping: clip the k largest rows to the norm of the (k+1)-th largest.

    Allouah et al., "Boosting robustness by clipping gradients in distributed learning", 2024,
    with k = floor(2 (f / n) (n - f)) as in ByzFL; rows no larger than that norm are unchanged.
    `[n, d] -> [n, d]`; needs n > f.
    """

    f: int
    name: ClassVar[str] = "arc"

    def __post_init__(self) -> None:
        set_field(self, "f", need_int(self.name, "f", self.f, 0))

    def check(self, n: int) -> None:
        super().check(n)
        need_rows(self, n, n > self.f, "n > f", lower_f(n - 1))

    def __call__(self, x: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        clipped = (2 * self.f * (n - self.f)) // n
        norms = torch.linalg.vector_norm(x, dim=1)
        threshold = float(norms.sort().values[n - clipped - 1])
        if threshold == 0.0:
            return _scale_rows(x, torch.where(norms > 0, 0.0, 1.0))
        return _scale_rows(x, clip_scales(norms, threshold))
