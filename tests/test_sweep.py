"""Sweeps: grid parsing and expansion, resume after crashes, serial == parallel, failures, index."""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fedpdmm import config, sweep
from fedpdmm.errors import ConfigError, FedpdmmError
from fedpdmm.results import TIMING_COLUMNS

TINY = [
    "rounds=2",
    "eval_every=1",
    "data.num_clients=3",
    "model.hidden=[8]",
    "local.steps=2",
    'algorithms=["fedavg", "pdmm"]',
    'attacks=["none", "sign_flip"]',
    "attack.num_byzantine=1",
]


def tiny_plan(grid: list[str], seeds: int | None = None) -> sweep.SweepPlan:
    return sweep.plan(config.load(None, TINY), sweep.parse_grid(grid), seeds)


def index_csv(root: Path) -> list[dict[str, str]]:
    with (root / sweep.INDEX_FILE).open(newline="") as handle:
        return list(csv.DictReader(handle))


def stamps(root: Path, names: list[str]) -> dict[str, int]:
    return {name: (root / name / "metrics.csv").stat().st_mtime_ns for name in names}


# ---------------------------------------------------------------------------- grid


def test_split_respects_brackets_and_quotes() -> None:
    assert sweep.split_top_level('["pdmm"],["fedavg", "pdmm"]') == [
        '["pdmm"]',
        '["fedavg", "pdmm"]',
    ]
    assert sweep.split_top_level("'a,b',c") == ["'a,b'", "c"]
    with pytest.raises(ConfigError, match="unclosed"):
        sweep.split_top_level('["pdmm",')


