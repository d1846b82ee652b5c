"""Resumable parallel sweeps: the cartesian product of config axes, one run directory per point.

    plan = sweep.plan(base_config, sweep.parse_grid(["local.lr=0.01,0.05"]), seeds=3)
    outcome = sweep.run_sweep(plan, Path("sweeps/lr"), workers=2)

A sweep directory holds `sweep.toml` (base config, grid, seeds: what the sweep is), one run
directory per grid point (written by `fedpdmm.experiment.run_experiment` under a temporary name and
renamed when complete, so a directory with its final name is a finished run), `failed/<run>.txt`
(the one-line error of each failed run) and `index.csv` (one row per finished run and evaluated
round, rebuilt from the run directories). Running the same sweep again skips finished runs and
redoes the others; a different base config or grid into the same directory is an error before
anything runs. Scripts that call `run_sweep` with workers > 1 need the usual
`if __name__ == "__main__":` guard (worker processes are spawned).
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import csv
import fcntl
import hashlib
import itertools
import multiprocessing
import os
import re
import shutil
import time
import tomllib
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpdmm import config as config_module
from fedpdmm import engine
from fedpdmm.errors import ConfigError, FedpdmmError
from fedpdmm.results import METRIC_COLUMNS, read_metrics

SWEEP_FILE = "sweep.toml"
INDEX_FILE = "index.csv"
FAILED_DIR = "failed"
LOCK_FILE = ".sweep.lock"
MAX_NAME_LENGTH = 120
STORAGE_ERRORS = tuple(
    os.strerror(code) for code in (28, 30, 122)
)  # ENOSPC, EROFS, EDQUOT: every later run would fail the same way


@dataclass(frozen=True)
class RunSpec:
    """One grid point: its directory name, its grid values (`key -> value`) and its config."""

    name: str
    params: dict[str, Any]
    config: config_module.Config


@dataclass(frozen=True)
class SweepPlan:
    """A base config (resolved, as plain data), the grid axes in order, and their runs."""

    base: dict[str, Any]
    grid: dict[str, list[Any]]
    runs: list[RunSpec]

    @property
    def axes(self) -> list[str]:
        """The grid keys, `seed` included when it is an axis."""
        return list(self.grid)


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


# ---------------------------------------------------------------------------- grid


def split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets, braces and quotes: `[1,2],[3]` -> `["[1,2]", "[3]"]`."""
    parts, depth, quote, start = [], 0, "", 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if quote or depth != 0:
        raise ConfigError(f"--grid value {text!r} has an unclosed quote or bracket")
    parts.append(text[start:])
    return [part.strip() for part in parts]


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """`["local.lr=0.01,0.05", "attack.target=model,update"]` -> `{"local.lr": [0.01, 0.05], ...}`.

    Each value is read by `fedpdmm.config.parse_value` (TOML, or a bare word as a string).
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid expects key=v1,v2,..., got {spec!r}")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one --grid")
        texts = split_top_level(text) if text.strip() else []
        if not texts or any(not part for part in texts):
            raise ConfigError(
                f"--grid {key} has an empty value in {text!r}; give values as {key}=v1,v2"
            )
        values = [config_module.parse_value(part) for part in texts]
        if len({_canonical(value) for value in values}) != len(values):
            raise ConfigError(f"--grid {key} repeats a value in {text!r}")
        grid[key] = values
    return grid


def _canonical(value: Any) -> str:
    return repr(value)


def value_label(value: Any) -> str:
    """A short text for a grid value: `0.05`, `pdmm+fedavg` for a list, `true` for a bool."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "+".join(value_label(item) for item in value)
    if isinstance(value, dict):
        return ";".join(f"{key}:{value_label(item)}" for key, item in value.items())
    return str(value)


def run_name(params: dict[str, Any]) -> str:
    """The directory name of a grid point: `local.lr=0.05__seed=1` (unsafe characters as `-`)."""
    if not params:
        return "base"
    text = "__".join(f"{key}={value_label(value)}" for key, value in params.items())
    name = re.sub(r"[^A-Za-z0-9._+=-]", "-", text)
    if len(name) > MAX_NAME_LENGTH or name.startswith("."):
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        name = f"{name.lstrip('.')[: MAX_NAME_LENGTH - 12]}~{digest}"
    return name


