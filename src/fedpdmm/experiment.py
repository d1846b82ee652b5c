"""One experiment from config to files: the function behind `fedpdmm run` (and each sweep run)."""

from __future__ import annotations

from pathlib import Path

from fedpdmm import engine, results
from fedpdmm.config import Config


def run_experiment(
    config: Config,
    out: Path,
    *,
    data_dir: str | None = None,
    progress: engine.ProgressCallback | None = None,
    reuse: Path | None = None,
) -> results.WrittenRun:
    """Train every combination of `config` and write the run directory `out` atomically.

    `out` must not exist or be empty; on any error nothing is left under the name `out`.
    `reuse`: a folder of finished combinations shared with other runs (`fedpdmm.reuse`).
    """
    results.check_output_dir(out)
    setup, outcomes = engine.run(config, data_dir, progress, reuse)
    return results.write_run(out, setup, outcomes)
