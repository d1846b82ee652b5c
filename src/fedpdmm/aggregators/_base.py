"""Shared pieces of every aggregation rule: the base class, parameter and input validation.

Every rule and pre-aggregation is a frozen dataclass whose fields are its hyperparameters. The
constructor checks what can be checked alone (types, signs); `check(n)` checks what depends on the
number of rows n. Both raise `ConfigError` with a message that names the values and the fix.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from fedpdmm.errors import ConfigError, DataError
from fedpdmm.registry import need_float, need_int

__all__ = ["need_float", "need_int"]


class RuleContext(NamedTuple):
    """Everything a rule may need beyond its rows, in one object (fields unused by a rule are
    ignored): `center` [d] (centered clipping's start), `reference` [d] (FLTrust's server
    update), `generator` (randomized rules and pre-aggregations), `clients` [n] (ids of the
    senders, for per-client state), `state` (the memory of a stateful rule) and `dropped` (rows
    of this combination already left out because their messages were rejected: they used up
    part of the Byzantine budget, so every f is lowered by this count) and `absent` (rows that
    did not arrive over an unreliable network: not evidence of a Byzantine sender, so f is kept,
    lowered only as far as the remaining rows require)."""

    center: Tensor | None = None
    reference: Tensor | None = None
    generator: torch.Generator | None = None
    clients: Tensor | None = None
    state: Any = None
    dropped: int = 0
    absent: int = 0


class Aggregator:
    """Base of rules (`[n, d] -> [d]`) and pre-aggregations (`[n, d] -> [m, d]`).

    Class attributes say how the rule must be called, and `apply` is the one place that reads
    them: `needs_center` (keyword `center=` [d]), `needs_reference` (keyword `reference=` [d]),
    `stateful` (keywords `state=`, `clients=`; returns `(value, new_state)`), `randomized`
    (keyword `generator=`, a `torch.Generator`).
    """

    name: ClassVar[str]
    needs_center: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    stateful: ClassVar[bool] = False
    randomized: ClassVar[bool] = False

    @property
    def params(self) -> dict[str, Any]:
        """The hyperparameters, as passed to `get(name, **params)`."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def check(self, n: int) -> None:
        """Raise `ConfigError` if the rule cannot aggregate n rows."""
        if n < 1:
            raise ConfigError(f"{self.name} needs at least one row, got n={n}")

    def apply(self, x: Tensor, context: RuleContext = RuleContext()) -> tuple[Tensor, Any]:
        """`(value, new state)`: the rule on `x` `[n, d]` with what it needs from `context`."""
        keywords: dict[str, Any] = {}
        if self.needs_center:
            keywords["center"] = context.center
        if self.needs_reference:
            keywords["reference"] = context.reference
        if self.randomized:
            keywords["generator"] = context.generator
        if self.stateful:
            return self(x, state=context.state, clients=context.clients, **keywords)  # type: ignore[operator]
        return self(x, **keywords), context.state  # type: ignore[operator]

    def with_fewer_byzantine(self, dropped: int) -> Aggregator:
        """The same rule with the Byzantine budget f lowered by `dropped` known-bad rows (>= 0)."""
        if dropped == 0 or not hasattr(self, "f"):
            return self
        return dataclasses.replace(self, f=max(self.f - dropped, 0))


class PreAggregator(Aggregator):
    """A map `[n, d] -> [m, d]` applied before a rule.

    `mixes_rows`: output rows average several input rows, so they belong to no single client
    (rules that keep per-client state cannot follow such a step).
    """

    mixes_rows: ClassVar[bool] = False

    def output_rows(self, n: int) -> int:
        """m, the number of rows returned for n input rows."""
        return n


def set_field(obj: object, key: str, value: object) -> None:
    """Store a coerced value on a frozen dataclass inside `__post_init__`."""
    object.__setattr__(obj, key, value)


def need_rows(rule: Aggregator, n: int, condition: bool, requirement: str, fix: str) -> None:
    """`ConfigError` "rule needs <requirement>, got n=.., f=..: <fix>" unless `condition`."""
    if condition:
        return
    values = ", ".join([f"n={n}"] + [f"{key}={value}" for key, value in rule.params.items()])
    raise ConfigError(f"{rule.name} needs {requirement}, got {values}: {fix}")


def lower_f(limit: int) -> str:
    """The fix for an f too large for the rows: at most `limit`, or more rows if none fits."""
    return f"lower f to at most {limit}" if limit >= 0 else "aggregate more rows"


def check_matrix(rule: str, x: Tensor) -> tuple[int, int]:
    """(n, d) of a 2-D floating tensor, else `DataError`."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise DataError(f"{rule} aggregates a [n, d] tensor, got {shape}; stack the rows first")
    if not x.is_floating_point():
        raise DataError(f"{rule} needs a floating-point tensor, got dtype={x.dtype}; use x.float()")
    n, d = x.shape
    if n == 0:
        raise DataError(f"{rule} got no rows (n=0); pass at least one row")
    return n, d


def check_point(rule: str, key: str, point: Tensor | None, x: Tensor) -> Tensor:
    """A `[d]` point (center, reference) matching x in size, cast to x's dtype; else `DataError`."""
    if point is None:
        raise DataError(f"{rule} needs {key}=<tensor [d]>; pass it as a keyword")
    d = x.shape[1]
    if not isinstance(point, Tensor) or tuple(point.shape) != (d,):
        shape = tuple(point.shape) if isinstance(point, Tensor) else type(point).__name__
        raise DataError(f"{rule}: {key} must have shape ({d},) like the rows of x, got {shape}")
    return point.to(dtype=x.dtype)


def check_generator(rule: str, generator: torch.Generator | None) -> torch.Generator:
    """The generator of a randomized rule, else `ConfigError` saying how to get one."""
    if not isinstance(generator, torch.Generator):
        raise ConfigError(
            f"{rule} is randomized and needs generator=<torch.Generator>, got {generator!r}; "
            "use fedpdmm.seeding.generator(seed, ...)"
        )
    return generator