def _set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--grid {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _copy(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_copy(value) for value in data]
    return data


def plan(
    base: config_module.Config, grid: dict[str, list[Any]], seeds: int | None = None
) -> SweepPlan:
    """Every grid point as a validated config; `seeds=N` adds the axis `seed = base.seed + i`.

    Raises `ConfigError` (naming the key and the grid point) before anything runs.
    """
    grid = dict(grid)
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {seeds}")
        if "seed" in grid:
            raise ConfigError("give the seeds either as --seeds N or as --grid seed=..., not both")
        grid["seed"] = [base.seed + offset for offset in range(seeds)]
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"--grid {key} has no values; give at least one")
    base_raw = config_module.to_dict(base)
    runs, names = [], {}
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=True))
        raw = _copy(base_raw)
        for key, value in params.items():
            _set_key(raw, key, value)
        if "attack.fraction" in params:
            raw.get("attack", {}).pop("num_byzantine", None)
        if "attack.num_byzantine" in params:
            raw.get("attack", {}).pop("fraction", None)
        try:
            point = config_module.validate(raw)
            engine.check_names(point)
        except ConfigError as error:
            where = ", ".join(f"{k}={value_label(v)}" for k, v in params.items())
            raise ConfigError(f"grid point {where}: {error}") from None
        name = run_name(params)
        if name in names:
            raise ConfigError(
                f"grid points {names[name]} and {params} get the same directory name {name!r}; "
                "make the values differ in letters or digits"
            )
        names[name] = params
        runs.append(RunSpec(name, params, point))
    return SweepPlan(base_raw, grid, runs)


# ---------------------------------------------------------------------------- sweep.toml


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_inline(v)}' for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_inline(item) for item in value) + "]"
    return config_module._toml_value(value)


def sweep_toml(sweep_plan: SweepPlan) -> str:
    """The text of `sweep.toml`: `grid` as `[[key, [values]], ...]` (order kept), then the base."""
    axes = [[key, values] for key, values in sweep_plan.grid.items()]
    head = f"# fedpdmm sweep: grid axes in order, then the base config\ngrid = {_inline(axes)}\n"
    body = config_module.dump_toml({"config": sweep_plan.base})
    return head + "\n" + body


def read_sweep_toml(root: Path) -> dict[str, Any]:
    """`{"grid": {key: values}, "config": base}` from `root/sweep.toml`."""
    try:
        with (root / SWEEP_FILE).open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise FedpdmmError(f"{root} is not a sweep directory (no {SWEEP_FILE})") from None
    except (tomllib.TOMLDecodeError, OSError) as error:
        raise FedpdmmError(f"cannot read {root / SWEEP_FILE}: {error}") from None
    return {"grid": {key: values for key, values in data.get("grid", [])}, "config": data["config"]}


def load_plan(root: Path) -> SweepPlan:
    """The plan stored in `root/sweep.toml` (to resume, index or report a sweep)."""
    stored = read_sweep_toml(root)
    return plan(config_module.validate(stored["config"]), stored["grid"])


