"""Attacks on the messages (or training data) of Byzantine nodes, built by name.

    attack = attacks.get("alie")                      # or get("gaussian", sigma=0.1, mode="add")
    attacked = attack(messages, byzantine, generator=gen)   # [n, d], only Byzantine rows differ

Every attack is a frozen, picklable dataclass with `name`, `params`, `omniscient` (reads honest
rows; cannot run where a node sees only its own message) and `data_attack` (corrupts training
data; see `LabelFlip.flip_labels`). The engine applies attacks to model, update or message
vectors alike: rows are just vectors.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fedpdmm.attacks.base import Attack, describe_params
from fedpdmm.attacks.basic import (
    ConstantValue,
    FloatBitFlip,
    GaussianNoise,
    Mimic,
    NoAttack,
    SignFlip,
    ZeroMessage,
)
from fedpdmm.attacks.data import LabelFlip
from fedpdmm.attacks.omniscient import (
    ALIE,
    IPM,
    MinMax,
    MinSum,
    OptimalALIE,
    OptimalIPM,
    alie_z,
    coordinate_mean,
)
from fedpdmm.errors import ConfigError

REGISTRY: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (
        NoAttack,
        SignFlip,
        GaussianNoise,
        ZeroMessage,
        ConstantValue,
        Mimic,
        FloatBitFlip,
        ALIE,
        IPM,
        MinMax,
        MinSum,
        OptimalALIE,
        OptimalIPM,
        LabelFlip,
    )
}
ALIASES: dict[str, str] = {"bit_flip": "sign_flip"}

__all__ = [
    "ALIASES",
    "ALIE",
    "IPM",
    "REGISTRY",
    "Attack",
    "ConstantValue",
    "FloatBitFlip",
    "GaussianNoise",
    "LabelFlip",
    "Mimic",
    "MinMax",
    "MinSum",
    "NoAttack",
    "OptimalALIE",
    "OptimalIPM",
    "SignFlip",
    "ZeroMessage",
    "alie_z",
    "coordinate_mean",
    "get",
    "names",
]


def names(include_aliases: bool = True) -> list[str]:
    """Sorted names accepted by `get` (aliases such as `bit_flip` included unless asked not to)."""
    return sorted([*REGISTRY, *(ALIASES if include_aliases else ())])


def get(name: str, **params: Any) -> Attack:
    """The attack `name` with its parameters bound; ConfigError for unknown names or bad params."""
    cls = REGISTRY.get(ALIASES.get(name, name)) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"unknown attack {name!r}; valid attacks: {', '.join(names())}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(
            f"attack {cls.name!r}: unknown parameter(s) {', '.join(unknown)}; "
            + describe_params(cls)
        )
    missing = [
        key
        for key, field in fields.items()
        if key not in params
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"attack {cls.name!r}: missing parameter(s) {', '.join(missing)}; "
            + describe_params(cls)
        )
    return cls(**params)
