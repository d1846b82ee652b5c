"""Run and node configuration of the Flower app: fedpdmm's config as Flower run config.

Flower run config values are scalars (no lists), so the whole fedpdmm config travels as one TOML
string; a few runtime options sit beside it:

    fedpdmm-config     the config of `fedpdmm run`, as TOML text (required)
    out-dir            absolute path of the run directory the ServerApp writes (required)
    data-dir           dataset folder of the ServerApp, and of nodes without their own
    round-timeout      seconds the server waits for a round's replies (default 60)
    discovery-timeout  seconds it waits for every partition to connect (default 120)
    byzantine-partitions  "1,3": Byzantine partitions for nodes without a `byzantine` node config
                       (Flower's simulation engine has no per-node config)

Node config (`flower-supernode --node-config`): `partition-id` (required), `data-dir`,
`byzantine` (true/false).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpdmm import attacks as attack_library
from fedpdmm import config as config_module
from fedpdmm.config import Config
from fedpdmm.errors import ConfigError

DEFAULT_ROUND_TIMEOUT = 60.0
DEFAULT_DISCOVERY_TIMEOUT = 120.0


@dataclass(frozen=True)
class RunSettings:
    """The validated run config of one Flower run."""

    config: Config
    out_dir: Path | None
    data_dir: str | None
    round_timeout: float
    discovery_timeout: float
    byzantine_partitions: frozenset[int]


@dataclass(frozen=True)
class NodeRole:
    """What a SuperNode is: its partition, whether it is Byzantine, where its data lie."""

    partition: int
    byzantine: bool
    data_dir: str | None


def run_config_for(
    config: Config,
    *,
    out_dir: Path,
    data_dir: str | None = None,
    round_timeout: float = DEFAULT_ROUND_TIMEOUT,
    discovery_timeout: float = DEFAULT_DISCOVERY_TIMEOUT,
    byzantine_partitions: frozenset[int] | None = None,
) -> dict[str, Any]:
    """The Flower run config (flat, scalar values) that carries `config` and the runtime options."""
    run_config: dict[str, Any] = {
        "fedpdmm-config": config_module.dump_toml(config_module.to_dict(config)),
        "out-dir": str(Path(out_dir).absolute()),
        "round-timeout": float(round_timeout),
        "discovery-timeout": float(discovery_timeout),
    }
    if data_dir is not None:
        run_config["data-dir"] = str(Path(data_dir).absolute())
    if byzantine_partitions:
        run_config["byzantine-partitions"] = ",".join(map(str, sorted(byzantine_partitions)))
    return run_config


def read_run_config(run_config: Mapping[str, Any]) -> RunSettings:
    """Parse and validate the run config written by `run_config_for` (or by hand)."""
    text = run_config.get("fedpdmm-config")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            "run config key 'fedpdmm-config' is missing: pass the fedpdmm config as a TOML string "
            "(see docs/flower.md)"
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"run config key 'fedpdmm-config' is not valid TOML: {error}") from None
    config = config_module.validate(raw)
    out = run_config.get("out-dir") or None
    if out is not None and not Path(str(out)).is_absolute():
        raise ConfigError(f"run config key 'out-dir' must be an absolute path, got {out!r}")
    data_dir = run_config.get("data-dir")
    return RunSettings(
        config=config,
        out_dir=Path(str(out)) if out is not None else None,
        data_dir=str(data_dir) if data_dir else None,
        round_timeout=_positive(run_config, "round-timeout", DEFAULT_ROUND_TIMEOUT),
        discovery_timeout=_positive(run_config, "discovery-timeout", DEFAULT_DISCOVERY_TIMEOUT),
        byzantine_partitions=_partition_set(run_config.get("byzantine-partitions", "")),
    )


def _positive(run_config: Mapping[str, Any], key: str, default: float) -> float:
    value = run_config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"run config key {key!r} must be a positive number of seconds, got {value!r}"
        )
    return float(value)


def _partition_set(text: Any) -> frozenset[int]:
    try:
        return frozenset(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise ConfigError(
            "run config key 'byzantine-partitions' must list partition ids like \"1,3\", "
            f"got {text!r}"
        ) from None


def read_node_config(node_config: Mapping[str, Any], settings: RunSettings) -> NodeRole:
    """The node's role from its node config (partition-id, data-dir, byzantine)."""
    n = settings.config.data.num_clients
    partition = node_config.get("partition-id")
    if isinstance(partition, str) and partition.strip().isdigit():
        partition = int(partition)
    if not isinstance(partition, int) or isinstance(partition, bool) or not 0 <= partition < n:
        raise ConfigError(
            f"node config 'partition-id' must be an integer in [0, {n}) for data.num_clients={n}, "
            f"got {partition!r}; start the SuperNode with --node-config 'partition-id=K'"
        )
    byzantine = node_config.get("byzantine")
    if byzantine is None:
        byzantine = partition in settings.byzantine_partitions
    elif isinstance(byzantine, str) and byzantine.lower() in ("true", "false"):
        byzantine = byzantine.lower() == "true"
    if not isinstance(byzantine, bool):
        raise ConfigError(f"node config 'byzantine' must be true or false, got {byzantine!r}")
    data_dir = node_config.get("data-dir") or settings.data_dir
    return NodeRole(partition, byzantine, str(data_dir) if data_dir else None)


def check_deployable(config: Config) -> None:
    """Refuse what the app cannot run: peer-to-peer topologies, omniscient attacks, and a split
    over the honest clients only (a SuperNode's data cannot depend on who the others are)."""
    if config.decentralized:
        raise ConfigError(
            f"topology.name={config.topology.name!r} is a peer-to-peer run; the Flower app runs "
            'with a server only: set topology.name = "server"'
        )
    if not config.data.byzantine_data:
        raise ConfigError(
            "data.byzantine_data=false splits the data by the simulated Byzantine set, which "
            "SuperNodes declare for themselves; set data.byzantine_data = true for Flower runs"
        )
    for name in config.attacks:
        cls = attack_library.REGISTRY.get(attack_library.ALIASES.get(name, name))
        if cls is not None and cls.omniscient:
            raise ConfigError(
                f"attack {name!r} is omniscient (it reads the honest clients' messages), which a "
                "SuperNode cannot see; remove it from 'attacks' for Flower runs (non-omniscient "
                f"attacks: {', '.join(non_omniscient_attacks())})"
            )


def non_omniscient_attacks() -> list[str]:
    return [name for name, cls in attack_library.REGISTRY.items() if not cls.omniscient]
