"""Settings checked against the machine and the data before anything large is allocated.

A run keeps every node's model as one float32 tensor `[n, d]` (n clients, d parameters) and, on a
graph, per-edge tensors `[2E, d]`; `check_memory` refuses a run whose state cannot fit in the
available memory with a one-line `ConfigError`, instead of an allocator traceback mid-setup.
`check_root_size` refuses an FLTrust root dataset larger than the training set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from fedpdmm.config import Config
from fedpdmm.errors import ConfigError
from fedpdmm.models import ConvSpec, build_module

FLOAT_BYTES = 4
NODE_COPIES = 10
"""`[n, d]` float32 tensors alive at the peak of a round or an evaluation.

Three persist (the clients' models and duals, the server's per-client duals in PDMM); a round
adds up to five (its start, prox centre, trained models, messages, robust differences) and an
evaluation two float64 copies of the honest models for the consensus distance (four float32 units),
so ten bounds every algorithm with room to spare."""
EDGE_COPIES = 4
"""`[2E, d]` float32 tensors alive at once on a graph: PDMM's duals, the messages, the messages
each receiver gathers and the new duals (gossip keeps fewer)."""
INDEX_BYTES = 8


def num_parameters(
    model_name: str,
    input_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] | None = None,
    conv: ConvSpec | None = None,
) -> int:
    """d of `fedpdmm.models.FlatModel.build(...)`, counted on the meta device (nothing is
    allocated, whatever the layer sizes); the models' own errors for impossible shapes."""
    module = build_module(model_name, tuple(input_shape), num_classes, hidden, conv)
    return sum(parameter.numel() for parameter in module.parameters())


def state_bytes(config: Config, num_parameters: int, num_edges: int = 0) -> int:
    """Estimated peak bytes of the run's models, duals and messages (see `NODE_COPIES`)."""
    n = config.data.num_clients
    return FLOAT_BYTES * num_parameters * (NODE_COPIES * n + EDGE_COPIES * num_edges)


def batch_bytes(config: Config) -> int:
    """Bytes of one round's batch positions, int64 `[n, steps, batch_size]`."""
    local = config.local
    return INDEX_BYTES * config.data.num_clients * local.steps * local.batch_size


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup limit; None if
    neither can be read."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not candidates:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        candidates.append(cgroup)
    return min(candidates) if candidates else None


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, then v1); None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - usage)
    return None


def _gb(count: int) -> str:
    return f"{count / 1e9:.1f} GB"


def check_memory(
    config: Config, num_parameters: int, num_train: int, *, num_edges: int | None = None
) -> None:
    """Raise `ConfigError` when the run's state cannot fit in the available memory.

    `num_edges` is the graph's number of directed edges 2E (ignored with a server; None on a
    graph assumes the complete graph, n (n - 1)). The estimate is `state_bytes` plus one round's
    batch positions and the clients' sample indices (two int64 per training sample).
    """
    n = config.data.num_clients
    if not config.decentralized:
        num_edges = 0
    elif num_edges is None:
        num_edges = n * (n - 1)
    state = state_bytes(config, num_parameters, num_edges)
    batches = batch_bytes(config)
    need = state + batches + 2 * INDEX_BYTES * num_train
    available = available_memory()
    if available is None or need <= available:
        return
    has = f"the machine has {_gb(available)} available"
    if batches > state:
        raise ConfigError(
            f"this run needs about {_gb(need)} for its batches ({n} clients x "
            f"{config.local.steps} steps x {config.local.batch_size} samples), {has}; lower "
            "local.batch_size, local.steps or data.num_clients"
        )
    edges = f" and {num_edges} directed edges" if num_edges else ""
    raise ConfigError(
        f"this run needs about {_gb(need)} for its state ({n} clients{edges} x "
        f"{num_parameters:,} parameters), {has}; lower data.num_clients or the model size "
        "(model.hidden, model.name)"
    )


def uses_root_data(config: Config) -> bool:
    """Whether some algorithm of `config` combines with a rule that needs the server's root data."""
    from fedpdmm import aggregators

    for name in config.algorithms:
        _, *chain = name.split("+")
        rule = chain[-1] if chain else config.algorithm.aggregator
        if getattr(aggregators.RULES.get(rule), "needs_reference", False):
            return True
    return False


def check_root_size(config: Config, num_train: int) -> None:
    """Raise `ConfigError` when `algorithm.root_size` exceeds the training set FLTrust's root
    dataset is drawn from (only where such a rule is used)."""
    size = config.algorithm.root_size
    if size > num_train and uses_root_data(config):
        raise ConfigError(
            f"algorithm.root_size={size} exceeds the {num_train} training samples the server's "
            f"root dataset is drawn from; set algorithm.root_size to at most {num_train}"
        )
