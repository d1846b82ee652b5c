"""The combinations of many sweeps computed in one worker pool, longest first.

A sweep's unit of work is a run, and a run trains its combinations one after the other. With
shared combinations (`fedpdmm.reuse`) runs differ widely in what is left to compute (a run whose
twin under the other attacker state already trained its unattacked and echo-free combinations
has only a few left), and the sweeps of a reproduction run one after another, so workers wait
at every sweep's end while the last long run finishes. Here the unit is one combination of one
run: every combination the unfinished runs of all the given sweeps need, each computed once,
is queued in decreasing order of its estimated cost (rounds x clients x local steps x batch) and
fed to the workers as they free up, so they idle only while the last few short ones finish. A
worker stores each result in the shared folder; as soon as every combination of a run is there,
writing that run's directory is the next task (so finished runs appear, and `fedpdmm report`
reads them, while the rest computes). The sweep directories are locked for the whole phase.

The numbers are the same as computing each run alone: a combination is trained on the setup of
its own run's config (`engine.run_combination`, the same call a run makes), and its key is the
one the run looks up. A worker keeps the last setup it built, since its consecutive tasks
mostly come from one run. A combination that fails here is left for its run, which computes it
again and records the error the usual way; a full disk or a dead worker ends the phase.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import json
import multiprocessing
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpdmm import config as config_module
from fedpdmm import reuse as reuse_module
from fedpdmm.store import first_line, is_finished
from fedpdmm.sweep.grid import RunSpec, SweepPlan, prepare

SETUPS_KEPT = 1
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
    (failed or not started here), the estimated seconds left (None until one has finished),
    and the runs whose directories the pool wrote (sweep directory -> run names)."""

    total: int
    done: int = 0
    running: int = 0
    failed: int = 0
    eta_s: float | None = None
    unit: str = "combinations"
    written: dict[str, list[str]] = field(default_factory=dict)


def estimated_cost(config: config_module.Config) -> float:
    """Training samples of the combination: rounds x clients x local steps x batch size."""
    local = config.local
    return float(config.rounds * config.data.num_clients * local.steps * local.batch_size)


def run_keys(spec: RunSpec, data_dir: str | None) -> list[str]:
    """The keys of the combinations of one run, in its order."""
    from fedpdmm.engine import combinations

    config = spec.config
    setting = "graph" if config.decentralized else "server"
    return [
        reuse_module.combination_key(config, combination, setting, data_dir)
        for combination in combinations(config)
    ]


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
            data = config_module.to_dict(spec.config)
            keys = run_keys(spec, data_dir)
            for key, combination in zip(keys, combinations(spec.config), strict=True):
                if key in seen or reuse_module.load(reuse, key) is not None:
                    continue
                seen.add(key)
                tasks.append(Task(key, data, combination, estimated_cost(spec.config)))
    order = sorted(range(len(tasks)), key=lambda index: (-tasks[index].cost, index))
    return [tasks[index] for index in order]


_setups: OrderedDict[str, Any] = OrderedDict()


def _setup_of(config_data: dict[str, Any], data_dir: str | None):
    from fedpdmm.setup import build_setup

    name = json.dumps([config_data, data_dir], sort_keys=True, default=str)
    if name in _setups:
        _setups.move_to_end(name)
        return _setups[name]
    while len(_setups) >= SETUPS_KEPT:  # free the old one before building the next
        _setups.popitem(last=False)
    setup = build_setup(config_module.validate(config_data), data_dir)
    _setups[name] = setup
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
    except OSError as error:
        return first_line(f"cannot store a combination in {folder}: {error.strerror}")
    except Exception as error:
        return first_line(f"{type(error).__name__}: {error}")
    return None


@dataclass
class _Run:
    root: Path
    spec: RunSpec
    missing: set[str]


