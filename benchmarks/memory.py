"""Peak memory of a real `fedpdmm run`: 100 clients on MNIST with the MLP (target: under 2 GB).

    python benchmarks/memory.py --data-dir /work/shared/datasets [--set key=value ...]

Runs `python -m fedpdmm run` in a subprocess (every algorithm and attack of the default config,
3 rounds) and prints its maximum resident set size, read from `getrusage(RUSAGE_CHILDREN)`.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = ["data.name=mnist", "data.num_clients=100", "model.name=mlp", "rounds=3"]
SETTINGS += ["local.steps=10", "local.batch_size=64", "local.lr=0.05"]
LIMIT_BYTES = 2 * 10**9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="dataset folder (else FEDPDMM_DATA)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "fedpdmm", "run", "--quiet", "--out", f"{folder}/run"]
        for setting in SETTINGS + args.extra:
            command += ["--set", setting]
        if args.data_dir:
            command += ["--data-dir", args.data_dir]
        began = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True)
        if finished.returncode != 0:
            sys.exit(f"fedpdmm run failed ({finished.returncode}): {finished.stderr.strip()}")
        seconds = time.perf_counter() - began
        written = sorted(path.name for path in Path(folder, "run").iterdir())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kilobytes on Linux
    print(f"command: {' '.join(command[1:])}")
    print(f"wrote: {', '.join(written)} in {seconds:.0f} s")
    print("\n| run | peak RSS | limit | under limit |")
    print("|---|---:|---:|---|")
    verdict = "yes" if peak < LIMIT_BYTES else "NO"
    settings = ", ".join(SETTINGS + args.extra)
    print(f"| {settings} | {peak / 10**9:.2f} GB | {LIMIT_BYTES / 10**9:.0f} GB | {verdict} |")


if __name__ == "__main__":
    main()
