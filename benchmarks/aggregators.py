"""Time and peak memory of every aggregation rule, beside ByzFL's version on the same input.

    python benchmarks/aggregators.py --n 100 --d 1000000 --repeat 3 --threads 2

Each (rule, library) pair runs in a fresh subprocess that builds the same float32 input
(`torch.randn` from a fixed seed), calls the rule once to warm up, then `--repeat` times.
Reported: the fastest call in wall seconds (the least disturbed by other processes), the
fewest CPU seconds of a call (all threads; less sensitive to other processes than wall time),
and the peak resident memory of the process above its level once the input exists (`getrusage`
max RSS, so it counts every temporary the call allocated, torch's or not). fedpdmm rules are called
directly, not through `aggregate` (whose non-finite filter is timed on its own row). ByzFL
(`pip install --no-deps byzfl`, not a fedpdmm dependency) is loaded without its top-level
`__init__`, which imports torchvision. Rules ByzFL lacks show "-", calls that fail "error"
(with the reason in the last column). The machine's load average is printed before and after:
other processes on the same cores slow every number down.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
import types
from collections.abc import Callable

import torch

RULES = (
    "mean",
    "median",
    "trimmed_mean",
    "meamed",
    "krum",
    "multi_krum",
    "geometric_median",
    "bulyan",
    "centered_clipping",
    "foolsgold",
    "dnc",
    "fltrust",
    "nnm",
    "bucketing",
    "clip",
    "arc",
    "nonfinite_filter",
)
TAU = 100.0  # clipping radius for centered_clipping and clip (rows have norm ~1000)
GM_EPS, GM_ITERS = 0.1, 3  # ByzFL's GeometricMedian defaults (nu, T), used by both libraries


def fedpdmm_call(rule: str, x: torch.Tensor, f: int) -> Callable[[], object] | None:
    from fedpdmm import aggregators as agg

    gen = torch.Generator().manual_seed(0)
    zeros, mean = torch.zeros(x.shape[1]), x.mean(dim=0)
    calls: dict[str, Callable[[], object]] = {
        "mean": lambda: agg.get("mean")(x),
        "median": lambda: agg.get("median")(x),
        "trimmed_mean": lambda: agg.get("trimmed_mean", f=f)(x),
        "meamed": lambda: agg.get("meamed", f=f)(x),
        "krum": lambda: agg.get("krum", f=f)(x),
        "multi_krum": lambda: agg.get("multi_krum", f=f)(x),
        "geometric_median": lambda: agg.get(
            "geometric_median", eps=GM_EPS, max_iter=GM_ITERS, tol=0.0
        )(x),
        "bulyan": lambda: agg.get("bulyan", f=f)(x),
        "centered_clipping": lambda: agg.get("centered_clipping", tau=TAU)(x, center=zeros),
        "foolsgold": lambda: agg.get("foolsgold")(x),
        "dnc": lambda: agg.get("dnc", f=f)(x, generator=gen),
        "fltrust": lambda: agg.get("fltrust")(x, reference=mean),
        "nnm": lambda: agg.get_pre("nnm", f=f)(x),
        "bucketing": lambda: agg.get_pre("bucketing", s=2)(x, generator=gen),
        "clip": lambda: agg.get_pre("clip", tau=TAU)(x),
        "arc": lambda: agg.get_pre("arc", f=f)(x),
        "nonfinite_filter": lambda: agg.finite_rows(x),
    }
    return calls.get(rule)


def load_byzfl_aggregators() -> types.ModuleType:
    """`byzfl.aggregators` without running `byzfl/__init__.py` (which imports torchvision)."""
    spec = importlib.util.find_spec("byzfl")
    if spec is None or spec.submodule_search_locations is None:
        raise SystemExit("ByzFL is not installed: pip install --no-deps byzfl")
    package = types.ModuleType("byzfl")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["byzfl"] = package
    return importlib.import_module("byzfl.aggregators")


def byzfl_call(rule: str, x: torch.Tensor, f: int) -> Callable[[], object] | None:
    b = load_byzfl_aggregators()
    work = x.clone()  # Clipping and ARC overwrite their input; refreshed outside the timing

    def in_place(fn: Callable[[torch.Tensor], object]) -> Callable[[], object]:
        def run() -> object:
            return fn(work)

        run.refresh = lambda: work.copy_(x)  # type: ignore[attr-defined]
        return run

    calls: dict[str, Callable[[], object]] = {
        "mean": lambda: b.Average()(x),
        "median": lambda: b.Median()(x),
        "trimmed_mean": lambda: b.TrMean(f=f)(x),
        "meamed": lambda: b.Meamed(f=f)(x),
        "krum": lambda: b.Krum(f=f)(x),
        "multi_krum": lambda: b.MultiKrum(f=f)(x),
        "geometric_median": lambda: b.GeometricMedian(nu=GM_EPS, T=GM_ITERS)(x),
        "centered_clipping": lambda: b.CenteredClipping(L=1, tau=TAU)(x),
        "nnm": lambda: b.NNM(f=f)(x),
        "bucketing": lambda: b.Bucketing(s=2)(x),
        "clip": in_place(b.Clipping(c=TAU)),
        "arc": in_place(b.ARC(f=f)),
    }
    return calls.get(rule)


def worker(args: argparse.Namespace) -> None:
    """Run one rule of one library; print {"seconds", "peak_mb"} or {"error"} as JSON."""
    torch.set_num_threads(args.threads)
    x = torch.randn(args.n, args.d, generator=torch.Generator().manual_seed(0))
    build = fedpdmm_call if args.worker == "fedpdmm" else byzfl_call
    call = build(args.rules, x, args.f)
    if call is None:
        print(json.dumps({"missing": True}))
        return
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refresh = getattr(call, "refresh", lambda: None)
    wall, cpu = [], []
    try:
        for _ in range(args.repeat + 1):
            refresh()
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    except Exception as error:
        message = "out of memory" if "DefaultCPUAllocator" in str(error) else str(error)
        print(json.dumps({"error": f"{type(error).__name__}: {message}"[:80]}))
        return
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline
    result = {"seconds": min(wall[1:]), "cpu": min(cpu[1:]), "peak_mb": peak_kib / 1024}
    print(json.dumps(result))


def run_worker(library: str, rule: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", library, "--rules", rule]
    for key in ("n", "d", "f", "repeat", "threads"):
        command += [f"--{key}", str(getattr(args, key))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["crashed"])[-1][:80]}
    return json.loads(lines[-1])


def cell(result: dict, key: str, digits: int) -> str:
    if result.get("missing"):
        return "-"
    if "error" in result:
        return "error"
    return f"{result[key]:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="rows")
    parser.add_argument("--d", type=int, default=1_000_000, help="coordinates")
    parser.add_argument("--f", type=int, default=10, help="Byzantine budget of the rules")
    parser.add_argument("--rules", default=",".join(RULES), help="comma-separated names")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls after one warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument("--worker", choices=["fedpdmm", "byzfl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print(
        f"n={args.n}, d={args.d}, f={args.f}, float32, {args.threads} threads, best of "
        f"{args.repeat}; input {args.n * args.d * 4 / 2**20:.0f} MB; peak MB = max RSS above "
        "the input; ratio = fedpdmm / byzfl\n"
    )
    print(
        "| rule | fedpdmm s | byzfl s | ratio | fedpdmm cpu s | byzfl cpu s "
        "| fedpdmm peak MB | byzfl peak MB | byzfl note |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for rule in args.rules.split(","):
        ours, theirs = run_worker("fedpdmm", rule, args), run_worker("byzfl", rule, args)
        ratio = "-"
        if "seconds" in ours and "seconds" in theirs:
            ratio = f"{ours['seconds'] / theirs['seconds']:.2f}"
        note = theirs.get("error", "")
        print(
            f"| {rule} | {cell(ours, 'seconds', 3)} | {cell(theirs, 'seconds', 3)} | {ratio} "
            f"| {cell(ours, 'cpu', 3)} | {cell(theirs, 'cpu', 3)} "
            f"| {cell(ours, 'peak_mb', 0)} | {cell(theirs, 'peak_mb', 0)} | {note} |",
            flush=True,
        )
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
