"""The Flower app's protocol in one process: every node's `client_round` called directly.

Runs exactly what the ServerApp and ClientApp run, minus Flower: the same requests, client state
and replies. Useful to check the protocol against `fedpdmm.engine` and to inject faults.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedpdmm.engine import CombinationResult
from fedpdmm.flower.client import LocalData, RoundReply, RoundRequest, client_round
from fedpdmm.flower.settings import NodeRole, RunSettings
from fedpdmm.setup import Setup, build_setup

# fault(round, partition) -> None (answer), "down" (no answer), or a reply to send instead
Fault = Callable[[int, int], "str | RoundReply | None"]


class LoopbackTransport:
    """Nodes as in-process objects; `fault` decides per round and partition what goes wrong."""

    def __init__(
        self,
        settings: RunSettings,
        roles: list[NodeRole],
        local: list[LocalData],
        fault: Fault | None = None,
    ) -> None:
        self.settings = settings
        self.roles = roles
        self.local = local
        self.fault = fault
        self.states: dict[int, dict[str, torch.Tensor]] = {}
        self.combination: dict[int, int] = {}

    def exchange(
        self, requests: dict[int, RoundRequest], wait_for: set[int], timeout: float
    ) -> dict[int, RoundReply]:
        replies = {}
        for partition, request in requests.items():
            outcome = self.fault(request.round, partition) if self.fault else None
            if outcome == "down":
                continue
            if self.combination.get(partition) != request.combination:
                self.states.pop(partition, None)
                self.combination[partition] = request.combination
            state, reply = client_round(
                self.settings.config,
                self.roles[partition],
                self.local[partition],
                request,
                self.states.get(partition),
            )
            self.states[partition] = state
            replies[partition] = reply if outcome is None else outcome
        return replies

    def take_rejoined(self) -> set[int]:
        return set()


def loopback_nodes(
    setup: Setup, byzantine: torch.Tensor | None = None
) -> tuple[list[NodeRole], list[LocalData]]:
    """One role and local data per partition of `setup` (Byzantine as in `setup` by default)."""
    from fedpdmm.flower.client import local_data_from_setup

    byzantine = setup.network.byzantine if byzantine is None else byzantine
    n = setup.config.data.num_clients
    roles = [NodeRole(k, bool(byzantine[k]), None) for k in range(n)]
    return roles, [local_data_from_setup(setup, k) for k in range(n)]


def run_loopback(
    settings: RunSettings, fault: Fault | None = None, data_dir: str | None = None
) -> tuple[Setup, list[CombinationResult]]:
    """Every combination of `settings.config` through the Flower protocol, in this process."""
    from fedpdmm.flower.server import run_federation

    setup = build_setup(settings.config, data_dir or settings.data_dir)
    roles, local = loopback_nodes(setup)
    return setup, run_federation(setup, LoopbackTransport(settings, roles, local, fault), settings)
