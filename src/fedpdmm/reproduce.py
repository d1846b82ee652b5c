"""`fedpdmm reproduce paper | robust`: fixed experiment grids, run as resumable sweeps, one report.

The paper is Xia, Yu, Li, "Byzantine-Resilient Federated Learning via Distributed Optimization",
arXiv 2503.10792 (2025). Its grid is built from the preset configs (`fedpdmm.presets`, mirrored from
the repository's `configs/`): every attack under every target (model, update, message), the
penalty c fixed to the preset's value, plus a c sweep that is shown whole, Byzantine fractions 0 to
75 %, and PDMM against FedAvg without attack on IID data. Each experiment is a sweep directory
under `out`, so an interrupted reproduction resumes where it stopped.
"""

from __future__ import annotations

import importlib.resources
import itertools
import math
import shutil
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpdmm import config as config_module
from fedpdmm import report, store, sweep
from fedpdmm.config import TARGETS
from fedpdmm.errors import ConfigError, FedpdmmError

C_VALUES = (0.1, 0.2, 0.4, 0.8, 1.6)
FRACTIONS = (0.0, 0.25, 0.5, 0.75)
MAIN_ATTACKS = ("none", "sign_flip", "gaussian", "alie", "ipm")
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


# ---------------------------------------------------------------------------- presets


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


# ---------------------------------------------------------------------------- grids


