"""Per-round latency of fedpdmm on Flower's deployment runtime, on loopback, and where it goes.

    python benchmarks/flower_latency.py --nodes 4 16 --rounds 4

For each federation size, and each SuperNode mode in the same run (`cold`: Flower's own
`flower-supernode`, a fresh `flwr-clientapp` process per message; `warm`: the launcher's default,
ClientApp tasks forked from a SuperExec that imported torch and fedpdmm once, with short polling,
`fedpdmm.flower.warm`): start a SuperLink and N SuperNodes on 127.0.0.1, run PDMM (digits,
MLP, 10 local steps, evaluation only at the end) and read the ServerApp's `flower_rounds.csv`.
`speed-up` is the cold round over the warm round at the same size.
Columns (medians over rounds 2..R; round 1 includes first-message costs):

    round       wall time of a round at the server
    flower      round - client process work - server work: SuperNode idle poll (3 s),
                message routing, starting a `flwr-clientapp` process per message
    import      importing torch + fedpdmm in that fresh process (slowest client)
    client      fedpdmm's handler on the node (slowest client), of which `train` is the K SGD
                steps (the first torch.func call in a fresh process pays a one-time import of
                torch._dynamo)
    overhead    fedpdmm's own work beside training: client handler - train + server work
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

from fedpdmm import config as config_module
from fedpdmm.flower.launcher import LocalFederation


def measure(nodes: int, rounds: int, steps: int, keep: Path | None, warm: bool) -> dict:
    config = config_module.validate(
        {
            "rounds": rounds,
            "eval_every": rounds,
            "algorithms": ["pdmm"],
            "attacks": ["none"],
            "data": {"name": "digits", "num_clients": nodes},
            "local": {"steps": steps},
        }
    )
    with tempfile.TemporaryDirectory(prefix="fedpdmm-bench-") as scratch:
        mode = "warm" if warm else "cold"
        folder = keep / f"nodes-{nodes}-{mode}" if keep else Path(scratch)
        began = time.perf_counter()
        with LocalFederation(nodes, Path(folder) / "federation", warm=warm) as federation:
            started = time.perf_counter() - began
            out = Path(folder) / "run"
            federation.run(config, out, round_timeout=600, discovery_timeout=900, timeout=3600)
        with (out / "flower_rounds.csv").open() as handle:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    if any(row["replies"] < nodes for row in rows):
        raise SystemExit(f"{nodes} nodes: some rounds lost replies: {rows}")
    later = rows[1:] or rows
    server = [row["server_seconds_before"] for row in rows[1:]] or [0.0]
    exchange = statistics.median(row["exchange_seconds"] for row in later)
    client = statistics.median(row["client_handler_max"] for row in later)
    compute = statistics.median(row["client_compute_max"] for row in later)
    imports = statistics.median(row["client_import_max"] for row in later)
    server_seconds = statistics.median(server)
    overhead = max(client - compute, 0.0) + server_seconds
    flower = exchange - client - imports
    return {
        "mode": "warm" if warm else "cold",
        "nodes": nodes,
        "startup": started,
        "round": exchange + server_seconds,
        "flower": flower,
        "import": imports,
        "client": client,
        "train": compute,
        "server": server_seconds,
        "overhead": overhead,
        "overhead_share": overhead / flower,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="keep logs and run directories here")
    parser.add_argument("--modes", nargs="+", choices=["cold", "warm"], default=["cold", "warm"])
    args = parser.parse_args()
    print(
        "| nodes | mode | start-up (s) | round (s) | speed-up | Flower (s) "
        "| import torch+fedpdmm (s) | client handler (s) | of which train (s) | server (s) "
        "| fedpdmm overhead (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for nodes in args.nodes:
        cold = None
        for mode in args.modes:
            m = measure(nodes, args.rounds, args.steps, args.keep, warm=mode == "warm")
            cold = m["round"] if mode == "cold" else cold
            speedup = f"{cold / m['round']:.1f}x" if cold and mode == "warm" else ""
            print(
                f"| {m['nodes']} | {mode} | {m['startup']:.1f} | {m['round']:.2f} | {speedup} "
                f"| {m['flower']:.2f} | {m['import']:.2f} | {m['client']:.3f} "
                f"| {m['train']:.3f} | {m['server']:.3f} | {m['overhead']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
