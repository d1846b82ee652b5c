"""Centered clipping: move a reference point by the mean of the clipped differences to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from fedpdmm.aggregators._base import (
    Aggregator,
    RuleContext,
    check_matrix,
    check_point,
    need_float,
    need_int,
    set_field,
)
from fedpdmm.aggregators._kernels import distances_to, weighted_rows_sum
from fedpdmm.errors import ConfigError


def clip_scales(norms: Tensor, tau: float) -> Tensor:
    """`[n]` factors min(1, tau / ||u_i||) that clip rows of norm `norms` to norm tau (0 -> 1)."""
    return (tau / norms.double()).clamp(max=1.0)


@dataclass(frozen=True)
class CenteredClipping(Aggregator):
    """`iters` steps of v <- v + (1/n) sum_i clip_tau(x_i - v), from v = `center`.

    clip_tau(u) = u min(1, tau / ||u||). Karimireddy, He, Jaggi, "Learning from history for
    Byzantine robust optimization", ICML 2021. Call as `agg(x, center=v0)`; `[n, d], [d] -> [d]`.
    Equivariant under translating x and the center together.

    Inside an algorithm (`fedpdmm.algorithms.robust`) the rows are differences from the
    receiver's base, and `start` picks v0: `"base"` (default) the zero difference, the base
    itself; `"previous"` the rule's previous output (zero the first time), the paper's server
    memory: with one local step and worker momentum (`local.momentum`), FedAvg's differences
    are -lr times the clients' momenta, so this is their clipping around the previous
    aggregated momentum. `"previous"` needs a server (it keeps the aggregate between rounds).
    """

    tau: float
    iters: int = 1
    start: str = "base"
    name: ClassVar[str] = "centered_clipping"
    needs_center: ClassVar[bool] = True

    def __post_init__(self) -> None:
        set_field(self, "tau", need_float(self.name, "tau", self.tau))
        set_field(self, "iters", need_int(self.name, "iters", self.iters, 1))
        if self.start not in ("base", "previous"):
            raise ConfigError(
                f"{self.name}: start={self.start!r} is not a starting point; choose 'base' "
                "(the zero difference) or 'previous' (the previous aggregate)"
            )

    @property
    def keeps_aggregate(self) -> bool:
        return self.start == "previous"

    def apply(self, x: Tensor, context: RuleContext = RuleContext()) -> tuple[Tensor, Any]:
        """With `start = "previous"` the state is the previous output; else as every rule."""
        if not self.keeps_aggregate:
            return super().apply(x, context)
        previous = context.state
        if previous is None:
            previous = x.new_zeros(x.shape[1])
        value = self(x, center=previous.to(x))
        return value, value

    def __call__(self, x: Tensor, *, center: Tensor) -> Tensor:
        n, _ = check_matrix(self.name, x)
        self.check(n)
        v = check_point(self.name, "center", center, x)
        for _ in range(self.iters):
            scales = clip_scales(distances_to(x, v), self.tau) / n
            v = v + (weighted_rows_sum(scales, x) - float(scales.sum()) * v)
        return v