def paper_experiments(quick: bool, preset_dir: Path | None = None) -> list[Experiment]:
    """The paper's grid. `quick`: 20 rounds, two seeds for the claims and one for the ablations,
    peer-to-peer on MNIST only with 10 nodes; full: the presets' rounds, 5 / 3 / 2 seeds."""
    short = {"rounds": 20, "eval_every": 5} if quick else {}
    coarse = {"rounds": 20, "eval_every": 10} if quick else {}
    targets = {"attack.target": list(TARGETS)}
    experiments = []
    for claim in CLAIMS:
        experiments.append(
            Experiment(
                f"claims_{claim.preset}",
                f"{claim.label}: PDMM against FedAvg, every target",
                claim.preset,
                {**targets, **short},
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
    """PDMM, robust PDMM and FedAvg with the main rules under the main attacks, IID and Dirichlet
    (alpha 0.5) data: MNIST, MLP, 20 clients of which 4 are Byzantine. Attacks strike the
    transmitted message and, separately, the model (a Byzantine client that follows the protocol).
    """
    from fedpdmm.algorithms import CENTRALIZED

    rules = [rule for rule in MAIN_RULES if rule != "mean"]
    algorithms = [*CENTRALIZED, *(f"{base}+{rule}" for base in CENTRALIZED for rule in rules)]
    overrides = {
        "algorithms": algorithms,
        "attacks": list(MAIN_ATTACKS),
        "attack.params": {
            name: ATTACK_PARAMS[name] for name in MAIN_ATTACKS if name in ATTACK_PARAMS
        },
        "attack.target": ["message", "model"],
        "data.num_clients": 20,
        "attack.num_byzantine": 4,
        "data.alpha": 0.5,
        **({"rounds": 10, "eval_every": 5} if quick else {"rounds": 30, "eval_every": 10}),
    }
    return [
        Experiment(
            "robust",
            "Robust comparison: algorithms x rules x attacks, message and model targets, IID and "
            "Dirichlet",
            "mnist_bitflip",
            overrides,
            {"data.partition": ["iid", "dirichlet"]},
            seeds=1,
        )
    ]


# ---------------------------------------------------------------------------- running


def run_experiments(
    experiments: Sequence[Experiment],
    out: Path,
    *,
    workers: int | None = None,
    data_dir: str | None = None,
    preset_dir: Path | None = None,
    progress: Callable[[str, sweep.SweepStatus], None] | None = None,
) -> dict[str, sweep.SweepOutcome]:
    """Plan every experiment first (bad config: error before anything runs), then run each sweep."""
    plans = {e.name: sweep.plan(build_config(e, preset_dir), e.grid, e.seeds) for e in experiments}
    for experiment in experiments:
        root = out / experiment.name
        if (root / sweep.SWEEP_FILE).exists():
            sweep.prepare(root, plans[experiment.name])
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
        )
    return outcomes


# ---------------------------------------------------------------------------- claims


def verdict(claimed: float, gaps: Sequence[float]) -> str:
    """Whether a measured gap (points, one per seed) reproduces a claimed gap.

    reproduces: mean >= claimed / 2, or claimed within mean ± 2 std (two or more seeds);
    same direction, smaller: 0 < mean below that; does not reproduce: mean <= 0.
    """
    mean, std = report.mean_std(gaps)
    if mean >= claimed / 2 or (not math.isnan(std) and abs(mean - claimed) <= 2 * std):
        return "reproduces"
    return "same direction, smaller" if mean > 0 else "does not reproduce"


RULE = (
    "Rule: a claimed gap reproduces when the measured mean gap (PDMM minus FedAvg, final test "
    "accuracy of the global model, paired by seed) is at least half the claimed gap, or the "
    "claimed gap lies within the mean ± 2 std over seeds; a positive gap below that is 'same "
    "direction, smaller'; a gap <= 0 does not reproduce. c is the preset's value, fixed in "
    "advance; the c sweep below is shown whole."
)


def _find(found: Sequence[report.Cell], algorithm: str, attack: str, target: str):
    for cell in found:
        if (cell.algorithm, cell.attack, cell.target) == (algorithm, attack, target):
            return cell
    return None


def paired_gaps(pdmm: report.Cell, fedavg: report.Cell) -> list[float]:
    """PDMM minus FedAvg final accuracy in points, for the seeds both have."""
    finals_p = {seed: report.accuracy_of(rows[-1]) for seed, rows in pdmm.series.items()}
    finals_f = {seed: report.accuracy_of(rows[-1]) for seed, rows in fedavg.series.items()}
    return [100 * (finals_p[s] - finals_f[s]) for s in finals_p if s in finals_f]


def claim_rows(claim: Claim, results: report.Results, attack: str) -> list[dict[str, Any]]:
    """One row per target: PDMM and FedAvg final accuracy, the paired gap and the verdict."""
    found = report.cells(results)
    rows = []
    for target in TARGETS:
        pdmm, fedavg = (_find(found, name, attack, target) for name in ("pdmm", "fedavg"))
        if pdmm is None or fedavg is None:
            continue
        gaps = paired_gaps(pdmm, fedavg)
        if not gaps:
            continue
        rows.append(
            {
                "claim": claim.label,
                "target": target,
                "claimed": claim.gap,
                "pdmm": report.mean_std(pdmm.finals),
                "fedavg": report.mean_std(fedavg.finals),
                "gap": report.mean_std(gaps),
                "seeds": len(gaps),
                "verdict": verdict(claim.gap, gaps),
            }
        )
    return rows


def rounds_to_reach(cell: report.Cell, level: float) -> int | None:
    """First evaluated round where the mean accuracy over seeds (%) reaches `level`."""
    rounds, means, _ = report.band(cell)
    return next((r for r, m in zip(rounds, means, strict=True) if m >= level), None)


def fluctuation(cell: report.Cell) -> float:
    """Mean |change| of test accuracy (points) between successive evaluations in the second half
    of training, averaged over seeds."""
    values = []
    for rows in cell.series.values():
        accuracy = [100 * report.accuracy_of(row) for row in rows]
        tail = accuracy[len(accuracy) // 2 :]
        if len(tail) > 1:
            values.append(statistics.fmean(abs(b - a) for a, b in itertools.pairwise(tail)))
    return statistics.fmean(values) if values else math.nan


def convergence_rows(label: str, results: report.Results, attack: str) -> list[dict[str, Any]]:
    """Speed (no attack: rounds to 90 % of the better final accuracy) and stability (fluctuation)
    of PDMM against FedAvg, with a verdict each."""
    found = report.cells(results)
    rows = []
    pdmm, fedavg = _find(found, "pdmm", "none", "none"), _find(found, "fedavg", "none", "none")
    if pdmm is not None and fedavg is not None:
        level = 0.9 * 100 * max(statistics.fmean(pdmm.finals), statistics.fmean(fedavg.finals))
        speed = [rounds_to_reach(pdmm, level), rounds_to_reach(fedavg, level)]
        if speed[0] is not None and (speed[1] is None or speed[0] < speed[1]):
            outcome = "reproduces"
        elif speed[0] == speed[1]:
            outcome = "tie at this evaluation interval"
        else:
            outcome = "does not reproduce"
        shown = ["never" if s is None else str(s) for s in speed]
        rows.append([label, "faster (no attack)", f"rounds to {level:.1f} %", *shown, outcome])
    for target in ["none", *TARGETS]:
        which = "none" if target == "none" else attack
        pdmm, fedavg = (_find(found, name, which, target) for name in ("pdmm", "fedavg"))
        if pdmm is None or fedavg is None:
            continue
        values = [fluctuation(pdmm), fluctuation(fedavg)]
        outcome = "reproduces" if values[0] < values[1] else "does not reproduce"
        rows.append(
            [
                label,
                f"more stable ({which} @ {target})" if which != "none" else "more stable",
                "mean abs. change late (points)",
                *(f"{v:.2f}" for v in values),
                outcome,
            ]
        )
    return rows


def _pm(pair: tuple[float, float], scale: float = 100.0) -> str:
    mean, std = pair
    return f"{scale * mean:.2f}" + ("" if math.isnan(std) else f" ± {scale * std:.2f}")


def claims_document(
    experiments: Sequence[Experiment], out: Path, preset_dir: Path | None, quick: bool
) -> tuple[report.Document, list[list[str]]]:
    """The reproduction report's head: setup, claims table (returned too), convergence table."""
    document = report.Document(f"fedpdmm reproduce paper{' (quick)' if quick else ''}")
    document.paragraph(
        "Xia, Yu, Li, Byzantine-Resilient Federated Learning via Distributed Optimization, "
        "arXiv 2503.10792. The paper's hyperparameters are unknown; the presets state fedpdmm's "
        "choices. Byzantine clients compute honestly and corrupt what they transmit at the "
        "target named in each row (model, update or message): the conclusion depends on it."
    )
    if quick:
        document.paragraph(
            "Quick mode: 20 rounds (peer-to-peer: 10 rounds, 10 nodes, MNIST only), two seeds "
            "for the claims and one for the ablations; the full command uses the presets' rounds."
        )
    document.heading("Paper claims beside fedpdmm's measurements")
    document.paragraph(RULE)
    table = []
    for claim in CLAIMS:
        experiment = next((e for e in experiments if e.name == f"claims_{claim.preset}"), None)
        if experiment is None or not (out / experiment.name / store.SWEEP_FILE).exists():
            continue
        raw = config_module.read_toml(preset_path(claim.preset, preset_dir))
        results = report.load_results(out / experiment.name)
        for row in claim_rows(claim, results, attack_of(raw)):
            table.append(
                [
                    row["claim"],
                    row["target"],
                    f"+{row['claimed']:g}",
                    _pm(row["pdmm"]),
                    _pm(row["fedavg"]),
                    _pm(row["gap"], 1.0),
                    str(row["seeds"]),
                    row["verdict"],
                ]
            )
    header = [
        "claim",
        "target",
        "claimed gap (points)",
        "PDMM (%)",
        "FedAvg (%)",
        "measured gap (points)",
        "seeds",
        "verdict",
    ]
    document.table(header, table)
    convergence = []
    for claim in CLAIMS:
        names = [f"convergence_{claim.preset}", f"claims_{claim.preset}"]
        for name in names:
            if (out / name / store.SWEEP_FILE).exists():
                raw = config_module.read_toml(preset_path(claim.preset, preset_dir))
                results = report.load_results(out / name)
                convergence += convergence_rows(claim.label, results, attack_of(raw))
                break
    document.heading("Claim: faster and more stable convergence")
    document.paragraph(
        "Faster: first evaluated round at which the seed-mean accuracy without attack reaches 90 %"
        " of the better method's final accuracy; reproduces if PDMM gets there in fewer rounds. "
        "More stable: mean absolute change of accuracy between successive evaluations over the "
        "second half of training; reproduces if PDMM's is smaller (a collapsed model is 'stable' "
        "too: read it beside the accuracies above)."
    )
    document.table(["setting", "claim", "measure", "PDMM", "FedAvg", "verdict"], convergence)
    return document, [header, *table]


def write_paper_report(
    experiments: Sequence[Experiment],
    out: Path,
    preset_dir: Path | None = None,
    quick: bool = False,
) -> tuple[Path, list[list[str]]]:
    """`out/report/`: the claims, then every experiment's tables and plots; also `claims.csv`."""
    document, claims = claims_document(experiments, out, preset_dir, quick)
    text = "".join(",".join(f'"{cell}"' for cell in row) + "\n" for row in claims)
    return _write(document, experiments, out, {"claims.csv": text}), claims


def write_robust_report(experiments: Sequence[Experiment], out: Path) -> Path:
    document = report.Document("fedpdmm reproduce robust")
    document.paragraph(
        "FedAvg and PDMM with a server, plain and with each main robust rule (`fedavg+median`, "
        "`pdmm+median`, ...), under the main attacks (IPM with epsilon 0.5) striking the "
        "transmitted message and, separately, the model of a Byzantine client that follows the "
        "protocol; MNIST, MLP, 20 clients of which 4 Byzantine, IID and Dirichlet (alpha 0.5) data."
    )
    return _write(document, experiments, out)


def _write(
    document: report.Document,
    experiments: Sequence[Experiment],
    out: Path,
    files: dict[str, str] | None = None,
) -> Path:
    target = out / "report"
    staging = report.staging_for(target)
    try:
        for name, text in (files or {}).items():
            (staging / name).write_text(text)
        for experiment in experiments:
            root = out / experiment.name
            if not (root / store.SWEEP_FILE).exists():
                continue
            images = staging / experiment.name
            images.mkdir()
            document.heading(experiment.title)
            document.paragraph(f"Sweep directory: {experiment.name}/ ({experiment.seeds} seeds).")
            report.sweep_sections(document, report.load_results(root), images, level=3)
        return report.write_document(document, target, staging)
    except OSError as error:
        raise FedpdmmError(f"cannot write the report to {target}: {error.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
