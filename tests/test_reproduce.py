"""`reproduce paper | robust`: the grids, the verdict rule, the claims table, end to end runs."""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fedpdmm import cli_experiments, config, reproduce, results, sweep
from fedpdmm.algorithms import CENTRALIZED
from fedpdmm.config import TARGETS
from fedpdmm.errors import FedpdmmError

PRESETS = [claim.preset for claim in reproduce.CLAIMS] + list(reproduce.DECENTRALIZED)


@pytest.fixture(scope="module")
def tiny_presets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped presets on digits with a tiny model (same keys, same attacks and c)."""
    folder = tmp_path_factory.mktemp("presets")
    for name in PRESETS:
        text = reproduce.preset_path(name).read_text()
        text = re.sub(r'name = "(mnist|fashion_mnist|olivetti)"', 'name = "digits"', text)
        text = re.sub(r"\[data\.options\]\n(\w+ = .*\n)+", "", text)
        text = text.replace("hidden = [200]", "hidden = [8]")
        text = re.sub(r"steps = \d+", "steps = 2", text)
        (folder / f"{name}.toml").write_text(text)
    return folder


def shortened(experiment: reproduce.Experiment, seeds: int = 1) -> reproduce.Experiment:
    overrides = {**experiment.overrides, "rounds": 2, "eval_every": 1}
    return dataclasses.replace(experiment, overrides=overrides, seeds=seeds)


@pytest.mark.parametrize(
    ("claimed", "gaps", "expected"),
    [
        (56.0, [60.0, 50.0], "reproduces"),
        (56.0, [28.0], "reproduces"),  # exactly half
        (56.0, [20.0, 30.0], "same direction, smaller"),  # 25 < 28, 56 outside 25 ± 2 * 7.07
        (56.0, [-5.0, 2.0], "does not reproduce"),
        (8.75, [-2.0, 9.0], "reproduces"),  # 3.5 < 4.375 but 8.75 within 3.5 ± 2 * 7.78
        (8.75, [3.0, 5.0], "same direction, smaller"),
        (8.75, [0.0], "does not reproduce"),
        (8.75, [-35.0, -5.0], "does not reproduce"),  # 8.75 within -20 ± 2 * 21.2, mean < 0
    ],
)
def test_verdict_rule(claimed: float, gaps: list[float], expected: str) -> None:
    assert reproduce.verdict(claimed, gaps) == expected


def test_presets_are_found_in_the_package() -> None:
    path = reproduce.preset_path("mnist_bitflip")
    assert path.is_file() and config.read_toml(path)["data"]["name"] == "mnist"
    with pytest.raises(FedpdmmError, match="preset 'nope' not found"):
        reproduce.preset_path("nope")


@pytest.mark.parametrize("quick", [True, False])
def test_paper_grid_runs_every_target_with_c_fixed(quick: bool, tiny_presets: Path) -> None:
    experiments = reproduce.paper_experiments(quick, tiny_presets)
    by_name = {e.name: e for e in experiments}
    preset_c = config.read_toml(tiny_presets / "mnist_bitflip.toml")["pdmm"]["c"]
    for experiment in experiments:
        base = reproduce.build_config(experiment, tiny_presets)
        expected = ["message"] if experiment.name.startswith("consensus_attacks_") else None
        if experiment.name == "consensus_attacks":
            expected = ["message", "model"]
        assert base.attack.targets == (expected or list(TARGETS)), experiment.name
        plan = sweep.plan(base, experiment.grid, experiment.seeds)
        if experiment.name != "c_sensitivity":
            assert {spec.config.pdmm.c for spec in plan.runs} == {preset_c}
    claims = [by_name[f"claims_{c.preset}"] for c in reproduce.CLAIMS]
    assert all(e.seeds == (2 if quick else 5) for e in claims)
    assert all(e.grid == {"attack.state": list(reproduce.STATES)} for e in claims)
    for name in ("consensus_attacks", "consensus_attacks_decentralized"):
        consensus = reproduce.build_config(by_name[name], tiny_presets)
        assert set(reproduce.CONSENSUS_ATTACKS) <= set(consensus.attacks)
        assert by_name[name].grid == {"attack.state": list(reproduce.STATES)}
    sensitivity = by_name["c_sensitivity"]
    assert preset_c in sensitivity.grid["pdmm.c"] and len(sensitivity.grid["pdmm.c"]) >= 5
    assert by_name["byzantine_fraction"].grid == {"attack.fraction": [0.0, 0.25, 0.5, 0.75]}
    decentralized = [e for e in experiments if e.name.startswith("decentralized_")]
    assert len(decentralized) == (1 if quick else 3)
    for experiment in decentralized:
        assert reproduce.build_config(experiment, tiny_presets).decentralized
    rounds = {reproduce.build_config(e, tiny_presets).rounds for e in claims}
    assert rounds == ({20} if quick else {100})


def fake_claims_sweep(root: Path, finals: dict[tuple[str, str], list[float]]) -> None:
    """A claims sweep (2 seeds) whose final accuracies are `finals[(algorithm, target)][seed]`;
    accuracy at round 0 is 0.1 and at round 5 the final minus `0.2` for fedavg, equal for pdmm."""
    plan = sweep.plan(config.load(None, ['attack.target=["model", "update", "message"]']), {}, 2)
    sweep.prepare(root, plan)
    for spec in plan.runs:
        seed = spec.config.seed
        rows = []
        for (algorithm, target), values in finals.items():
            final = values[seed]
            early = final if algorithm == "pdmm" else final - 0.2
            attack = "none" if target == "none" else "sign_flip"
            for rnd, acc in ((0, 0.1), (5, early), (10, final), (15, final)):
                rows.append(
                    {
                        "algorithm": algorithm,
                        "attack": attack,
                        "target": target,
                        "round": rnd,
                        "test_accuracy": acc,
                        "test_loss": 1.0,
                        "num_byzantine": 2 * (attack != "none"),
                    }
                )
        (root / spec.name).mkdir()
        results.write_metrics(root / spec.name / "metrics.csv", rows)


FINALS = {
    ("pdmm", "none"): [0.90, 0.92],
    ("fedavg", "none"): [0.91, 0.91],
    ("pdmm", "message"): [0.70, 0.72],
    ("fedavg", "message"): [0.10, 0.12],
    ("pdmm", "model"): [0.05, 0.07],
    ("fedavg", "model"): [0.11, 0.13],
    ("pdmm", "update"): [0.50, 0.30],
    ("fedavg", "update"): [0.40, 0.40],
}


def test_claim_rows_pair_seeds_and_apply_the_rule(tmp_path: Path) -> None:
    fake_claims_sweep(tmp_path, FINALS)
    from fedpdmm import report

    claim = reproduce.Claim("MNIST", "mnist_bitflip", 56.0)
    rows = {
        r["target"]: r
        for r in reproduce.claim_rows(claim, report.load_results(tmp_path), "sign_flip")
    }
    assert list(rows) == list(TARGETS)
    assert rows["message"]["gap"] == pytest.approx((60.0, 0.0))
    assert rows["message"]["verdict"] == "reproduces"
    assert rows["model"]["gap"][0] == pytest.approx(-6.0)
    assert rows["model"]["verdict"] == "does not reproduce"
    # gaps 10 and -10: mean 0
    assert rows["update"]["gap"] == pytest.approx((0.0, 14.142135623730951))
    assert rows["update"]["verdict"] == "does not reproduce"
    assert rows["message"]["pdmm"][0] == pytest.approx(0.71) and rows["message"]["seeds"] == 2


def test_convergence_rows_measure_speed_and_stability(tmp_path: Path) -> None:
    fake_claims_sweep(tmp_path, FINALS)
    from fedpdmm import report

    rows = reproduce.convergence_rows("MNIST", report.load_results(tmp_path), "sign_flip")
    speed = rows[0]
    # level 0.9 * 91 = 81.9 %: PDMM (mean 91 at round 5) before FedAvg (71 at round 5, 91 at 10)
    assert speed[1:] == ["faster (no attack)", "rounds to 81.9 %", "5", "10", "reproduces"]
    stability = {row[1]: row for row in rows[1:]}
    assert len(stability) == 1 + len(TARGETS)
    # late halves are [final, final] for both: no fluctuation, so PDMM is not more stable
    assert stability["more stable"][3:] == ["0.00", "0.00", "does not reproduce"]


def test_paper_reproduction_end_to_end_on_tiny_presets(tmp_path: Path, tiny_presets: Path) -> None:
    experiments = [
        shortened(e, seeds=2 if e.name == "claims_mnist_bitflip" else 1)
        for e in reproduce.paper_experiments(True, tiny_presets)
        if e.name.startswith("claims_")
    ]
    statuses = []
    outcomes = reproduce.run_experiments(
        experiments,
        tmp_path,
        workers=1,
        preset_dir=tiny_presets,
        progress=lambda name, status: statuses.append(name),
    )
    assert all(not o.failed for o in outcomes.values())
    assert set(statuses) == {e.name for e in experiments}
    written, claims = reproduce.write_paper_report(experiments, tmp_path, tiny_presets, quick=True)
    assert claims[0][-1] == "verdict"
    assert len(claims) == 1 + 3 * len(reproduce.STATES) * len(TARGETS)
    assert {row[1] for row in claims[1:]} == set(reproduce.STATES)
    assert {row[2] for row in claims[1:]} == set(TARGETS)
    assert {row[-1] for row in claims[1:]} <= {
        "reproduces",
        "same direction, smaller",
        "does not reproduce",
    }
    assert [row[7] for row in claims[1:4]] == ["2", "2", "2"]
    markdown = (written / "report.md").read_text()
    assert reproduce.RULE in markdown and "faster (no attack)" in markdown
    for experiment in experiments:
        assert experiment.title in markdown
        assert (written / experiment.name / "curves_1.png").stat().st_size > 5000
    with (written / "claims.csv").open(newline="") as handle:
        assert list(csv.reader(handle)) == claims
    # the same command resumes: nothing left to run
    again = reproduce.run_experiments(experiments, tmp_path, workers=1, preset_dir=tiny_presets)
    assert all(not o.finished and o.skipped for o in again.values())


def test_robust_grid_covers_the_main_rules_and_attacks(tmp_path: Path, tiny_presets: Path) -> None:
    from fedpdmm import attacks

    experiment, breakdown = reproduce.robust_experiments(True, tiny_presets)
    assert breakdown.grid == {"attack.fraction": list(reproduce.BREAKDOWN_FRACTIONS)}
    assert max(reproduce.BREAKDOWN_FRACTIONS) == 0.45
    assert not any(name.endswith("+krum") for name in breakdown.overrides["algorithms"])
    assert sweep.plan(reproduce.build_config(breakdown, tiny_presets), breakdown.grid, 1).runs
    assert set(reproduce.CONSENSUS_ATTACKS) <= set(experiment.overrides["attacks"])
    algorithms = experiment.overrides["algorithms"]
    assert algorithms[: len(CENTRALIZED)] == list(CENTRALIZED)
    rules = [rule for rule in reproduce.MAIN_RULES if rule != "mean"]
    assert algorithms[len(CENTRALIZED) :] == [f"{b}+{r}" for b in CENTRALIZED for r in rules]
    assert set(experiment.overrides["attacks"]) <= set(attacks.names())
    assert experiment.overrides["data.num_clients"] == 20
    assert experiment.overrides["attack.num_byzantine"] == 4
    assert experiment.grid["data.partition"] == ["iid", "dirichlet"]
    base = reproduce.build_config(experiment, tiny_presets)
    assert sweep.plan(base, experiment.grid, experiment.seeds).runs
    experiment = shortened(experiment)
    small = {"attacks": ["none", "sign_flip"], "algorithms": [*CENTRALIZED, *algorithms[-1:]]}
    experiment = dataclasses.replace(experiment, overrides={**experiment.overrides, **small})
    outcomes = reproduce.run_experiments([experiment], tmp_path, workers=1, preset_dir=tiny_presets)
    assert not outcomes["robust"].failed
    written = reproduce.write_robust_report([experiment], tmp_path)
    markdown = (written / "report.md").read_text()
    assert re.search(r"\| fedavg \| dirichlet \|(.*\|)? sign_flip \| model \|", markdown)


def test_a_bad_preset_fails_before_anything_runs(tmp_path: Path, tiny_presets: Path) -> None:
    experiment = reproduce.Experiment("bad", "bad", "mnist_bitflip", {"local.lrr": 0.1})
    good = shortened(reproduce.paper_experiments(True, tiny_presets)[0])
    with pytest.raises(FedpdmmError, match=r"unknown config key 'local\.lrr'"):
        reproduce.run_experiments([good, experiment], tmp_path, preset_dir=tiny_presets)
    assert not tmp_path.joinpath(good.name).exists()


def cli_app() -> typer.Typer:
    app = typer.Typer()
    cli_experiments.register(app)
    return app


def test_sweep_and_report_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    arguments = [
        "sweep",
        "--out",
        str(tmp_path / "s"),
        "--set",
        "rounds=1",
        "--set",
        "model.hidden=[8]",
        "--set",
        'attacks=["none"]',
        "--seeds",
        "2",
        "--workers",
        "1",
        "--quiet",
    ]
    config_file = tmp_path / "base.toml"
    config_file.write_text("[data]\nnum_clients = 3\n")
    result = runner.invoke(cli_app(), [arguments[0], str(config_file), *arguments[1:]])
    assert result.exit_code == 0, result.output
    assert "2 runs finished, 0 already done, 0 failed" in result.output
    result = runner.invoke(cli_app(), ["report", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "report" / "report.html").is_file()
    bad = runner.invoke(
        cli_app(), ["sweep", str(config_file), "--out", str(tmp_path / "t"), "--grid", "local.lr="]
    )
    assert isinstance(bad.exception, FedpdmmError) and "empty value" in str(bad.exception)


@pytest.mark.slow
def test_reproduce_paper_quick_on_the_real_data(tmp_path: Path, real_data_dir: Path) -> None:
    """The MNIST claim, every target under both attacker states, quick, on the real data (the
    whole quick grid is `fedpdmm reproduce paper --quick`)."""
    result = CliRunner().invoke(
        cli_app(),
        [
            "reproduce",
            "paper",
            "--quick",
            "--only",
            "claims_mnist_bitflip",
            "--out",
            str(tmp_path),
            "--data-dir",
            str(real_data_dir),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    with (tmp_path / "report" / "claims.csv").open(newline="") as handle:
        claims = list(csv.reader(handle))
    assert len(claims) == 1 + len(reproduce.STATES) * len(TARGETS)
    assert {row[1] for row in claims[1:]} == set(reproduce.STATES)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "claims_mnist_bitflip" in markdown and "c_sensitivity" not in markdown
    assert not list(tmp_path.glob("*/failed/*.txt"))


def test_reproduce_only_refuses_an_unknown_experiment(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app(), ["reproduce", "paper", "--only", "nosuch", "--out", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "not an experiment of this reproduction" in str(result.exception or result.output)
