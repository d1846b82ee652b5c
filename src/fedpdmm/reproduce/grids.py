"""The reproductions' experiment grids: the paper's claims and ablations, the robust comparison."""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fedpdmm import config as config_module
from fedpdmm import sweep
from fedpdmm.config import TARGETS
from fedpdmm.errors import ConfigError, FedpdmmError

C_VALUES = (0.1, 0.2, 0.4, 0.8, 1.6)
FRACTIONS = (0.0, 0.25, 0.5, 0.75)
MAIN_ATTACKS = ("none", "sign_flip", "gaussian", "alie", "ipm")
CONSENSUS_ATTACKS = ("dissensus", "drift", "replay")
"""Attacks on the consensus mechanism itself (`fedpdmm.attacks.consensus`)."""
STATES = ("honest", "received")
"""What a Byzantine node remembers (`attack.state`); the claims are shown under both."""
BREAKDOWN_FRACTIONS = (0.0, 0.15, 0.3, 0.45)
MAIN_RULES = ("mean", "median", "trimmed_mean", "krum", "geometric_median", "centered_clipping")
ATTACK_PARAMS = {"ipm": {"epsilon": 0.5}}
"""Parameters the robust grid gives attacks that have no default (IPM: Xie et al. 2020, eps 0.5)."""


@dataclass(frozen=True)
class Claim:
    """A number from the paper: PDMM's test accuracy minus FedAvg's, in points."""

    label: str
    preset: str
    gap: float


CLAIMS = (
    Claim("MNIST, bit-flipping, centralized", "mnist_bitflip", 56.0),
    Claim("Fashion-MNIST, bit-flipping, centralized", "fashion_mnist_bitflip", 37.0),
    Claim("Olivetti, Gaussian noise, centralized", "olivetti_gaussian", 8.75),
)
DECENTRALIZED = (
    "mnist_bitflip_decentralized",
    "fashion_mnist_bitflip_decentralized",
    "olivetti_gaussian_decentralized",
)


@dataclass(frozen=True)
class Experiment:
    """One sweep of the reproduction: a preset, overrides (dotted key -> value), grid, seeds."""

    name: str
    title: str
    preset: str
    overrides: dict[str, Any]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: int = 1


def preset_path(name: str, preset_dir: Path | None = None) -> Path:
    """`name.toml` from `preset_dir`, else the package's `fedpdmm/presets`, else the repo's
    `configs/`."""
    if preset_dir is not None:
        candidates = [Path(preset_dir) / f"{name}.toml"]
    else:
        packaged = importlib.resources.files("fedpdmm") / "presets" / f"{name}.toml"
        repo = Path(__file__).resolve().parents[2] / "configs" / f"{name}.toml"
        candidates = [Path(str(packaged)), repo]
    for path in candidates:
        if path.is_file():
            return path
    raise FedpdmmError(
        f"preset {name!r} not found (looked in {', '.join(str(p.parent) for p in candidates)}); "
        "reinstall fedpdmm or pass the folder holding the presets"
    )


def build_config(experiment: Experiment, preset_dir: Path | None = None) -> config_module.Config:
    """The experiment's base config: its preset with the overrides applied."""
    raw = config_module.read_toml(preset_path(experiment.preset, preset_dir))
    for key, value in experiment.overrides.items():
        sweep.set_key(raw, key, value)
    if "attack.fraction" in experiment.overrides:
        raw.get("attack", {}).pop("num_byzantine", None)
    return config_module.validate(raw)


def attack_of(raw: dict[str, Any]) -> str:
    """The preset's attack: the first name in `attacks` that is not `none`."""
    names = [name for name in raw.get("attacks", []) if name != "none"]
    if not names:
        raise ConfigError("the preset has no attack besides 'none'")
    return names[0]


