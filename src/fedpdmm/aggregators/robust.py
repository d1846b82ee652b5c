"""The one entry point the engine calls: drop non-finite rows, pre-aggregate, aggregate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from fedpdmm.aggregators._base import Aggregator, PreAggregator, RuleContext, check_matrix
from fedpdmm.aggregators._kernels import finite_rows
from fedpdmm.errors import ConfigError, NonFiniteError


class AggregateResult(NamedTuple):
    """What `aggregate` returns: `value` `[d]`, the rule's new `state` (None for stateless
    rules) and `num_dropped`, the number of non-finite rows removed (for the metrics)."""

    value: Tensor
    state: Any
    num_dropped: int


def check_pipeline(rule: Aggregator, pre: Sequence[PreAggregator] = (), *, n: int) -> int:
    """Raise `ConfigError` unless `pre` then `rule` can run on n rows; return the rule's row count.

    Call it when building a run, so that bad combinations fail before training.
    """
    pre = _as_steps(rule, pre)
    for step in pre:
        step.check(n)
        n = step.output_rows(n)
    mixing = [step.name for step in pre if step.mixes_rows]
    if rule.stateful and mixing:
        raise ConfigError(
            f"{rule.name} keeps per-client state and cannot follow {', '.join(mixing)}, which "
            "mixes rows of different clients; drop those pre-aggregations"
        )
    rule.check(n)
    return n


def aggregate(
    x: Tensor,
    rule: Aggregator,
    pre: Sequence[PreAggregator] = (),
    context: RuleContext = RuleContext(),
) -> AggregateResult:
    """Aggregate `[n, d]` rows robustly: `[n, d] -> AggregateResult(value [d], state, dropped)`.

    1. Rows with a NaN or Inf are Byzantine: they are removed and counted, and every f of the
       rule and of `pre` is lowered by that count plus `context.dropped` (rows the caller
       already left out; at least 0), since they used up part of the budget (so the n >= ...
       conditions that held before still hold).
    2. The pre-aggregations run in order (with `context.generator` for the randomized ones).
    3. The rule runs with what it declares it needs from `context` (`Aggregator.apply`);
       `context.clients` ([n] sender ids, default 0..n-1) is filtered with the rows.
    Raises `NonFiniteError` if every row, the center or the reference is non-finite.
    """
    n, _ = check_matrix(rule.name if isinstance(rule, Aggregator) else "aggregate", x)
    pre = _as_steps(rule, pre)
    finite = finite_rows(x)
    kept = int(finite.sum())
    if kept == 0:
        raise NonFiniteError(
            f"all {n} rows to aggregate are non-finite (NaN or Inf), nothing is left for "
            f"{rule.name}; lower the learning rate or check the attack"
        )
    dropped = n - kept
    if dropped + context.dropped:
        rule = rule.with_fewer_byzantine(dropped + context.dropped)
        pre = [step.with_fewer_byzantine(dropped + context.dropped) for step in pre]
    if dropped:
        x = x[finite]
        if rule.stateful:
            clients = finite.nonzero()[:, 0] if context.clients is None else context.clients[finite]
            context = context._replace(clients=clients)
    if context.absent:
        rule, pre = fit_to_rows(rule, pre, kept)
    check_pipeline(rule, pre, n=kept)
    for step in pre:
        x, _ = step.apply(x, context)
    if rule.needs_center:
        _finite_point(rule, "center", context.center)
    if rule.needs_reference:
        _finite_point(rule, "reference", context.reference)
    value, state = rule.apply(x, context)
    return AggregateResult(value, state, dropped)


def _budgets(rule: Aggregator, pre: Sequence[PreAggregator]) -> list[int]:
    return [getattr(step, "f", 0) for step in (*pre, rule)]


def fit_to_rows(
    rule: Aggregator, pre: Sequence[PreAggregator], rows: int
) -> tuple[Aggregator, list[PreAggregator]]:
    """`rule` and `pre` with every f lowered one at a time until they can run on `rows` rows
    (unchanged if they already can; rows missing from an unreliable network are not known to be
    Byzantine, so f is lowered no further than that)."""
    pre = list(pre)
    while True:
        try:
            check_pipeline(rule, pre, n=rows)
            return rule, pre
        except ConfigError:
            before = _budgets(rule, pre)
            rule = rule.with_fewer_byzantine(1)
            pre = [step.with_fewer_byzantine(1) for step in pre]
            if _budgets(rule, pre) == before:
                raise


def _as_steps(rule: object, pre: object) -> list[PreAggregator]:
    if not isinstance(rule, Aggregator) or isinstance(rule, PreAggregator):
        raise ConfigError(f"rule must be built by fedpdmm.aggregators.get(name, ...), got {rule!r}")
    steps = [pre] if isinstance(pre, PreAggregator) else list(pre)  # type: ignore[call-overload]
    for step in steps:
        if not isinstance(step, PreAggregator):
            raise ConfigError(
                f"pre must list steps built by fedpdmm.aggregators.get_pre(name, ...), got {step!r}"
            )
    return steps


def _finite_point(rule: Aggregator, key: str, point: Tensor | None) -> None:
    if isinstance(point, Tensor) and not bool(torch.isfinite(point).all()):
        raise NonFiniteError(f"{rule.name}: {key} has NaN or Inf entries; pass a finite {key}")