def compute_combinations(
    jobs: Sequence[tuple[SweepPlan, Path]],
    reuse: Path,
    *,
    workers: int,
    data_dir: str | None = None,
    progress: Callable[[PoolStatus], None] | None = None,
    lock: bool = True,
) -> PoolStatus:
    """Compute every pending combination of `jobs` into `reuse` with `workers` processes (one
    torch thread each), and write each run whose combinations are all stored.

    `lock`: hold each sweep directory's lock meanwhile (False when the caller holds it). A
    config whose combination failed gets no more tasks here (its runs report the error); a full
    disk or a dead worker ends this phase and leaves the rest to the runs."""
    tasks = pending_tasks(jobs, reuse, data_dir)
    status = PoolStatus(total=len(tasks))
    if not tasks:
        return status
    runs = []
    for sweep_plan, root in jobs:
        for spec in sweep_plan.runs:
            if not is_finished(root, spec.name):
                runs.append(_Run(root, spec, set(run_keys(spec, data_dir))))
    computing = {task.key for task in tasks}
    with contextlib.ExitStack() as stack:
        if lock:
            from fedpdmm.sweep.runner import locked

            for sweep_plan, root in jobs:
                prepare(root, sweep_plan)
                stack.enter_context(locked(root))
        for run in runs:  # combinations stored before this call
            run.missing &= computing
        _drive(tasks, runs, status, reuse, workers, data_dir, progress)
    return status


def _drive(tasks, runs, status, reuse, workers, data_dir, progress) -> None:
    from fedpdmm.sweep.runner import STORAGE_ERRORS, _init_worker, _kill_workers, execute_run

    queue: list[Task | _Run] = list(reversed(tasks))
    ready = [run for run in runs if not run.missing]
    total_cost = sum(task.cost for task in tasks)
    finished_cost = 0.0
    failed_configs: set[str] = set()
    began = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    pool = futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
    in_flight: dict[futures.Future, Task | _Run] = {}

    def report() -> None:
        status.running = sum(isinstance(item, Task) for item in in_flight.values())
        if progress is not None:
            progress(status)

    def submit(item: Task | _Run) -> futures.Future:
        if isinstance(item, _Run):
            out = str(item.root / item.spec.name)
            data = config_module.to_dict(item.spec.config)
            return pool.submit(execute_run, data, out, data_dir, str(reuse))
        return pool.submit(
            compute_task, item.config, item.combination, item.key, data_dir, str(reuse)
        )

    stop = False
    try:
        while (queue or ready or in_flight) and not stop:
            while (ready or queue) and len(in_flight) < workers:
                item = ready.pop() if ready else queue.pop()
                if isinstance(item, Task):
                    name = json.dumps(item.config, sort_keys=True, default=str)
                    if name in failed_configs:
                        status.failed += 1
                        finished_cost += item.cost
                        continue
                try:
                    in_flight[submit(item)] = item
                except futures.process.BrokenProcessPool:
                    stop = True
                    break
            if not in_flight:
                break
            report()
            done, _ = futures.wait(in_flight, return_when=futures.FIRST_COMPLETED)
            for future in done:
                item = in_flight.pop(future)
                try:
                    error = future.result()
                except futures.process.BrokenProcessPool:
                    stop = True
                    continue
                if isinstance(item, _Run):
                    if error is None:
                        status.written.setdefault(str(item.root), []).append(item.spec.name)
                    continue
                finished_cost += item.cost
                stored = error is None and reuse_module.load(reuse, item.key) is not None
                if stored:
                    status.done += 1
                    for run in runs:
                        if item.key in run.missing:
                            run.missing.discard(item.key)
                            if not run.missing:
                                ready.append(run)
                elif error is not None:
                    status.failed += 1
                    failed_configs.add(json.dumps(item.config, sort_keys=True, default=str))
                    if any(text in error for text in STORAGE_ERRORS):
                        stop = True
                if finished_cost > 0:
                    elapsed = time.perf_counter() - began
                    status.eta_s = elapsed * (total_cost - finished_cost) / finished_cost
        if stop:
            status.failed = status.total - status.done
        report()
    except KeyboardInterrupt:
        _kill_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    status.running = 0