def test_parse_grid_reads_toml_values_in_order() -> None:
    grid = sweep.parse_grid(
        [
            "local.lr=0.01,0.05",
            "attack.target=model,update,message",
            'algorithms=["pdmm"],["fedavg"]',
        ]
    )
    assert grid == {
        "local.lr": [0.01, 0.05],
        "attack.target": ["model", "update", "message"],
        "algorithms": [["pdmm"], ["fedavg"]],
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("local.lr=", "empty value"),
        ("local.lr=0.1,,0.2", "empty value"),
        ("local.lr", "key=v1,v2"),
        ("local.lr=0.1,0.1", "repeats"),
    ],
)
def test_parse_grid_rejects_bad_axes(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sweep.parse_grid([spec])


def test_parse_grid_rejects_a_key_given_twice() -> None:
    with pytest.raises(ConfigError, match="twice"):
        sweep.parse_grid(["local.lr=0.1", "local.lr=0.2"])


def test_plan_is_the_cartesian_product_with_a_seed_axis() -> None:
    plan = tiny_plan(["local.lr=0.01,0.05", "attack.target=model,message"], seeds=3)
    assert len(plan.runs) == 2 * 2 * 3
    assert plan.axes == ["local.lr", "attack.target", "seed"]
    first = plan.runs[0]
    assert first.name == "local.lr=0.01__attack.target=model__seed=0"
    assert (first.config.local.lr, first.config.attack.target, first.config.seed) == (
        0.01,
        "model",
        0,
    )
    assert [spec.config.seed for spec in plan.runs[:3]] == [0, 1, 2]
    assert len({spec.name for spec in plan.runs}) == len(plan.runs)


def test_seeds_start_at_the_config_seed() -> None:
    plan = sweep.plan(config.load(None, [*TINY, "seed=7"]), {}, seeds=2)
    assert [spec.config.seed for spec in plan.runs] == [7, 8]


def test_names_are_safe_directory_names() -> None:
    name = sweep.run_name({"algorithms": ["pdmm", "fedavg"], "data.options": {"a": "x/y"}})
    assert name == "algorithms=pdmm+fedavg__data.options=a-x-y"
    long = sweep.run_name({"key": "v" * 300})
    assert len(long) <= sweep.MAX_NAME_LENGTH and "~" in long


def test_unknown_key_fails_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"grid point local\.lrr=0\.1: unknown config key"):
        tiny_plan(["local.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"attack\.target"):
        tiny_plan(["attack.target=model,sideways"])
    with pytest.raises(ConfigError, match="not both"):
        tiny_plan(["seed=1,2"], seeds=2)
    assert not any(tmp_path.iterdir())


def test_unknown_algorithm_or_attack_fails_at_planning() -> None:
    with pytest.raises(ConfigError, match="fedavgg"):
        tiny_plan(['algorithms=["fedavgg"]'])
    with pytest.raises(ConfigError, match="sign_flipp"):
        tiny_plan(['attacks=["none", "sign_flipp"]'])


def test_resume_accepts_a_saved_config_that_lacks_keys_with_default_values(
    tmp_path: Path,
) -> None:
    plan = tiny_plan(["local.lr=0.01,0.05"])
    sweep.prepare(tmp_path, plan)
    saved = (tmp_path / sweep.SWEEP_FILE).read_text()
    trimmed = saved.replace('\n[config.fedavg]\nweighting = "uniform"\n', "\n")
    assert trimmed != saved
    (tmp_path / sweep.SWEEP_FILE).write_text(trimmed)
    sweep.prepare(tmp_path, plan)
    changed = sweep.plan(config.load(None, [*TINY, 'fedavg.weighting="samples"']), plan.grid)
    with pytest.raises(FedpdmmError, match=r"config\.fedavg\.weighting"):
        sweep.prepare(tmp_path, changed)


def test_fraction_axis_replaces_the_base_count() -> None:
    plan = tiny_plan(["attack.fraction=0,0.67"])
    assert [spec.config.num_byzantine for spec in plan.runs] == [0, 2]


def test_a_different_sweep_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    sweep.prepare(root, tiny_plan(["local.lr=0.01,0.05"]))
    with pytest.raises(FedpdmmError, match=r"holds a different sweep: grid\.local\.lr"):
        sweep.run_sweep(tiny_plan(["local.lr=0.01,0.1"]), root, workers=1)
    other_base = sweep.plan(config.load(None, [*TINY, "rounds=3"]), {"local.lr": [0.01, 0.05]})
    with pytest.raises(FedpdmmError, match=r"config\.rounds \(saved 2, now 3\)"):
        sweep.run_sweep(other_base, root, workers=1)
    assert sorted(p.name for p in root.iterdir()) == [sweep.SWEEP_FILE]


def test_a_non_sweep_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FedpdmmError, match="not a sweep directory"):
        sweep.run_sweep(tiny_plan([]), tmp_path, workers=1)


def test_plan_round_trips_through_sweep_toml(tmp_path: Path) -> None:
    plan = tiny_plan(['algorithms=["pdmm"],["fedavg"]', "local.lr=0.01,0.05"], seeds=2)
    sweep.prepare(tmp_path, plan)
    loaded = sweep.load_plan(tmp_path)
    assert loaded.grid == plan.grid
    assert [s.name for s in loaded.runs] == [s.name for s in plan.runs]
    assert [s.config for s in loaded.runs] == [s.config for s in plan.runs]


# ---------------------------------------------------------------------------- running


def test_resume_after_a_crash_redoes_only_unfinished_runs(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    plan = tiny_plan(["local.lr=0.01,0.05"], seeds=2)
    names = [spec.name for spec in plan.runs]
    first = sweep.run_sweep(plan, root, workers=1)
    assert first.finished == names and not first.failed
    # a crash: one run never renamed into place (partial temp dir), one never started
    lost, unstarted = names[1], names[3]
    os.replace(root / lost, root / f".{lost}.partial-abc123")
    (root / f".{lost}.partial-abc123" / "metrics.csv").write_text("truncated")
    for path in (root / unstarted).iterdir():
        path.unlink()
    (root / unstarted).rmdir()
    kept = [n for n in names if n not in (lost, unstarted)]
    before = stamps(root, kept)
    second = sweep.run_sweep(plan, root, workers=1)
    assert sorted(second.finished) == sorted([lost, unstarted])
    assert second.skipped == kept
    assert stamps(root, kept) == before
    assert not list(root.glob(".*.partial-*"))
    rows = index_csv(root)
    assert sorted({row["run"] for row in rows}) == sorted(names)
    per_run = len(rows) // len(names)
    assert all(sum(row["run"] == n for row in rows) == per_run for n in names)
    third = sweep.run_sweep(plan, root, workers=1)
    assert third.finished == [] and third.skipped == names


def test_resume_after_kill_9_of_the_whole_sweep(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    grid = ["local.lr=0.01,0.02,0.03,0.04,0.05,0.06"]
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from fedpdmm import config, sweep
        if __name__ == "__main__":
            plan = sweep.plan(config.load(None, {TINY!r}), sweep.parse_grid({grid!r}))
            sweep.run_sweep(plan, Path({str(root)!r}), workers=2)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    plan = tiny_plan(grid)
    names = [spec.name for spec in plan.runs]
    deadline = time.monotonic() + 120
    while not any(sweep.is_finished(root, n) for n in names) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = [n for n in names if sweep.is_finished(root, n)]
    assert finished, "no run finished before the deadline"
    before = stamps(root, finished)
    outcome = sweep.run_sweep(plan, root, workers=1)
    assert sorted(outcome.skipped) == sorted(finished)
    assert sorted(outcome.finished) == sorted(set(names) - set(finished))
    assert stamps(root, finished) == before
    assert not list(root.glob(".*.partial-*"))
    runs = [row["run"] for row in index_csv(root)]
    assert sorted(set(runs)) == sorted(names)
    assert len(runs) == len(names) * (len(runs) // len(names))


def test_parallel_and_serial_sweeps_give_identical_results(tmp_path: Path) -> None:
    plan = tiny_plan(["attack.target=model,update,message"], seeds=2)
    serial = sweep.run_sweep(plan, tmp_path / "serial", workers=1)
    parallel = sweep.run_sweep(plan, tmp_path / "parallel", workers=2)
    assert sorted(serial.finished) == sorted(parallel.finished) == sorted(s.name for s in plan.runs)
    a, b = index_csv(tmp_path / "serial"), index_csv(tmp_path / "parallel")
    assert len(a) == len(b) > 0
    for row_a, row_b in zip(a, b, strict=True):
        for column in TIMING_COLUMNS:
            row_a.pop(column), row_b.pop(column)
        assert row_a == row_b


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path: Path) -> None:
    plan = tiny_plan(["data.options={test_fraction = 0.2},{bogus = 1}"])
    good, bad = (spec.name for spec in plan.runs)
    statuses: list[sweep.SweepStatus] = []
    outcome = sweep.run_sweep(plan, tmp_path, workers=1, progress=statuses.append)
    assert outcome.finished == [good]
    assert "unknown data.options key 'bogus'" in outcome.failed[bad]
    assert sweep.failed_runs(tmp_path) == {bad: outcome.failed[bad]}
    assert {row["run"] for row in index_csv(tmp_path)} == {good}
    assert (statuses[-1].done, statuses[-1].failed, statuses[-1].total) == (1, 1, 2)
    again = sweep.run_sweep(plan, tmp_path, workers=1)
    assert again.skipped == [good] and list(again.failed) == [bad]


def test_disk_full_stops_the_sweep_with_one_line_and_keeps_finished_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tiny_plan(["local.lr=0.01,0.05,0.1"])
    names = [spec.name for spec in plan.runs]
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == names[1]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(FedpdmmError, match="No space left on device") as caught:
        sweep.run_sweep(plan, tmp_path, workers=1)
    assert "\n" not in str(caught.value) and "rerun the same command" in str(caught.value)
    assert sweep.is_finished(tmp_path, names[0])
    assert not sweep.is_finished(tmp_path, names[1]) and not (tmp_path / names[2]).exists()
    assert not list(tmp_path.glob(".*.partial-*"))
    monkeypatch.setattr(os, "replace", real_replace)
    resumed = sweep.run_sweep(plan, tmp_path, workers=1)
    assert resumed.skipped == [names[0]] and resumed.finished == names[1:]


def test_an_unwritable_directory_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(FedpdmmError, match="cannot create sweep directory"):
        sweep.run_sweep(tiny_plan([]), tmp_path / "file" / "sweep", workers=1)


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    plan = tiny_plan([])
    sweep.prepare(tmp_path, plan)
    with (
        sweep.locked(tmp_path),
        pytest.raises(FedpdmmError, match="another sweep is running in"),
    ):
        sweep.run_sweep(plan, tmp_path, workers=1)


def test_index_has_grid_columns_then_run_then_metrics(tmp_path: Path) -> None:
    plan = tiny_plan(["local.lr=0.01,0.05"])
    sweep.run_sweep(plan, tmp_path, workers=1)
    rows = index_csv(tmp_path)
    assert list(rows[0])[:6] == ["local.lr", "seed", "run", "num_clients", "algorithm", "attack"]
    lrs = {row["run"]: row["local.lr"] for row in rows}
    assert lrs == {"local.lr=0.01": "0.01", "local.lr=0.05": "0.05"}
    # 2 algorithms x (none + sign_flip) x rounds 0..2
    assert len(rows) == 2 * 2 * 2 * 3


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != "Z" and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _running(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_stopping_the_sweep_stops_its_workers(tmp_path: Path, sig: int) -> None:
    script = Path(sys.executable).with_name("fedpdmm")
    root = tmp_path / "sweep"
    base = tmp_path / "base.toml"
    base.write_text("rounds = 400\n")
    command = [str(script), "sweep", str(base), "--out", str(root), "--workers", "2", "--quiet"]
    command += ["--grid", "local.lr=0.01,0.02,0.03,0.04"]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while len(workers) < 2 and time.monotonic() < deadline:
        workers = _children(process.pid)
        time.sleep(0.1)
    assert len(workers) == 2, "the workers never started"
    time.sleep(3)  # into their first runs
    os.kill(process.pid, sig)
    process.wait(timeout=60)
    deadline = time.monotonic() + 20
    while _running(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(workers), "workers left running"
