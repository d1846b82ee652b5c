"""The server's side of a federation: the engine's round step with messages that can go missing.

The round is `fedpdmm.rounds.step`, the same as in `fedpdmm run`; only the node half differs: a
`TransportWork` sends each client its downlink row over a `Transport` (Flower's Grid, or
`LoopbackTransport` in one process) and turns the replies into the step's messages. What a
network adds:

- a reply that does not arrive within the round timeout (or comes back as an error) is *missing*:
  it is not accepted, so, as for any rejected message, FedAvg averages the replies that arrived
  and PDMM closes that client's edge (x_s = mean over the open edges of z_s[i] / c) until a reply
  is accepted again, when the edge re-opens without shifting x_s (see
  `fedpdmm.algorithms.pdmm_star`). The client is asked to start afresh (`reset`) when it is next
  reached. The round does not wait for dropped clients.
- a reply that is not a finite float vector of the message's size is *malformed*: it is not
  accepted (exactly as the engine treats a non-finite message) and counted.
- a simulated unreliable network (`[network]`, `fedpdmm.channel`) is drawn by the same round
  step as in the engine: only the round's working clients are sent a request (with their local
  steps), and the replies the channel loses or delays are handled there, as in `fedpdmm run`.
  A missing reply differs from a simulated loss: its node dropped out and restarts afresh, so
  its edge closes; a lost message's sender keeps its state, so its edge stays open.

Metric rows are the engine's (`dropped_messages` counts every message not accepted), plus the
cumulative `missing_replies`, `malformed_replies` and the round's `active_clients`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from fedpdmm.algorithms.base import Algorithm, RoundState
from fedpdmm.build import build_algorithm
from fedpdmm.engine import CombinationResult, ProgressCallback, combinations, run_work
from fedpdmm.flower.client import RoundReply, RoundRequest
from fedpdmm.flower.settings import RunSettings
from fedpdmm.rounds import Replies
from fedpdmm.setup import Setup, build_setup, with_byzantine


class Transport(Protocol):
    def exchange(
        self, requests: dict[int, RoundRequest], wait_for: set[int], timeout: float
    ) -> dict[int, RoundReply]:
        """Send each partition its request; return the replies that arrived, by partition.

        Waits until every partition in `wait_for` answered or `timeout` seconds passed.
        """
        ...

    def take_rejoined(self) -> set[int]:
        """Partitions served by a new node since the last call (their state must start afresh)."""
        ...


def server_setup(settings: RunSettings, byzantine: torch.Tensor, data_dir: str | None) -> Setup:
    """The engine's setup, with the Byzantine set the nodes reported (`[n]` bool)."""
    return with_byzantine(build_setup(settings.config, data_dir), byzantine)


def check_message(message: Any, size: int) -> str | None:
    """Why `message` is not a usable reply (None if it is a finite float tensor `[size]`)."""
    if not isinstance(message, torch.Tensor):
        return f"not a tensor ({type(message).__name__})"
    if message.shape != (size,):
        return f"shape {tuple(message.shape)}, expected ({size},)"
    if not message.is_floating_point():
        return f"dtype {message.dtype}, expected a float"
    if not bool(torch.isfinite(message).all()):
        return "non-finite entries"
    return None


@dataclass
class TransportWork:
    """The node half of a round over a transport: requests out, replies in; clients that drop
    out are waited for no longer and start afresh when they come back."""

    transport: Transport
    settings: RunSettings
    combination: tuple[int, str, str, str]  # index, algorithm, attack, target
    models: torch.Tensor  # [n, d] the clients' last reported models (for the metrics)
    dim: int
    active: torch.Tensor = field(init=False)
    fresh: torch.Tensor = field(init=False)  # the client's next request starts it afresh
    counts: dict[str, int] = field(default_factory=lambda: {"missing": 0, "malformed": 0})

    def __post_init__(self) -> None:
        n = self.models.shape[0]
        self.active = torch.ones(n, dtype=torch.bool)
        self.fresh = torch.ones(n, dtype=torch.bool)

    def begin(self, algorithm: Algorithm, state: RoundState, round_index: int) -> RoundState:
        for partition in self.transport.take_rejoined():
            self.active[partition], self.fresh[partition] = False, True
        return state

    def __call__(
        self, algorithm, state, downlink, round_index: int, evaluate: bool, context, conditions=None
    ) -> Replies:
        nodes = state.nodes
        config = self.settings.config
        index, algorithm_name, attack_name, target = self.combination
        n = self.models.shape[0]
        working = range(n) if conditions is None else conditions.working.nonzero().flatten()
        requests = {
            k: RoundRequest(
                index,
                algorithm_name,
                attack_name,
                target,
                round_index,
                downlink[k].clone(),
                bool(self.fresh[k]),
                evaluate,
                None if conditions is None else int(conditions.steps[k]),
            )
            for k in (int(k) for k in working)
        }
        was_active = self.active.clone()
        waited = set(was_active.nonzero().flatten().tolist()) & set(requests)
        replies = self.transport.exchange(requests, waited, self.settings.round_timeout)
        size = algorithm.message_size(self.dim)
        messages = torch.zeros(n, size, dtype=downlink.dtype)
        delivered = torch.zeros(n, dtype=torch.bool)
        samples = 0
        for k in requests:
            reply = replies.get(k)
            if reply is None:
                self.counts["missing"] += 1
                self.active[k], self.fresh[k] = False, True
                continue
            self.active[k], self.fresh[k] = True, False
            steps = config.local.steps if requests[k].steps is None else requests[k].steps
            samples += steps * config.local.batch_size
            if check_message(reply.message, size) is None:
                messages[k], delivered[k] = reply.message.to(messages.dtype), True
            else:
                self.counts["malformed"] += 1
            if reply.model is not None and check_message(reply.model, self.dim) is None:
                self.models[k] = reply.model
        view = nodes._replace(x=self.models)
        return Replies(view, messages, delivered, samples)

    def counters(self) -> dict[str, int]:
        return {
            "missing_replies": self.counts["missing"],
            "malformed_replies": self.counts["malformed"],
            "active_clients": int(self.active.sum()),
        }


def run_combination(
    setup: Setup,
    transport: Transport,
    settings: RunSettings,
    index: int,
    combination: tuple[str, str, str],
    progress: ProgressCallback | None = None,
) -> CombinationResult:
    """One algorithm x attack x target over the transport; the engine's metric rows."""
    algorithm_name, attack_name, target = combination
    algorithm = build_algorithm(
        algorithm_name, setup.config, setup.network, setup.data.clients.sizes
    )
    work = TransportWork(
        transport,
        settings,
        (index, algorithm_name, attack_name, target),
        algorithm.models(algorithm.init(setup.x0))[1].clone(),
        setup.x0.numel(),
    )
    return run_work(setup, algorithm, work, combination, progress)


def run_federation(
    setup: Setup,
    transport: Transport,
    settings: RunSettings,
    progress: ProgressCallback | None = None,
) -> list[CombinationResult]:
    """Every combination of the config, in the engine's order, over one transport."""
    return [
        run_combination(setup, transport, settings, index, combination, progress)
        for index, combination in enumerate(combinations(setup.config))
    ]