def _first_difference(old: Any, new: Any, path: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    return None if old == new else f"{path} (saved {old!r}, now {new!r})"


def _write_text_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def prepare(root: Path, sweep_plan: SweepPlan) -> None:
    """Create `root` with its `sweep.toml`, or check that the saved one describes this sweep."""
    text = sweep_toml(sweep_plan)
    if (root / SWEEP_FILE).exists():
        saved = read_sweep_toml(root)
        try:
            saved["config"] = config_module.to_dict(config_module.validate(saved["config"]))
        except ConfigError as error:
            raise FedpdmmError(
                f"the sweep saved in {root} no longer validates ({error}); use another --out"
            ) from None
        parsed = tomllib.loads(text)
        now = {
            "grid": {k: v for k, v in parsed["grid"]},
            "config": config_module.to_dict(config_module.validate(parsed["config"])),
        }
        difference = _first_difference(saved, now)
        if difference:
            raise FedpdmmError(
                f"{root} holds a different sweep: {difference}; use another --out, or rerun the "
                "saved sweep with its own config and grid"
            )
        return
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FedpdmmError(f"{root} exists and is not a sweep directory; choose another --out")
    try:
        root.mkdir(parents=True, exist_ok=True)
        _write_text_atomic(root / SWEEP_FILE, text)
    except OSError as error:
        raise FedpdmmError(f"cannot create sweep directory {root}: {error.strerror}") from None


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


# ---------------------------------------------------------------------------- state and index


def is_finished(root: Path, name: str) -> bool:
    """A run is finished when its directory exists under the final name with its metrics.csv."""
    return (root / name / "metrics.csv").is_file()


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
    """One row per finished run and metrics row: grid values (and `seed` when it is not an axis),
    `run`, `num_clients`, then the run's metrics.csv columns."""
    rows = []
    for spec in sweep_plan.runs:
        if not is_finished(root, spec.name):
            continue
        grid_values = {key: _cell(value) for key, value in spec.params.items()}
        grid_values.setdefault("seed", spec.config.seed)
        for metrics in read_metrics(root / spec.name / "metrics.csv"):
            rows.append(
                {
                    **grid_values,
                    "run": spec.name,
                    "num_clients": spec.config.data.num_clients,
                    **metrics,
                }
            )
    return rows


def _cell(value: Any) -> Any:
    """A grid value as an index cell: numbers and strings as they are, anything else as a label."""
    plain = isinstance(value, int | float | str) and not isinstance(value, bool)
    return value if plain else value_label(value)


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


def read_index(path: Path) -> list[dict[str, Any]]:
    """Read an `index.csv` back (numbers converted, like `fedpdmm.results.read_metrics`)."""
    return read_metrics(path)


def failed_runs(root: Path) -> dict[str, str]:
    """Run name -> recorded one-line error, for the runs whose last attempt failed."""
    folder = root / FAILED_DIR
    if not folder.is_dir():
        return {}
    return {path.stem: _first_line(path.read_text()) for path in sorted(folder.glob("*.txt"))}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _record_failure(root: Path, name: str, message: str) -> None:
    try:
        (root / FAILED_DIR).mkdir(exist_ok=True)
        _write_text_atomic(root / FAILED_DIR / f"{name}.txt", message + "\n")
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

    torch.set_num_threads(1)


def execute_run(config_data: dict[str, Any], out: str, data_dir: str | None) -> str | None:
    """Run one grid point into `out`; return None on success, else the one-line error (for an
    unexpected exception, followed by a blank line and its traceback)."""
    from fedpdmm.experiment import run_experiment

    try:
        run_experiment(config_module.validate(config_data), Path(out), data_dir=data_dir)
    except FedpdmmError as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    except Exception as error:
        line = f"{type(error).__name__}: {error}".splitlines()[0]
        return f"{line}\n\n{traceback.format_exc()}"
    return None


def _run_in_process(config_data: dict[str, Any], out: str, data_dir: str | None) -> str | None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return execute_run(config_data, out, data_dir)
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
) -> SweepOutcome:
    """Run every unfinished grid point of `sweep_plan` under `root`; resumable and parallel.

    `workers=1` runs in this process (one torch thread); more use a spawn-context process pool,
    one torch thread per worker. A failing run is recorded in `failed/<run>.txt` and the others go
    on; a full or read-only disk stops the sweep with a `FedpdmmError` (finished runs stay intact).
    """
    workers = workers or default_workers()
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    prepare(root, sweep_plan)
    outcome = SweepOutcome(root)
    with locked(root):
        remove_partials(root, [spec.name for spec in sweep_plan.runs])
        pending = []
        for spec in sweep_plan.runs:
            if is_finished(root, spec.name):
                outcome.skipped.append(spec.name)
            else:
                pending.append(spec)
        status = SweepStatus(total=len(sweep_plan.runs), skipped=len(outcome.skipped))
        status.done = len(outcome.skipped)
        tracker = _Tracker(root, sweep_plan, outcome, status, progress, index_every_s)
        tracker.report()
        if workers == 1 or len(pending) <= 1:
            for spec in pending:
                status.running = 1
                tracker.report()
                began = time.perf_counter()
                error = _run_in_process(
                    config_module.to_dict(spec.config), str(root / spec.name), data_dir
                )
                tracker.complete(spec, error, time.perf_counter() - began, 1)
        else:
            _run_pool(pending, root, workers, data_dir, tracker)
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
            error = _first_line(error)
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
    pending: list[RunSpec], root: Path, workers: int, data_dir: str | None, tracker: _Tracker
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
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
