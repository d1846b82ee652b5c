"""The combinations of many sweeps computed in one worker pool, longest first.

A sweep's unit of work is a run, and a run trains its combinations one after the other. With
shared combinations (`fedpdmm.reuse`) runs differ widely in what is left to compute (a run whose
twin under the other attacker state already trained its unattacked and echo-free combinations
has only a few left), and the sweeps of a reproduction run one after another, so workers wait
at every sweep's end while the last long run finishes. Here the unit is one combination of one
run: every combination the unfinished runs of all the given sweeps need, each computed once,
is queued in decreasing order of its estimated cost (rounds x clients x local steps x batch) and
fed to the workers as they free up, so they idle only while the last few short ones finish. A
worker stores each result in the shared folder; the runs then find every combination there and
only write their directories.

The numbers are the same as computing each run alone: a combination is trained on the setup of
its own run's config (`engine.run_combination`, the same call a run makes), and its key is the
one the run looks up. A worker keeps the last few setups it built, since consecutive tasks
mostly come from one run. A combination that fails here is left for its run, which computes it
again and records the error the usual way.
"""

from __future__ import annotations

import concurrent.futures as futures
import json
import multiprocessing
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpdmm import config as config_module
from fedpdmm import reuse as reuse_module
from fedpdmm.store import first_line, is_finished
from fedpdmm.sweep.grid import SweepPlan

SETUPS_KEPT = 2
"""Setups (data, network, initial model) a worker keeps for the next tasks of the same run."""


@dataclass(frozen=True)
class Task:
    """One combination of one run: its key in the shared folder, the run's config (plain
    data), the (algorithm, attack, target) triple and its estimated cost."""

    key: str
    config: dict[str, Any]
    combination: tuple[str, str, str]
    cost: float


@dataclass
class PoolStatus:
    """Counts for a progress display: combinations computed, running and left to the runs
    (failed here), and the estimated seconds left (None until one has finished)."""

    total: int
    done: int = 0
    running: int = 0
    failed: int = 0
    eta_s: float | None = None
    unit: str = "combinations"


def estimated_cost(config: config_module.Config) -> float:
    """Training samples of the combination: rounds x clients x local steps x batch size."""
    local = config.local
    return float(config.rounds * config.data.num_clients * local.steps * local.batch_size)


def pending_tasks(
    jobs: Sequence[tuple[SweepPlan, Path]], reuse: Path, data_dir: str | None
) -> list[Task]:
    """The combinations that the unfinished runs of `jobs` (plan, sweep directory) need and that
    `reuse` does not hold, each once, longest first (ties in run order)."""
    from fedpdmm.engine import combinations

    seen: set[str] = set()
    tasks: list[Task] = []
    for sweep_plan, root in jobs:
        for spec in sweep_plan.runs:
            if is_finished(root, spec.name):
                continue
            config = spec.config
            setting = "graph" if config.decentralized else "server"
            data = config_module.to_dict(config)
            for combination in combinations(config):
                key = reuse_module.combination_key(config, combination, setting, data_dir)
                if key in seen or reuse_module.load(reuse, key) is not None:
                    continue
                seen.add(key)
                tasks.append(Task(key, data, combination, estimated_cost(config)))
    order = sorted(range(len(tasks)), key=lambda index: (-tasks[index].cost, index))
    return [tasks[index] for index in order]


_setups: OrderedDict[str, Any] = OrderedDict()


def _setup_of(config_data: dict[str, Any], data_dir: str | None):
    from fedpdmm.setup import build_setup

    name = json.dumps(config_data, sort_keys=True, default=str)
    if name in _setups:
        _setups.move_to_end(name)
        return _setups[name]
    setup = build_setup(config_module.validate(config_data), data_dir)
    _setups[name] = setup
    while len(_setups) > SETUPS_KEPT:
        _setups.popitem(last=False)
    return setup


def compute_task(
    config_data: dict[str, Any],
    combination: tuple[str, str, str],
    key: str,
    data_dir: str | None,
    reuse: str,
) -> str | None:
    """Train one combination on its run's setup and store it under `key` (a worker's task);
    None on success or when another process holds or has stored it, else the one-line error."""
    from fedpdmm import devices, engine
    from fedpdmm.errors import FedpdmmError

    folder = Path(reuse)
    try:
        with reuse_module.claim(folder, key) as mine:
            if not mine or reuse_module.load(folder, key) is not None:
                return None
            setup = _setup_of(config_data, data_dir)
            with devices.default_device(setup.x0.device):
                result = engine.run_combination(setup, *combination)
            reuse_module.store(folder, key, result.rows, result.status)
    except FedpdmmError as error:
        return first_line(str(error)) or type(error).__name__
    except Exception as error:
        return first_line(f"{type(error).__name__}: {error}")
    return None


def compute_combinations(
    jobs: Sequence[tuple[SweepPlan, Path]],
    reuse: Path,
    *,
    workers: int,
    data_dir: str | None = None,
    progress: Callable[[PoolStatus], None] | None = None,
) -> PoolStatus:
    """Compute every pending combination of `jobs` into `reuse` with `workers` processes (one
    torch thread each). A config whose combination failed gets no more tasks here (its runs
    report the error); a dead worker ends this phase and leaves the rest to the runs."""
    from fedpdmm.sweep.runner import _init_worker, _kill_workers

    tasks = pending_tasks(jobs, reuse, data_dir)
    status = PoolStatus(total=len(tasks))
    if not tasks:
        return status
    queue = list(reversed(tasks))
    total_cost = sum(task.cost for task in tasks)
    finished_cost = 0.0
    failed_configs: set[str] = set()
    began = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    pool = futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
    in_flight: dict[futures.Future, tuple[Task, str]] = {}

    def report() -> None:
        status.running = len(in_flight)
        if progress is not None:
            progress(status)

    try:
        while queue or in_flight:
            while queue and len(in_flight) < workers:
                task = queue.pop()
                name = json.dumps(task.config, sort_keys=True, default=str)
                if name in failed_configs:
                    status.failed += 1
                    continue
                future = pool.submit(
                    compute_task, task.config, task.combination, task.key, data_dir, str(reuse)
                )
                in_flight[future] = (task, name)
            if not in_flight:
                break
            report()
            done, _ = futures.wait(in_flight, return_when=futures.FIRST_COMPLETED)
            for future in done:
                task, name = in_flight.pop(future)
                try:
                    error = future.result()
                except futures.process.BrokenProcessPool:
                    status.failed += len(queue) + len(in_flight) + 1
                    queue.clear()
                    in_flight.clear()
                    break
                finished_cost += task.cost
                if error is None:
                    status.done += 1
                else:
                    status.failed += 1
                    failed_configs.add(name)
                elapsed = time.perf_counter() - began
                status.eta_s = elapsed * (total_cost - finished_cost) / finished_cost
        report()
    except KeyboardInterrupt:
        _kill_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    status.running = 0
    return status