def paper_experiments(quick: bool, preset_dir: Path | None = None) -> list[Experiment]:
    """The paper's grid. `quick`: 20 rounds, two seeds for the claims and one for the ablations,
    peer-to-peer on MNIST only with 10 nodes; full: the presets' rounds, 5 / 3 / 2 seeds.

    The claims and ablations compare final accuracies, so the full grid evaluates them every 10
    rounds; the convergence runs (rounds to a target accuracy) keep the presets' 5."""
    short = {"rounds": 20, "eval_every": 5} if quick else {}
    coarse = {"rounds": 20, "eval_every": 10} if quick else {"eval_every": 10}
    claims = short if quick else coarse
    targets = {"attack.target": list(TARGETS)}
    experiments = []
    for claim in CLAIMS:
        experiments.append(
            Experiment(
                f"claims_{claim.preset}",
                f"{claim.label}: PDMM against FedAvg, every target, both attacker states",
                claim.preset,
                {**targets, **claims},
                {"attack.state": list(STATES)},
                seeds=2 if quick else 5,
            )
        )
        raw = config_module.read_toml(preset_path(claim.preset, preset_dir))
        if raw.get("data", {}).get("partition", "iid") != "iid":
            experiments.append(
                Experiment(
                    f"convergence_{claim.preset}",
                    f"{claim.label}: no attack, IID data (convergence)",
                    claim.preset,
                    {"attacks": ["none"], "data.partition": "iid", **short},
                    seeds=1 if quick else 3,
                )
            )
    decentralized = DECENTRALIZED[:1] if quick else DECENTRALIZED
    for preset in decentralized:
        small = {"data.num_clients": 10, "attack.num_byzantine": 2} if quick else {}
        experiments.append(
            Experiment(
                f"decentralized_{preset}",
                f"{preset}: peer-to-peer PDMM against its aggregation baseline, every target",
                preset,
                {
                    **targets,
                    **small,
                    "eval_every": 5 if quick else 10,
                    **({"rounds": 10} if quick else {}),
                },
                seeds=1 if quick else 2,
            )
        )
    mnist = config_module.read_toml(preset_path("mnist_bitflip", preset_dir))
    experiments.append(
        Experiment(
            "byzantine_fraction",
            "MNIST, bit-flipping: Byzantine fraction 0, 25, 50, 75 %",
            "mnist_bitflip",
            {"attacks": [attack_of(mnist)], **targets, **coarse},
            {"attack.fraction": list(FRACTIONS)},
            seeds=1 if quick else 3,
        )
    )
    experiments.append(
        Experiment(
            "consensus_attacks",
            "MNIST: attacks on the consensus mechanism (dissensus, drift, replay), both states",
            "mnist_bitflip",
            {
                "algorithms": ["pdmm", "pdmm+trimmed_mean", "fedavg", "fedavg+trimmed_mean"],
                "attacks": ["none", *CONSENSUS_ATTACKS],
                "attack.target": ["message", "model"],
                **coarse,
            },
            {"attack.state": list(STATES)},
            seeds=1 if quick else 2,
        )
    )
    experiments.append(
        Experiment(
            "consensus_attacks_decentralized",
            "MNIST peer-to-peer: the consensus attacks against PDMM and gossip, both states",
            "mnist_bitflip_decentralized",
            {
                "algorithms": ["pdmm", "dsgd", "dsgd+centered_clipping"],
                "attacks": ["none", *CONSENSUS_ATTACKS],
                "attack.target": ["message"],
                **({"data.num_clients": 10, "attack.num_byzantine": 2} if quick else {}),
                "eval_every": 5 if quick else 10,
                **({"rounds": 10} if quick else {}),
            },
            {"attack.state": list(STATES)},
            seeds=1,
        )
    )
    preset_c = mnist.get("pdmm", {}).get("c", 0.4)
    experiments.append(
        Experiment(
            "c_sensitivity",
            f"MNIST, bit-flipping: PDMM's penalty c (fixed c = {preset_c} elsewhere), whole sweep",
            "mnist_bitflip",
            {"algorithms": ["pdmm"], **targets, **coarse},
            {"pdmm.c": sorted({*C_VALUES, preset_c})},
            seeds=1 if quick else 3,
        )
    )
    return experiments


