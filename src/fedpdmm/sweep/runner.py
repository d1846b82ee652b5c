"""Running a sweep plan: resumable, parallel, one lock per sweep directory, failures recorded."""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import csv
import fcntl
import multiprocessing
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpdmm import config as config_module
from fedpdmm import store
from fedpdmm.errors import ConfigError, FedpdmmError
from fedpdmm.results import METRIC_COLUMNS
from fedpdmm.store import FAILED_DIR, INDEX_FILE, first_line, is_finished
from fedpdmm.sweep.grid import RunSpec, SweepPlan, prepare, write_text_atomic

LOCK_FILE = ".sweep.lock"
REUSE_DIR = ".combinations"
"""The folder, under a sweep's root, of finished combinations shared by its runs
(`fedpdmm.reuse`)."""
STORAGE_ERRORS = tuple(
    os.strerror(code) for code in (28, 30, 122)
)  # ENOSPC, EROFS, EDQUOT: every later run would fail the same way


@dataclass
class SweepStatus:
    """Counts for a progress display; `eta_s` is None until a run has finished in this session."""

    total: int
    done: int = 0
    running: int = 0
    failed: int = 0
    skipped: int = 0
    eta_s: float | None = None
    last: str = ""


@dataclass
class SweepOutcome:
    """What `run_sweep` did: runs finished now, skipped as already finished, and failed (name ->
    one-line error)."""

    root: Path
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------- directory


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on `root` (released by the OS even after kill -9)."""
    try:
        handle = (root / LOCK_FILE).open("a")
    except OSError as error:
        raise FedpdmmError(f"cannot write to sweep directory {root}: {error.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FedpdmmError(
                f"another sweep is running in {root}; wait for it or choose another --out"
            ) from None
        yield


def remove_partials(root: Path, names: Sequence[str]) -> list[Path]:
    """Delete the temporary directories that killed runs of this sweep left behind."""
    wanted = set(names)
    removed = []
    for path in root.glob(".*.partial-*"):
        if path.is_dir() and path.name[1:].split(".partial-")[0] in wanted:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def index_rows(root: Path, sweep_plan: SweepPlan) -> list[dict[str, Any]]:
    """The index rows of the finished runs of `sweep_plan` under `root` (see `store.index_rows`)."""
    return store.index_rows(store.StoredSweep(root, sweep_plan.grid, sweep_plan.base))


def write_index(root: Path, sweep_plan: SweepPlan) -> Path:
    """Rebuild `root/index.csv` from the finished runs (to a temporary file, then renamed)."""
    rows = index_rows(root, sweep_plan)
    axes = sweep_plan.axes if "seed" in sweep_plan.axes else [*sweep_plan.axes, "seed"]
    columns = [*axes, "run", "num_clients", *METRIC_COLUMNS]
    columns += sorted({key for row in rows for key in row} - set(columns))
    path = root / INDEX_FILE
    partial = root / f".{INDEX_FILE}.partial"
    try:
        with partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({key: _csv(row.get(key, "")) for key in columns})
        os.replace(partial, path)
    except OSError as error:
        raise FedpdmmError(f"cannot write {path}: {error.strerror}") from None
    return path


def _csv(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value


def _record_failure(root: Path, name: str, message: str) -> None:
    try:
        (root / FAILED_DIR).mkdir(exist_ok=True)
        write_text_atomic(root / FAILED_DIR / f"{name}.txt", message + "\n")
    except OSError as error:
        raise FedpdmmError(
            f"cannot record the failure of run {name} in {root}: {error.strerror}; "
            "finished runs are intact, free space and rerun the same command to resume"
        ) from None


def _clear_failure(root: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (root / FAILED_DIR / f"{name}.txt").unlink()


# ---------------------------------------------------------------------------- running


def _init_worker() -> None:
    import torch

    from fedpdmm.interrupts import die_with_parent

    die_with_parent()
    torch.set_num_threads(1)


def execute_run(
    config_data: dict[str, Any], out: str, data_dir: str | None, reuse: str | None = None
) -> str | None:
    """Run one grid point into `out`; return None on success, else the one-line error (for an
    unexpected exception, followed by a blank line and its traceback). `reuse`: the folder of
    finished combinations shared with the other runs (`fedpdmm.reuse`), or None."""
    from fedpdmm.experiment import run_experiment

    try:
        run_experiment(
            config_module.validate(config_data),
            Path(out),
            data_dir=data_dir,
            reuse=Path(reuse) if reuse is not None else None,
        )
    except FedpdmmError as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    except Exception as error:
        line = f"{type(error).__name__}: {error}".splitlines()[0]
        return f"{line}\n\n{traceback.format_exc()}"
    return None


def _run_in_process(
    config_data: dict[str, Any], out: str, data_dir: str | None, reuse: str | None
) -> str | None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return execute_run(config_data, out, data_dir, reuse)
    finally:
        torch.set_num_threads(threads)


def default_workers() -> int:
    """One worker per core available to this process."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def run_sweep(
    sweep_plan: SweepPlan,
    root: Path,
    *,
    workers: int | None = None,
    data_dir: str | None = None,
    progress: Callable[[SweepStatus], None] | None = None,
    index_every_s: float = 10.0,
    reuse: Path | bool = True,
    pool_progress: Callable[[Any], None] | None = None,
    pooled: bool = True,
    written: Sequence[str] = (),
) -> SweepOutcome:
    """Run every unfinished grid point of `sweep_plan` under `root`; resumable and parallel.

    `workers=1` runs in this process (one torch thread); more use a spawn-context process pool,
    one torch thread per worker. A failing run is recorded in `failed/<run>.txt` and the others go
    on; a full or read-only disk stops the sweep with a `FedpdmmError` (finished runs stay intact).
    `reuse`: True shares finished combinations between the runs through `root/.combinations`
    (`fedpdmm.reuse`: the same numbers, computed once), a path shares them through that folder,
    False computes every combination of every run. With a shared folder, more than one worker
    and `pooled`, the runs' combinations are first computed in one pool, longest first
    (`fedpdmm.sweep.pool`, which also writes each run whose combinations are all stored;
    `pool_progress` gets its `PoolStatus`); the runs left then find their combinations stored.
    `written`: runs that a caller's pool finished during this call (counted as finished, not as
    already done).
    """
    workers = workers or default_workers()
    if reuse is True:
        shared: str | None = str(root / REUSE_DIR)
    else:
        shared = str(reuse) if reuse else None
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    prepare(root, sweep_plan)
    outcome = SweepOutcome(root)
    with locked(root):
        remove_partials(root, [spec.name for spec in sweep_plan.runs])
        finished_now = set(written)
        if shared is not None and workers > 1 and pooled:
            from fedpdmm.sweep.pool import compute_combinations

            pooled_status = compute_combinations(
                [(sweep_plan, root)],
                Path(shared),
                workers=workers,
                data_dir=data_dir,
                progress=pool_progress,
                lock=False,
            )
            finished_now |= set(pooled_status.written.get(str(root), []))
        pending = []
        for spec in sweep_plan.runs:
            if not is_finished(root, spec.name):
                pending.append(spec)
            elif spec.name in finished_now:
                outcome.finished.append(spec.name)
            else:
                outcome.skipped.append(spec.name)
        status = SweepStatus(total=len(sweep_plan.runs), skipped=len(outcome.skipped))
        status.done = len(outcome.skipped) + len(outcome.finished)
        tracker = _Tracker(root, sweep_plan, outcome, status, progress, index_every_s)
        tracker.report()
        if workers == 1 or len(pending) <= 1:
            for spec in pending:
                status.running = 1
                tracker.report()
                began = time.perf_counter()
                error = _run_in_process(
                    config_module.to_dict(spec.config), str(root / spec.name), data_dir, shared
                )
                tracker.complete(spec, error, time.perf_counter() - began, 1)
        else:
            _run_pool(pending, root, workers, data_dir, tracker, shared)
        status.running = 0
        write_index(root, sweep_plan)
        tracker.report()
    return outcome


