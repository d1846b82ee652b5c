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

`grid` plans a sweep and writes its `sweep.toml`; `runner` runs it; reading a saved sweep is
`fedpdmm.store`'s job and needs no training code.
"""

from fedpdmm.store import (
    FAILED_DIR,
    INDEX_FILE,
    MAX_NAME_LENGTH,
    SWEEP_FILE,
    failed_runs,
    is_finished,
    read_index,
    read_sweep_toml,
    run_name,
    value_label,
)
from fedpdmm.sweep.grid import (
    RunSpec,
    SweepPlan,
    load_plan,
    parse_grid,
    plan,
    prepare,
    set_key,
    split_top_level,
    sweep_toml,
    write_text_atomic,
)
from fedpdmm.sweep.runner import (
    LOCK_FILE,
    REUSE_DIR,
    STORAGE_ERRORS,
    SweepOutcome,
    SweepStatus,
    default_workers,
    execute_run,
    index_rows,
    locked,
    remove_partials,
    run_sweep,
    write_index,
)

__all__ = [
    "FAILED_DIR",
    "INDEX_FILE",
    "LOCK_FILE",
    "MAX_NAME_LENGTH",
    "REUSE_DIR",
    "STORAGE_ERRORS",
    "SWEEP_FILE",
    "RunSpec",
    "SweepOutcome",
    "SweepPlan",
    "SweepStatus",
    "default_workers",
    "execute_run",
    "failed_runs",
    "index_rows",
    "is_finished",
    "load_plan",
    "locked",
    "parse_grid",
    "plan",
    "prepare",
    "read_index",
    "read_sweep_toml",
    "remove_partials",
    "run_name",
    "run_sweep",
    "set_key",
    "split_top_level",
    "sweep_toml",
    "value_label",
    "write_index",
    "write_text_atomic",
]
