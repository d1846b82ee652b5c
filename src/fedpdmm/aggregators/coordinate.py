"""Coordinate-wise rules: each coordinate of the result depends only on that coordinate of the rows.

All of them are permutation invariant and translation equivariant. Order statistics are computed
per column block (see `_kernels.map_column_blocks`), never with `torch.quantile` (which refuses
inputs above 2^24 elements).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from fedpdmm.aggregators._base import (
    Aggregator,
    check_matrix,
    lower_f,
    need_int,
    need_rows,
    set_field,
)
from fedpdmm.aggregators._kernels import (
    map_column_blocks,
    mean_closest_to_median_rows,
    median_rows,
    trimmed_mean_rows,
)


@dataclass(frozen=True)
class Mean(Aggregator):
    """Arithmetic mean `(1/n) sum_i x_i`; `[n, d] -> [d]`. Not robust: one row moves it anywhere."""

    name: ClassVar[str] = "mean"

    def __call__(self, x: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        return x.mean(dim=0)


@dataclass(frozen=True)
class Median(Aggregator):
    """Coordinate-wise median; for even n the mean of the two middle values.

    Yin et al., "Byzantine-robust distributed learning: towards optimal statistical rates",
    ICML 2018. `[n, d] -> [d]`.
    """

    name: ClassVar[str] = "median"

    def __call__(self, x: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        return map_column_blocks(x, median_rows)


@dataclass(frozen=True)
class TrimmedMean(Aggregator):
    """Coordinate-wise trimmed mean: drop the f largest and f smallest values, average the n - 2f.

    Yin et al., ICML 2018. `[n, d] -> [d]`; needs n > 2f. f = 0 is the mean.
    """

    f: int
    name: ClassVar[str] = "trimmed_mean"

    def __post_init__(self) -> None:
        set_field(self, "f", need_int(self.name, "f", self.f, 0))

    def check(self, n: int) -> None:
        super().check(n)
        need_rows(self, n, n > 2 * self.f, "n > 2f", lower_f((n - 1) // 2))

    def __call__(self, x: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        if self.f == 0:
            return x.mean(dim=0)
        return map_column_blocks(x, trimmed_mean_rows, self.f)


@dataclass(frozen=True)
class Meamed(Aggregator):
    """Mean around the median: per coordinate, the mean of the n - f values closest to the median.

    Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", 2018. `[n, d] -> [d]`; needs
    n > 2f. Of two values equally far from the median the smaller is kept.
    """

    f: int
    name: ClassVar[str] = "meamed"

    def __post_init__(self) -> None:
        set_field(self, "f", need_int(self.name, "f", self.f, 0))

    def check(self, n: int) -> None:
        super().check(n)
        need_rows(self, n, n > 2 * self.f, "n > 2f", lower_f((n - 1) // 2))

    def __call__(self, x: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        if self.f == 0:
            return x.mean(dim=0)
        return map_column_blocks(x, mean_closest_to_median_rows, n - self.f)
