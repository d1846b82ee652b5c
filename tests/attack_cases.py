"""Case table for the attack contract suite: every registered attack name with sample parameters
and invalid parameter sets with the substring their ConfigError must contain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fedpdmm.attacks import coordinate_mean


def coordinate_median(x: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise (lower) median `[n, d] -> [d]`: a robust rule for tuned attacks."""
    return x.median(dim=0).values


@dataclass(frozen=True)
class AttackCase:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    invalid: tuple[tuple[dict[str, Any], str], ...] = ()
    changes_byzantine: bool = True
    uses_randomness: bool = False


DISTANCE_BOUNDED_INVALID = (
    ({"perturbation": "gauss"}, "perturbation must be one of 'std' | 'unit_vec' | 'sign'"),
    ({"tol": 0}, "tol must be a finite number > 0.0"),
    ({"gamma_init": -1.0}, "gamma_init must be a finite number > 0.0"),
    ({"gamma": 1.0}, "unknown parameter(s) gamma"),
)
LINE_SEARCH_INVALID = (
    ({"aggregator": "median"}, "aggregator must be a callable"),
    ({"scale_min": 2.0, "scale_max": 1.0}, "scale_max must be > scale_min=2.0, got scale_max=1.0"),
    ({"grid_points": 1}, "grid_points must be an integer >= 2"),
    ({"grid_points": 3.0}, "grid_points must be an integer >= 2"),
    ({"refine_steps": -1}, "refine_steps must be an integer >= 0"),
)

CASES: tuple[AttackCase, ...] = (
    AttackCase("none", changes_byzantine=False, invalid=(({"scale": 1.0}, "unknown parameter"),)),
    AttackCase(
        "sign_flip",
        {"scale": 2.0},
        invalid=(
            ({"scale": "big"}, "scale must be a finite number, got 'big'"),
            ({"scale": float("nan")}, "scale must be a finite number, got nan"),
            ({"scale": True}, "scale must be a finite number, got True"),
        ),
    ),
    AttackCase("bit_flip", invalid=(({"sigma": 1.0}, "unknown parameter(s) sigma"),)),
    AttackCase(
        "gaussian",
        {"sigma": 0.5, "mode": "add"},
        uses_randomness=True,
        invalid=(
            ({"sigma": -1.0}, "sigma must be a finite number >= 0.0, got -1.0"),
            ({"sigma": float("inf")}, "sigma must be a finite number >= 0.0, got inf"),
            ({"mode": "mul"}, "mode must be one of 'add' | 'replace', got 'mul'"),
        ),
    ),
    AttackCase("zero", invalid=(({"value": 0.0}, "unknown parameter(s) value"),)),
    AttackCase("inf", invalid=(({"value": "inf"}, "value must be"),)),
    AttackCase(
        "mimic",
        {"target": 2},
        invalid=(
            ({"target": -1}, "target must be an integer >= 0 or None, got target=-1"),
            ({"target": 1.0}, "target must be an integer >= 0 or None, got target=1.0"),
        ),
    ),
    AttackCase(
        "float_bit_flip",
        {"rate": 0.1},
        uses_randomness=True,
        invalid=(
            ({}, "missing parameter(s) rate"),
            ({"rate": 1.5}, "rate must be a finite number >= 0.0 and <= 1.0, got 1.5"),
        ),
    ),
    AttackCase("alie", invalid=(({"z": "1"}, "z must be a finite number, got '1'"),)),
    AttackCase(
        "ipm",
        {"epsilon": 0.5},
        invalid=(
            ({}, "missing parameter(s) epsilon"),
            ({"epsilon": -1.0}, "epsilon must be a finite number >= 0.0, got -1.0"),
        ),
    ),
    AttackCase("min_max", invalid=DISTANCE_BOUNDED_INVALID),
    AttackCase("min_sum", {"perturbation": "unit_vec"}, invalid=DISTANCE_BOUNDED_INVALID),
    AttackCase(
        "optimal_alie",
        {"aggregator": coordinate_median, "refine_steps": 4},
        invalid=LINE_SEARCH_INVALID,
    ),
    AttackCase("optimal_ipm", {"aggregator": coordinate_mean}, invalid=LINE_SEARCH_INVALID),
    AttackCase(
        "label_flip",
        {"num_classes": 10},
        changes_byzantine=False,
        invalid=(
            ({"num_classes": 1}, "num_classes must be an integer >= 2 or None, got num_classes=1"),
        ),
    ),
    AttackCase(
        "dissensus",
        {"epsilon": 1.0},
        invalid=(({"epsilon": -1.0}, "epsilon must be a finite number >= 0.0"),),
    ),
    AttackCase(
        "drift",
        {"kappa": 0.5, "pattern_seed": 3},
        invalid=(
            ({"kappa": -0.1}, "kappa must be a finite number >= 0.0"),
            ({"pattern_seed": -1}, "pattern_seed must be an integer >= 0"),
        ),
    ),
    AttackCase("replay", {"lag": 2}, invalid=(({"lag": 0}, "lag must be an integer >= 1"),)),
)
