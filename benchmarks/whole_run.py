"""Whole runs against a bare PyTorch loop: what a user waits for, evaluation and start-up included.

    python benchmarks/whole_run.py --data-dir /work/shared/datasets
    python benchmarks/whole_run.py --data-dir ... --cases 10 100       # skip the 1,000 clients

For each case (MNIST, MLP 784-200-10, the default local training: 10 steps of batch 32, lr 0.05,
the default evaluation every 5 rounds, one torch thread, no attack) it runs the `fedpdmm run`
command in a fresh process, by the absolute path of its console script, and beside it, in this
process at one thread, a bare loop (one `nn.Module`, `torch.optim.SGD`) that takes as many steps
on batches of as many samples (clients x batch) as the run trains on. Columns:

- `command s`: the whole command's wall time (interpreter start, imports, data loading, every
  algorithm's rounds, evaluation, writing the run directory); `rounds s`: the part inside the
  round loops (metrics.csv's last `wall_time` per algorithm, summed), of which `eval s`
  (`eval_time`, summed) is evaluation;
- `samples/s`: training samples of the run / command seconds; `bare/s`: the bare loop's;
  `ratio`: their quotient (the target is >= 0.5); `ratio rounds`: the same with the rounds' time
  only;
- `peak GB`: the command's peak resident memory (from `wait4`);
- `import s`: a fresh interpreter that only imports torch (`python -c "import torch"`), the
  floor under any command built on PyTorch: where it exceeds the bare loop's time, the command
  ratio cannot reach 1/2 whatever the command does.

Each case runs `--repeats` times, the command and the bare loop alternately; the table shows
medians. Compare ratios, not seconds: the machine may be shared.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fedpdmm.data import load_dataset

CASES = {  # clients: (rounds, algorithms)
    10: (20, ["pdmm"]),
    100: (10, ["pdmm"]),
    1000: (5, ["pdmm", "fedavg"]),
}
STEPS, BATCH, LR, HIDDEN = 10, 32, 0.05, 200


def command_path() -> str:
    """The `fedpdmm` console script next to this interpreter."""
    script = Path(sys.executable).with_name("fedpdmm")
    if not script.exists():
        raise SystemExit(f"no console script at {script}: install the package (pip install -e .)")
    return str(script)


def run_command(clients: int, rounds: int, algorithms: list[str], data_dir: str) -> dict:
    """Wall time, peak memory and the metric rows of one `fedpdmm run` in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        arguments = [
            command_path(),
            "run",
            "--quiet",
            "--out",
            str(out),
            "--data-dir",
            data_dir,
            "--set",
            "data.name=mnist",
            "--set",
            f"data.num_clients={clients}",
            "--set",
            f"rounds={rounds}",
            "--set",
            f"algorithms={algorithms!r}",
            "--set",
            "attacks=['none']",
        ]
        environment = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
        began = time.perf_counter()
        process = subprocess.Popen(arguments, env=environment, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - began
        code = os.waitstatus_to_exitcode(status)
        process.returncode = code  # reaped by wait4: keep Popen from waiting again
        if code != 0:
            raise SystemExit(f"fedpdmm run failed with exit code {code}")
        with (out / "metrics.csv").open() as handle:
            rows = list(csv.DictReader(handle))
    last: dict[str, float] = {}
    for row in rows:
        last[row["algorithm"]] = float(row["wall_time"])
    return {
        "command": seconds,
        "rounds": sum(last.values()),
        "eval": sum(float(row["eval_time"]) for row in rows),
        "peak": usage.ru_maxrss * 1024 / 1e9,
        "samples": sum(int(float(row["samples"])) for row in rows if int(row["round"]) == rounds),
    }


def import_seconds() -> float:
    """Wall time of a fresh interpreter that imports torch and exits."""
    environment = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], env=environment, check=True)
    return time.perf_counter() - began


def bare_loop(features: torch.Tensor, labels: torch.Tensor, steps: int, batch: int) -> float:
    """Seconds of `steps` SGD steps of one MLP on random batches of `batch` samples."""
    module = nn.Sequential(
        nn.Flatten(), nn.Linear(features[0].numel(), HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10)
    )
    optimizer = torch.optim.SGD(module.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(0)
    began = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(len(labels), (batch,), generator=gen)
        loss = F.cross_entropy(module(features[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--cases", type=int, nargs="+", default=sorted(CASES))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    header = (
        f"{'clients':>7} {'algorithms':>12} {'rounds':>6} {'command s':>9} {'rounds s':>8} "
        f"{'eval s':>6} {'eval %':>6} {'samples/s':>9} {'bare/s':>8} {'ratio':>5} "
        f"{'ratio rounds':>12} {'peak GB':>7} {'import s':>8}"
    )
    print(header)
    for clients in args.cases:
        rounds, algorithms = CASES[clients]
        measured, bare, imports = [], [], []
        for _ in range(args.repeats):
            measured.append(run_command(clients, rounds, algorithms, args.data_dir))
            imports.append(import_seconds())
            steps = rounds * STEPS * len(algorithms)
            bare.append(bare_loop(dataset.x_train, dataset.y_train, steps, clients * BATCH))
        median = {key: statistics.median(m[key] for m in measured) for key in measured[0]}
        bare_seconds = statistics.median(bare)
        samples = median["samples"]
        print(
            f"{clients:>7} {'+'.join(algorithms):>12} {rounds:>6} {median['command']:>9.1f} "
            f"{median['rounds']:>8.1f} {median['eval']:>6.1f} "
            f"{100 * median['eval'] / median['command']:>6.1f} "
            f"{samples / median['command']:>9.0f} {samples / bare_seconds:>8.0f} "
            f"{bare_seconds / median['command']:>5.2f} "
            f"{bare_seconds / median['rounds']:>12.2f} {median['peak']:>7.2f} "
            f"{statistics.median(imports):>8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