def robust_experiments(quick: bool, preset_dir: Path | None = None) -> list[Experiment]:
    """Every server algorithm, plain and with each main rule, under the main attacks and the
    consensus attacks, IID and Dirichlet (alpha 0.5) data: MNIST, MLP, 20 clients of which 4 are
    Byzantine. Attacks strike the transmitted message and, separately, the model (a Byzantine
    client that follows the protocol). Then the breakdown curve: the same methods against the
    Byzantine fraction 0, 15, 30 and 45 % (Dirichlet data; sign flip and ALIE)."""
    from fedpdmm.algorithms import CENTRALIZED

    rules = [rule for rule in MAIN_RULES if rule != "mean"]
    algorithms = [*CENTRALIZED, *(f"{base}+{rule}" for base in CENTRALIZED for rule in rules)]
    attack_names = [*MAIN_ATTACKS, *CONSENSUS_ATTACKS]
    overrides = {
        "algorithms": algorithms,
        "attacks": attack_names,
        "attack.params": {
            name: ATTACK_PARAMS[name] for name in attack_names if name in ATTACK_PARAMS
        },
        "attack.target": ["message", "model"],
        "data.num_clients": 20,
        "attack.num_byzantine": 4,
        "data.alpha": 0.5,
        **({"rounds": 10, "eval_every": 5} if quick else {"rounds": 30, "eval_every": 10}),
    }
    breakdown = {
        **overrides,
        "algorithms": [name for name in algorithms if not name.endswith("+krum")],
        "attacks": ["sign_flip", "alie"],
        "data.partition": "dirichlet",
    }
    breakdown.pop("attack.num_byzantine")
    return [
        Experiment(
            "robust",
            "Robust comparison: algorithms x rules x attacks, message and model targets, IID and "
            "Dirichlet",
            "mnist_bitflip",
            overrides,
            {"data.partition": ["iid", "dirichlet"]},
            seeds=1,
        ),
        Experiment(
            "breakdown",
            "Breakdown: every method against the Byzantine fraction 0-45 %, sign flip and ALIE "
            "at the message and the model target, Dirichlet data (Krum, which needs n >= 2f + 3, "
            "cannot run at 45 % of 20 clients and is left out)",
            "mnist_bitflip",
            breakdown,
            {"attack.fraction": list(BREAKDOWN_FRACTIONS)},
            seeds=1,
        ),
    ]


def select(experiments: Sequence[Experiment], names: Sequence[str]) -> list[Experiment]:
    """The experiments named in `names` (all when empty); an unknown name is a ConfigError."""
    if not names:
        return list(experiments)
    known = [experiment.name for experiment in experiments]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(
            f"--only {unknown[0]!r} is not an experiment of this reproduction; choose from "
            f"{', '.join(known)}"
        )
    return [experiment for experiment in experiments if experiment.name in names]


def run_experiments(
    experiments: Sequence[Experiment],
    out: Path,
    *,
    workers: int | None = None,
    data_dir: str | None = None,
    preset_dir: Path | None = None,
    progress: Callable[[str, Any], None] | None = None,
) -> dict[str, sweep.SweepOutcome]:
    """Plan every experiment first (bad config: error before anything runs), then run each sweep.

    The experiments share one folder of finished combinations, `out/.combinations`
    (`fedpdmm.reuse`): a grid point that two experiments hold is computed once. With more than
    one worker, every combination of every experiment is first computed in one pool, longest
    first (`fedpdmm.sweep.pool`, reported to `progress` as `"combinations"`), so no worker waits
    at an experiment's end; the sweeps then write their runs from the shared folder."""
    plans = {e.name: sweep.plan(build_config(e, preset_dir), e.grid, e.seeds) for e in experiments}
    for experiment in experiments:
        root = out / experiment.name
        if (root / sweep.SWEEP_FILE).exists():
            sweep.prepare(root, plans[experiment.name])
    reuse = out / sweep.REUSE_DIR
    written: dict[str, list[str]] = {}
    if (workers or sweep.default_workers()) > 1:
        from fedpdmm.sweep.pool import compute_combinations  # imports training code

        written = compute_combinations(
            [(plans[e.name], out / e.name) for e in experiments],
            reuse,
            workers=workers or sweep.default_workers(),
            data_dir=data_dir,
            progress=None if progress is None else partial(progress, "combinations"),
        ).written
    outcomes = {}
    for experiment in experiments:

        def relay(status: sweep.SweepStatus, name: str = experiment.name) -> None:
            if progress is not None:
                progress(name, status)

        outcomes[experiment.name] = sweep.run_sweep(
            plans[experiment.name],
            out / experiment.name,
            workers=workers,
            data_dir=data_dir,
            progress=relay,
            reuse=reuse,
            pooled=False,
            written=written.get(str(out / experiment.name), []),
        )
    return outcomes