class _Tracker:
    """Bookkeeping shared by the serial and the pool paths: records, status, periodic index."""

    def __init__(self, root, sweep_plan, outcome, status, progress, index_every_s) -> None:
        self.root, self.plan, self.outcome, self.status = root, sweep_plan, outcome, status
        self.progress, self.index_every_s = progress, index_every_s
        self.began = time.perf_counter()
        self.last_index = self.began
        self.durations: list[float] = []

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.status)

    def complete(self, spec: RunSpec, error: str | None, seconds: float, workers: int) -> None:
        status = self.status
        if error is None:
            _clear_failure(self.root, spec.name)
            self.outcome.finished.append(spec.name)
            status.done += 1
        else:
            _record_failure(self.root, spec.name, error)
            error = first_line(error)
            self.outcome.failed[spec.name] = error
            status.failed += 1
            if any(text in error for text in STORAGE_ERRORS):
                raise FedpdmmError(
                    f"run {spec.name} failed: {error}; finished runs are intact, free space or "
                    "fix the directory and rerun the same command to resume"
                )
        self.durations.append(seconds)
        remaining = status.total - status.done - status.failed
        mean = sum(self.durations) / len(self.durations)
        status.eta_s = mean * remaining / workers
        status.last = spec.name
        now = time.perf_counter()
        if now - self.last_index >= self.index_every_s:
            write_index(self.root, self.plan)
            self.last_index = now
        self.report()


def _run_pool(
    pending: list[RunSpec],
    root: Path,
    workers: int,
    data_dir: str | None,
    tracker: _Tracker,
    reuse: str | None,
) -> None:
    """Keep at most `workers` runs in flight; a killed worker fails only the runs then in flight."""
    queue = list(reversed(pending))
    context = multiprocessing.get_context("spawn")
    while queue:
        pool = futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
        in_flight: dict[futures.Future, tuple[RunSpec, float]] = {}
        broken = False
        try:
            while queue or in_flight:
                while queue and len(in_flight) < workers and not broken:
                    spec = queue.pop()
                    future = pool.submit(
                        execute_run,
                        config_module.to_dict(spec.config),
                        str(root / spec.name),
                        data_dir,
                        reuse,
                    )
                    in_flight[future] = (spec, time.perf_counter())
                if not in_flight:
                    break
                tracker.status.running = len(in_flight)
                tracker.report()
                done, _ = futures.wait(in_flight, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    spec, began = in_flight.pop(future)
                    try:
                        error = future.result()
                    except futures.process.BrokenProcessPool:
                        broken = True
                        error = "the worker process died (killed or out of memory)"
                    tracker.status.running = len(in_flight)
                    tracker.complete(spec, error, time.perf_counter() - began, workers)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the runs in flight now
            _kill_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _kill_workers(pool: futures.ProcessPoolExecutor) -> None:
    """SIGKILL the pool's worker processes (their unfinished runs are partial directories that
    the next run of the sweep removes)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError):
            process.kill()
