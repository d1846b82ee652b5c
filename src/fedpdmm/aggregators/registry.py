"""Name -> class registries for rules and pre-aggregations, and `get` / `get_pre` to build them."""

from __future__ import annotations

from typing import Any

from fedpdmm.aggregators._base import Aggregator, PreAggregator
from fedpdmm.aggregators.clipping import CenteredClipping
from fedpdmm.aggregators.coordinate import Meamed, Mean, Median, TrimmedMean
from fedpdmm.aggregators.distance import Bulyan, GeometricMedian, Krum, MultiKrum
from fedpdmm.aggregators.pre import ARC, NNM, Bucketing, Clip
from fedpdmm.aggregators.similarity import DnC, FLTrust, FoolsGold
from fedpdmm.errors import ConfigError
from fedpdmm.registry import Registry

RULES: Registry[type[Aggregator]] = Registry(
    "aggregation rule",
    (
        Mean,
        Median,
        TrimmedMean,
        Meamed,
        Krum,
        MultiKrum,
        GeometricMedian,
        Bulyan,
        CenteredClipping,
        FoolsGold,
        DnC,
        FLTrust,
    ),
    label="{name}",
)

PRE_AGGREGATIONS: Registry[type[PreAggregator]] = Registry(
    "pre-aggregation", (NNM, Bucketing, Clip, ARC), label="{name}"
)


def names() -> list[str]:
    """Names of the aggregation rules, for `get`."""
    return RULES.names()


def pre_names() -> list[str]:
    """Names of the pre-aggregations, for `get_pre`."""
    return PRE_AGGREGATIONS.names()


def get(name: str, **params: Any) -> Aggregator:
    """The rule `name` with hyperparameters `params`, e.g. `get("trimmed_mean", f=2)`.

    Raises `ConfigError` for an unknown name, an unknown or missing parameter, or a bad value.
    """
    if name in PRE_AGGREGATIONS:
        raise ConfigError(
            f"unknown aggregation rule {name!r}; {name!r} is a pre-aggregation, use get_pre; "
            f"valid names: {', '.join(RULES)}"
        )
    return RULES.build(name, **params)


def get_pre(name: str, **params: Any) -> PreAggregator:
    """The pre-aggregation `name` with hyperparameters `params`, e.g. `get_pre("nnm", f=2)`."""
    if name in RULES:
        raise ConfigError(
            f"unknown pre-aggregation {name!r}; {name!r} is a rule, use get; "
            f"valid names: {', '.join(PRE_AGGREGATIONS)}"
        )
    return PRE_AGGREGATIONS.build(name, **params)
