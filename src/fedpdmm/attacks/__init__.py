"""Attacks on the messages (or training data) of Byzantine nodes, built by name.

    attack = attacks.get("alie")                      # or get("gaussian", sigma=0.1, mode="add")
    attacked = attack(messages, byzantine, generator=gen)   # [n, d], only Byzantine rows differ

Every attack is a frozen, picklable dataclass with `name`, `params`, `omniscient` (reads honest
rows; cannot run where a node sees only its own message) and `data_attack` (corrupts training
data; see `LabelFlip.flip_labels`). The engine applies attacks to model, update or message
vectors alike: rows are just vectors.
"""

from __future__ import annotations

from typing import Any

from fedpdmm.attacks.base import Attack, StrikeContext
from fedpdmm.attacks.basic import (
    ConstantValue,
    FloatBitFlip,
    GaussianNoise,
    Mimic,
    NoAttack,
    SignFlip,
    ZeroMessage,
)
from fedpdmm.attacks.consensus import Dissensus, Drift, Replay
from fedpdmm.attacks.data import LabelFlip
from fedpdmm.attacks.omniscient import (
    ALIE,
    IPM,
    MinMax,
    MinSum,
    alie_z,
    coordinate_mean,
)
from fedpdmm.attacks.optimal import OptimalALIE, OptimalIPM
from fedpdmm.registry import Registry

REGISTRY: Registry[type[Attack]] = Registry(
    "attack",
    (
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
        Dissensus,
        Drift,
        Replay,
    ),
    aliases={"bit_flip": "sign_flip"},
)
ALIASES = REGISTRY.aliases

__all__ = [
    "ALIASES",
    "ALIE",
    "IPM",
    "REGISTRY",
    "Attack",
    "ConstantValue",
    "Dissensus",
    "Drift",
    "FloatBitFlip",
    "GaussianNoise",
    "LabelFlip",
    "Mimic",
    "MinMax",
    "MinSum",
    "NoAttack",
    "OptimalALIE",
    "OptimalIPM",
    "Replay",
    "SignFlip",
    "StrikeContext",
    "ZeroMessage",
    "alie_z",
    "coordinate_mean",
    "get",
    "names",
]


def names(include_aliases: bool = True) -> list[str]:
    """Sorted names accepted by `get` (aliases such as `bit_flip` included unless asked not to)."""
    return sorted(REGISTRY.names(include_aliases))


def get(name: str, **params: Any) -> Attack:
    """The attack `name` with its parameters bound; ConfigError for unknown names or bad params."""
    return REGISTRY.build(name, **params)
