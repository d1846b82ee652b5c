"""Combinations of many sweeps in one pool: each computed once, longest first, the same numbers
as the runs computing them, and a failure left to its run."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_reuse import GRAPH, SERVER, metric_rows

from fedpdmm import config, sweep
from fedpdmm.errors import FedpdmmError
from fedpdmm.sweep import pool


def test_pooled_combinations_equal_each_run_computing_its_own(tmp_path: Path) -> None:
    jobs = []
    for name, overrides in (("server", SERVER), ("graph", GRAPH)):
        plan = sweep.plan(config.load(None, overrides), {"attack.state": ["honest", "received"]})
        jobs.append((plan, tmp_path / "pooled" / name))
    folder = tmp_path / "pooled" / sweep.REUSE_DIR
    tasks = pool.pending_tasks(jobs, folder, None)
    assert len(tasks) == 10 == len({task.key for task in tasks})  # 5 unique per setting
    status = pool.compute_combinations(jobs, folder, workers=2)
    assert (status.total, status.done, status.failed) == (10, 10, 0)
    assert pool.pending_tasks(jobs, folder, None) == []
    for plan, root in jobs:  # the pool wrote every run as soon as its combinations were stored
        assert sorted(status.written[str(root)]) == sorted(spec.name for spec in plan.runs)
        indexed = sweep.run_sweep(plan, root, workers=1, reuse=folder)
        assert sorted(indexed.skipped) == sorted(status.written[str(root)])
        alone = sweep.run_sweep(plan, tmp_path / "alone" / root.name, workers=1, reuse=False)
        assert not indexed.failed and not alone.failed
        assert metric_rows(root) == metric_rows(tmp_path / "alone" / root.name)
    assert len(list(folder.glob("*.pickle"))) == 10


def test_the_longest_combinations_come_first_and_finished_runs_need_none(tmp_path: Path) -> None:
    base = config.load(None, SERVER)
    plan = sweep.plan(base, {"rounds": [1, 3, 2]})
    tasks = pool.pending_tasks([(plan, tmp_path)], tmp_path / sweep.REUSE_DIR, None)
    assert [task.config["rounds"] for task in tasks] == [3] * 4 + [2] * 4 + [1] * 4
    assert [task.combination for task in tasks[:4]] == [
        ("pdmm", "none", "none"),
        ("pdmm", "sign_flip", "message"),
        ("fedavg", "none", "none"),
        ("fedavg", "sign_flip", "message"),
    ]
    sweep.run_sweep(plan, tmp_path, workers=1, reuse=False)
    assert pool.pending_tasks([(plan, tmp_path)], tmp_path / sweep.REUSE_DIR, None) == []


def test_a_combination_that_fails_in_the_pool_is_left_to_its_run(
    tmp_path: Path, isolated_data_env
) -> None:
    empty = tmp_path / "no-data"
    empty.mkdir()
    base = config.load(None, [*SERVER, 'data.name="mnist"'])
    plan = sweep.plan(base, {"local.lr": [0.05, 0.1]})
    status = pool.compute_combinations(
        [(plan, tmp_path / "sweep")], tmp_path / "shared", workers=2, data_dir=str(empty)
    )
    # the first failure of each config stops its other tasks: all 8 count as failed here
    assert (status.total, status.done, status.failed) == (8, 0, 8)
    outcome = sweep.run_sweep(
        plan, tmp_path / "sweep", workers=2, data_dir=str(empty), reuse=tmp_path / "shared"
    )
    assert status.written == {}
    assert sorted(outcome.failed) == sorted(spec.name for spec in plan.runs)
    assert all("mnist" in error.lower() for error in outcome.failed.values())
    assert not list((tmp_path / "shared").glob("*.pickle"))


def test_a_parallel_sweep_counts_the_runs_its_pool_wrote_as_finished(tmp_path: Path) -> None:
    plan = sweep.plan(config.load(None, SERVER), {"local.lr": [0.05, 0.1]})
    outcome = sweep.run_sweep(plan, tmp_path / "sweep", workers=2)
    assert sorted(outcome.finished) == sorted(spec.name for spec in plan.runs)
    assert outcome.skipped == [] and outcome.failed == {}
    again = sweep.run_sweep(plan, tmp_path / "sweep", workers=2)
    assert sorted(again.skipped) == sorted(outcome.finished) and again.finished == []


def test_the_pool_holds_the_sweep_lock(tmp_path: Path) -> None:
    plan = sweep.plan(config.load(None, SERVER), {"local.lr": [0.05, 0.1]})
    root = tmp_path / "sweep"
    sweep.prepare(root, plan)
    with sweep.locked(root), pytest.raises(FedpdmmError, match="another sweep is running"):
        pool.compute_combinations([(plan, root)], tmp_path / "shared", workers=2)


def test_a_worker_builds_each_setup_once_for_consecutive_tasks(monkeypatch, tmp_path) -> None:
    import fedpdmm.setup

    built = []
    real = fedpdmm.setup.build_setup

    def counting(config_value, data_dir=None):
        built.append(config_value.local.lr)
        return real(config_value, data_dir)

    monkeypatch.setattr(fedpdmm.setup, "build_setup", counting)
    monkeypatch.setattr(pool, "_setups", type(pool._setups)())
    plan = sweep.plan(config.load(None, SERVER), {"local.lr": [0.05, 0.1, 0.2]})
    tasks = pool.pending_tasks([(plan, tmp_path)], tmp_path / "shared", None)
    for task in tasks:
        error = pool.compute_task(task.config, task.combination, task.key, None, str(tmp_path))
        assert error is None
    assert built == [0.05, 0.1, 0.2]  # tasks in run order: one setup per run
