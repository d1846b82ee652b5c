"""Name -> class tables for rules and pre-aggregations, and `get` / `get_pre` to build them."""

from __future__ import annotations

import dataclasses
from typing import Any

from fedpdmm.aggregators._base import Aggregator, PreAggregator
from fedpdmm.aggregators.clipping import CenteredClipping
from fedpdmm.aggregators.coordinate import Meamed, Mean, Median, TrimmedMean
from fedpdmm.aggregators.distance import Bulyan, GeometricMedian, Krum, MultiKrum
from fedpdmm.aggregators.pre import ARC, NNM, Bucketing, Clip
from fedpdmm.aggregators.similarity import DnC, FLTrust, FoolsGold
from fedpdmm.errors import ConfigError

RULES: dict[str, type[Aggregator]] = {
    cls.name: cls
    for cls in (
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
    )
}

PRE_AGGREGATIONS: dict[str, type[PreAggregator]] = {
    cls.name: cls for cls in (NNM, Bucketing, Clip, ARC)
}


def names() -> list[str]:
    """Names of the aggregation rules, for `get`."""
    return list(RULES)


def pre_names() -> list[str]:
    """Names of the pre-aggregations, for `get_pre`."""
    return list(PRE_AGGREGATIONS)


def get(name: str, **params: Any) -> Aggregator:
    """The rule `name` with hyperparameters `params`, e.g. `get("trimmed_mean", f=2)`.

    Raises `ConfigError` for an unknown name, an unknown or missing parameter, or a bad value.
    """
    if name in PRE_AGGREGATIONS:
        hint = f"; {name!r} is a pre-aggregation, use get_pre"
        raise _unknown("aggregation rule", name, RULES, hint)
    return _build(RULES, "aggregation rule", name, params)  # type: ignore[return-value]


def get_pre(name: str, **params: Any) -> PreAggregator:
    """The pre-aggregation `name` with hyperparameters `params`, e.g. `get_pre("nnm", f=2)`."""
    if name in RULES:
        raise _unknown("pre-aggregation", name, PRE_AGGREGATIONS, f"; {name!r} is a rule, use get")
    return _build(PRE_AGGREGATIONS, "pre-aggregation", name, params)  # type: ignore[return-value]


def _unknown(kind: str, name: object, table: dict[str, Any], hint: str = "") -> ConfigError:
    return ConfigError(f"unknown {kind} {name!r}{hint}; valid names: {', '.join(table)}")


def _build(table: dict[str, type[Aggregator]], kind: str, name: str, params: dict) -> Aggregator:
    cls = table.get(name) if isinstance(name, str) else None
    if cls is None:
        raise _unknown(kind, name, table)
    fields = dataclasses.fields(cls)
    valid = [field.name for field in fields]
    listing = f"valid parameters of {name}: {', '.join(valid) or 'none'}"
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"{name}: unknown parameter(s) {', '.join(unknown)}; {listing}")
    missing = [
        field.name
        for field in fields
        if field.name not in params
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{name}: missing parameter(s) {', '.join(missing)}; {listing}")
    return cls(**params)
