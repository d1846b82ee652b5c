"""Reports from hand-written fake results: tables match hand-computed values; plots are written."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import pytest

from fedpdmm import config, report, results, sweep
from fedpdmm.errors import FedpdmmError

BASE = ["data.num_clients=10", 'algorithms=["pdmm", "fedavg"]']
PNG = b"\x89PNG\r\n\x1a\n"

# final accuracy of seed 0; seed s adds 0.02 * s
FINAL = {
    ("pdmm", "none"): lambda frac, alpha: 0.90,
    ("fedavg", "none"): lambda frac, alpha: 0.92,
    ("pdmm", "sign_flip"): lambda frac, alpha: 0.80 - frac,
    ("fedavg", "sign_flip"): lambda frac, alpha: 0.10,
    ("pdmm", "gaussian"): lambda frac, alpha: 0.70,
    ("fedavg", "gaussian"): lambda frac, alpha: 0.50 - alpha / 10,
}


def fake_rows(algorithm: str, attack: str, frac: float, alpha: float, seed: int) -> list[dict]:
    """Rounds 0, 5, 10: 0.1, a bump (+0.03 for fedavg under sign flip, else -0.05), the final.
    fedavg under gaussian at alpha 1, fraction 0.4, seed 1 diverges at round 5 (NaN)."""
    final = FINAL[(algorithm, attack)](frac, alpha) + 0.02 * seed
    bump = 0.03 if (algorithm, attack) == ("fedavg", "sign_flip") else -0.05
    byzantine = 0 if attack == "none" else round(frac * 10)
    target = "none" if attack == "none" else "message"
    points = [(0, 0.1, 2.3), (5, final + bump, 1.0), (10, final, 0.5)]
    if (algorithm, attack, alpha, frac, seed) == ("fedavg", "gaussian", 1.0, 0.4, 1):
        points = [(0, 0.1, 2.3), (5, math.nan, math.nan)]
    return [
        {
            "algorithm": algorithm,
            "attack": attack,
            "target": target,
            "round": rnd,
            "test_accuracy": acc,
            "test_loss": loss,
            "num_byzantine": byzantine,
            "wall_time": 0.0,
        }
        for rnd, acc, loss in points
    ]


@pytest.fixture(scope="module")
def fake_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fake") / "sweep"
    grid = sweep.parse_grid(["attack.fraction=0.2,0.4", "data.alpha=0.1,1.0"])
    plan = sweep.plan(config.load(None, BASE), grid, seeds=2)
    sweep.prepare(root, plan)
    for spec in plan.runs:
        frac, alpha, seed = (
            spec.params["attack.fraction"],
            spec.params["data.alpha"],
            spec.params["seed"],
        )
        rows = [
            row
            for algorithm in ("pdmm", "fedavg")
            for attack in ("none", "sign_flip", "gaussian")
            for row in fake_rows(algorithm, attack, frac, alpha, seed)
        ]
        (root / spec.name).mkdir()
        results.write_metrics(root / spec.name / "metrics.csv", rows)
    # an unfinished run's leftovers are never read
    (root / ".attack.fraction=0.2__data.alpha=0.1__seed=0.partial-x").mkdir()
    return root


def table_dict(header: list[str], rows: list[list]) -> dict[tuple, dict[str, str]]:
    keyed = {}
    for row in rows:
        named = dict(zip(header, map(str, row), strict=True))
        keyed[(named["algorithm"], named["data.alpha"], named["attack"], named["Byzantine"])] = (
            named
        )
    return keyed


def test_cells_group_seeds_and_count_clean_runs_once(fake_sweep: Path) -> None:
    found = report.cells(report.load_results(fake_sweep))
    # 2 alphas x 2 algorithms x (none + 2 attacks x 2 Byzantine counts)
    assert len(found) == 2 * 2 * 5
    assert all(len(cell.series) == 2 for cell in found)
    assert report.setting_axes(["attack.fraction", "data.alpha", "seed"]) == ["data.alpha"]


def test_accuracy_table_matches_hand_computed_values(fake_sweep: Path) -> None:
    found = report.cells(report.load_results(fake_sweep))
    table = table_dict(*report.accuracy_table(found, ["data.alpha"]))
    # seeds 0.60 and 0.62: mean 61, sample std 0.02 / sqrt(2) = 1.41 points
    row = table[("pdmm", "0.1", "sign_flip", "2")]
    assert (row["final acc (%)"], row["best acc (%)"], row["seeds"]) == (
        "61.00 ± 1.41",
        "61.00 ± 1.41",
        "2",
    )
    row = table[("pdmm", "0.1", "sign_flip", "4")]
    assert row["final acc (%)"] == "41.00 ± 1.41"
    # best is the bump at round 5
    row = table[("fedavg", "1.0", "sign_flip", "4")]
    assert (row["final acc (%)"], row["best acc (%)"]) == ("11.00 ± 1.41", "14.00 ± 1.41")
    # the diverged seed counts as 0: finals 0.40 and 0 -> 20.00 ± 28.28; bests 0.40 and 0.10
    row = table[("fedavg", "1.0", "gaussian", "4")]
    assert (row["final acc (%)"], row["best acc (%)"], row["diverged"]) == (
        "20.00 ± 28.28",
        "25.00 ± 21.21",
        "1/2",
    )
    row = table[("fedavg", "0.1", "none", "0")]
    assert (row["final acc (%)"], row["target"]) == ("93.00 ± 1.41", "none")


def test_worst_case_over_attacks_per_method(fake_sweep: Path) -> None:
    found = report.cells(report.load_results(fake_sweep))
    worst = {(w["method"], w["num_byzantine"]): w for w in report.worst_cases(found)}
    assert len(worst) == 2 * 2 * 2
    pdmm = worst[("pdmm (data.alpha=0.1)", 4)]
    assert pdmm["by"] == "sign_flip @ message" and pdmm["attacks"] == 2
    assert pdmm["final"][0] == pytest.approx(0.41)
    assert pdmm["clean"][0] == pytest.approx(0.91)
    # at two Byzantine clients PDMM's worst attack is still sign flip (0.61 < 0.71)
    assert worst[("pdmm (data.alpha=0.1)", 2)]["final"][0] == pytest.approx(0.61)
    assert worst[("fedavg (data.alpha=1.0)", 4)]["final"][0] == pytest.approx(0.11)
    header, rows = report.worst_case_table(list(worst.values()))
    assert header[2] == "worst final acc (%)"
    assert [
        "pdmm (data.alpha=0.1)",
        4,
        "41.00 ± 1.41",
        "sign_flip @ message",
        2,
        "91.00 ± 1.41",
    ] in rows


def test_heatmap_values_are_worst_cases_over_byzantine_count_and_alpha(fake_sweep: Path) -> None:
    found = report.cells(report.load_results(fake_sweep))
    assert (
        report.heterogeneity_axis(["attack.fraction", "data.alpha", "seed"], found) == "data.alpha"
    )
    values = report.heatmap_values(found, "data.alpha")
    assert set(values) == {"pdmm", "fedavg"}
    assert values["pdmm"][(2, 0.1)] == pytest.approx(0.61)
    assert values["pdmm"][(4, 1.0)] == pytest.approx(0.41)
    assert values["fedavg"][(4, 1.0)] == pytest.approx(0.11)


def test_band_is_mean_and_std_over_the_seeds_reaching_each_round(fake_sweep: Path) -> None:
    found = report.cells(report.load_results(fake_sweep))
    cell = next(
        c
        for c in found
        if (c.algorithm, c.attack, c.num_byzantine, dict(c.setting)["data.alpha"])
        == ("fedavg", "gaussian", 4, 1.0)
    )
    rounds, means, stds = report.band(cell)
    assert rounds == [0, 5, 10]
    assert means[0] == pytest.approx(10.0) and stds[0] == 0.0
    assert means[2] == pytest.approx(40.0) and stds[2] == 0.0  # only seed 0 reached round 10


def test_report_files_are_written_and_self_contained(fake_sweep: Path, tmp_path: Path) -> None:
    out = report.write_report(fake_sweep, tmp_path / "report")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["breakdown.png", "curves_1.png", "heatmap.png", "report.html", "report.md"]
    for name in ("breakdown.png", "curves_1.png", "heatmap.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    markdown = (out / "report.md").read_text()
    assert (
        "| pdmm | 0.1 | sign_flip | message | 2 | 2 | 61.00 ± 1.41 | 61.00 ± 1.41 | 0/2 |"
        in markdown
    )
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        assert (out / link).is_file()
    page = (out / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(PNG) for i in images)
    assert "src='curves" not in page and "61.00 ± 1.41" in page
    again = report.write_report(fake_sweep, tmp_path / "report")
    assert sorted(p.name for p in again.iterdir()) == names


def test_plots_the_grid_cannot_support_are_skipped_with_a_note(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        row
        for algorithm in ("pdmm", "fedavg")
        for attack in ("none", "sign_flip")
        for row in fake_rows(algorithm, attack, 0.2, 0.1, 0)
    ]
    results.write_metrics(run / "metrics.csv", rows)
    (run / "config.toml").write_text(config.dump_toml(config.to_dict(config.load(None, BASE))))
    out = report.write_report(run)
    assert out == run / "report"
    assert sorted(p.name for p in out.glob("*.png")) == ["curves_1.png"]
    markdown = (out / "report.md").read_text()
    assert "Breakdown curve skipped" in markdown and "Heatmap skipped" in markdown
    assert "| pdmm | sign_flip | message | 2 | 1 | 60.00 | 60.00 | 0/1 |" in markdown


def test_a_directory_without_results_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FedpdmmError, match="holds no results"):
        report.write_report(tmp_path)


def test_mean_std_uses_the_sample_standard_deviation() -> None:
    assert report.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    mean, std = report.mean_std([0.5])
    assert mean == 0.5 and math.isnan(std)
