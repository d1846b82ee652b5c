"""Robust combination: where an aggregation rule replaces an average inside each algorithm.

Every algorithm ends its round with an average, and a robust rule takes its place there. Rules act
on differences from a reference point `base` and the result is added back,

    combined = base + rule(rows - base),

so translation-equivariant rules (mean, median, trimmed mean, Krum, ...) give the same answer in
either frame, and rules that are not (clipping, FLTrust, FoolsGold) see updates, the frame their
papers define them in. With `mean` and no pre-aggregation this is the plain average, exactly.

- FedAvg (server): rows are the clients' models, base the previous global model.
- PDMM (server): the server's x-update x_s = argmin <sum_i A(s|i) z(s|i), x> + (c n / 2) ||x||^2
  is the mean of the per-client votes z(s|i) / c (A(s|i) = -1); robust PDMM takes the rule over
  those votes (base: the previous x_s). At theta = 1 the votes are FedSplit's 2 x_i - v_i.
- PDMM (graph): node i's prox centre v_i = -sum_j A(i|j) z(i|j) / (c d_i) is the mean over its
  edges of the votes -A(i|j) z(i|j) / c; the rule replaces that mean (base: the node's model).
- gossip (`dsgd`): node i's rows are its own model and its neighbours' messages; base is its own
  model, so `dsgd+centered_clipping` is self-centred clipping (He, Karimireddy, Jaggi 2022) with
  uniform weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedpdmm import aggregators
from fedpdmm.aggregators import Aggregator, PreAggregator, RuleContext
from fedpdmm.errors import ConfigError


@dataclass(frozen=True)
class RobustCombine:
    """A rule with its pre-aggregations, applied as `base + rule(rows - base)`."""

    rule: Aggregator
    pre: tuple[PreAggregator, ...] = ()

    @property
    def label(self) -> str:
        return "+".join([*(step.name for step in self.pre), self.rule.name])

    @property
    def is_plain_mean(self) -> bool:
        return self.rule.name == "mean" and not self.pre

    def __call__(
        self, rows: torch.Tensor, base: torch.Tensor, context: RuleContext = RuleContext()
    ) -> tuple[torch.Tensor, Any]:
        """(base + rule(rows - base) `[d]`, the rule's new state). `rows` `[m, d]`, `base` `[d]`.

        `context.reference` (FLTrust's server update) and `context.center` (centred clipping's
        starting point, default 0: the base itself) are in the difference frame.
        """
        if context.center is None and self.rule.needs_center:
            context = context._replace(center=torch.zeros_like(base))
        result = aggregators.aggregate(rows - base, self.rule, self.pre, context)
        return base + result.value, result.state

    def value(self, rows: torch.Tensor) -> torch.Tensor:
        """The rule on `rows` `[m, d]` alone (`[d]`): what an omniscient attack plays against."""
        combined, _ = self(rows, torch.zeros_like(rows[0]))
        return combined


def parse_algorithm(name: str) -> tuple[str, list[str]]:
    """`"fedavg+nnm+krum"` -> (`"fedavg"`, `["nnm", "krum"]`): the base and its robust chain."""
    base, *chain = name.split("+")
    return base, chain


def build_combine(
    chain: Sequence[str],
    default_rule: str,
    default_pre: Sequence[str],
    params: dict[str, dict[str, Any]],
    default_f: int,
) -> RobustCombine:
    """The rule and pre-aggregations of a chain (the last name is the rule), with parameters.

    Parameters come from `params[name]`; a rule or pre-aggregation that takes `f` and was given
    none gets `default_f`, and `DEFAULT_PARAMS` fills the required scales (`tau`, `s`).
    """
    if chain:
        *pre_names, rule_name = chain
    else:
        rule_name, pre_names = default_rule, list(default_pre)
    rule = aggregators.get(rule_name, **_params(aggregators.RULES, rule_name, params, default_f))
    pre = tuple(
        aggregators.get_pre(name, **_params(aggregators.PRE_AGGREGATIONS, name, params, default_f))
        for name in pre_names
    )
    return RobustCombine(rule, pre)


DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "centered_clipping": {"tau": 1.0, "iters": 3},
    "clip": {"tau": 1.0},
    "bucketing": {"s": 2},
}
"""fedpdmm's defaults for parameters the papers leave to the user (scales of updates)."""


def _params(table: dict, name: str, params: dict[str, dict[str, Any]], default_f: int) -> dict:
    chosen = {**DEFAULT_PARAMS.get(name, {}), **params.get(name, {})}
    cls = table.get(name)
    fields = getattr(cls, "__dataclass_fields__", {})
    if "f" in fields and "f" not in chosen:
        chosen["f"] = default_f
    return chosen


def check_rows(robust: RobustCombine, label: str, rows_per_receiver: dict[int, int]) -> None:
    """ConfigError unless the chain can run on the rows each receiver combines (node -> rows;
    node -1 is the server)."""
    for node, rows in rows_per_receiver.items():
        if node < 0:  # the server: the rule's own message says it all
            aggregators.check_pipeline(robust.rule, robust.pre, n=rows)
            continue
        try:
            aggregators.check_pipeline(robust.rule, robust.pre, n=rows)
        except ConfigError as error:
            raise ConfigError(
                f"{label!r} cannot run at node {node} of the graph, which combines {rows} "
                f"rows: {error}"
            ) from None
