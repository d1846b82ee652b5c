"""Plug-ins built from a config through their registries: algorithms (with robust rules), attacks.

Every name is checked before any data is loaded (`check_names`), so a misspelled algorithm, rule
or attack is a one-line error, not a failure after minutes of training.
"""

from __future__ import annotations

import torch

from fedpdmm import aggregators
from fedpdmm import attacks as attack_library
from fedpdmm.algorithms import ALGORITHMS, build_combine, names, parse_algorithm
from fedpdmm.algorithms.graph import check_graph_rule
from fedpdmm.algorithms.robust import RobustCombine, check_rows
from fedpdmm.config import Config
from fedpdmm.errors import ConfigError
from fedpdmm.network import Network
from fedpdmm.registry import check_known_params


def setting_label(config: Config) -> str:
    if config.decentralized:
        return f"peer-to-peer runs (topology.name = {config.topology.name!r})"
    return "runs with a server (topology.name = 'server')"


def check_names(config: Config) -> None:
    """Algorithm, rule and attack names of `config` exist and fit its setting (no data needed)."""
    setting = "graph" if config.decentralized else "server"
    valid = names(setting)
    steps = [*aggregators.names(), *aggregators.pre_names()]
    for name in config.algorithms:
        base, chain = parse_algorithm(name)
        for step in chain:
            if step not in steps:
                raise ConfigError(
                    f"unknown aggregation rule or pre-aggregation {step!r} in {name!r}; choose "
                    f"from {', '.join(steps)}"
                )
        if base not in valid:
            raise ConfigError(
                f"algorithm {name!r} is not available for {setting_label(config)}; choose from "
                f"{', '.join(valid)}, optionally with robust rules: 'fedavg+median', "
                "'pdmm+nnm+krum' (fedpdmm list aggregators)"
            )
    for name in config.attacks:
        attack = build_attack(name, config)
        if attack.data_attack and not config.data.byzantine_data:
            raise ConfigError(
                f"attack {name!r} corrupts the Byzantine clients' training data, and "
                "data.byzantine_data=false gives them none; set data.byzantine_data = true or "
                "remove the attack"
            )
    check_parameter_tables(config)


def check_parameter_tables(config: Config) -> None:
    """Every key of `[attack.params.<name>]` and `[algorithm.params.<rule>]` is a parameter of
    that attack or rule, used in this config or not (the table names are checked by the config)."""
    for name, params in config.attack.params.items():
        entry = attack_library.REGISTRY.lookup(name)
        check_known_params(
            entry,
            params,
            label=attack_library.REGISTRY.label.format(kind="attack", name=entry.name),
        )
    for name, params in config.algorithm.params.items():
        table = aggregators.RULES if name in aggregators.RULES else aggregators.PRE_AGGREGATIONS
        check_known_params(table.lookup(name), params, label=name)


def robust_combine(name: str, config: Config, network: Network, own_row: bool) -> RobustCombine:
    """The rule chain of `name` (or the config's default rule), checked against the rows each
    receiver of `network` combines; None for the plain mean without an explicit chain."""
    _, chain = parse_algorithm(name)
    algorithm = config.algorithm
    robust = build_combine(
        chain, algorithm.aggregator, algorithm.pre, algorithm.params, network.default_f()
    )
    if robust.is_plain_mean:
        return robust if chain else None
    if network.setting == "graph":
        check_graph_rule(robust, name)
    check_rows(robust, name, network.rows_per_receiver(own_row))
    return robust


def build_algorithm(name: str, config: Config, network: Network, sizes: torch.Tensor | None = None):
    """The algorithm `name` (`base[+pre...][+rule]`) for `network`; `sizes` `[n]` sample counts
    (used by `fedavg.weighting = "samples"`)."""
    base, _ = parse_algorithm(name)
    entry = ALGORITHMS.lookup(base)
    cls = entry.implementation(network.setting)
    if cls is None:
        raise ConfigError(
            f"algorithm {name!r} is not available for {setting_label(config)}; choose from "
            f"{', '.join(names(network.setting))}"
        )
    robust = robust_combine(name, config, network, cls.combines_own_row)
    return cls.from_config(config, network, robust, sizes)


def build_attack(name: str, config: Config, robust: RobustCombine | None = None):
    """The attack `name` with its parameters from `[attack]` and `[attack.params.<name>]`.

    Attacks that search against the aggregation rule (`needs_rule`) get the algorithm's own.
    """
    cls = attack_library.REGISTRY.lookup(name)
    params = {**cls.config_defaults(config.attack), **config.attack.params.get(name, {})}
    if cls.needs_rule and robust is not None and not robust.is_plain_mean:
        params.setdefault("aggregator", robust.value)
    return attack_library.get(name, **params)
