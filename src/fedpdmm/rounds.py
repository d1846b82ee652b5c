"""One round, written once: the step every runtime calls, and the loop around it.

    local work (receive -> K SGD steps -> finish)  ->  messages  ->  strike (attack at its target)
      ->  accepted = delivered & finite  ->  combine (receivers, optionally robust)  ->  record

`step` is called by the in-process engine (`fedpdmm.engine`), by the Flower server (whose
transport only adds missing and malformed replies) and by the benchmarks; `run_rounds` is the one
round loop (evaluation, divergence, progress). The node half of a round is a `NodeWork`: in
process it trains every node and strikes the Byzantine rows (`fedpdmm.strike`, at a `Target`);
over a transport it sends the downlink and collects the replies. For FedAvg the message is the
model, so `message` and `model` coincide. Byzantine nodes compute honestly; what they remember is
`attack.state` (`fedpdmm.attacker`); only what they transmit is corrupted (or, for a data attack
such as `label_flip`, what they train on). On a graph a Byzantine node may send a different
message on each of its edges.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch

from fedpdmm.algorithms.base import Algorithm, CombineContext, RoundState, finite_rows
from fedpdmm.seeding import generator
from fedpdmm.strike import MessageRows, Struck, corrupt, per_receiver, strike
from fedpdmm.targets import NO_ATTACK, Target

__all__ = [
    "NO_ATTACK",
    "MessageRows",
    "Struck",
    "Target",
    "corrupt",
    "per_receiver",
    "run_rounds",
    "step",
    "strike",
]


class Replies(NamedTuple):
    """The node half of a round: the nodes' states (a view, over a transport), their messages
    `[m, w]`, which rows arrived well-formed (`delivered`, None: all) and the training samples
    used."""

    nodes: Any
    messages: torch.Tensor
    delivered: torch.Tensor | None
    samples: int


class NodeWork(Protocol):
    """How the node half of a round is carried out: in process, or over a transport."""

    def begin(self, algorithm: Algorithm, state: RoundState, round_index: int) -> RoundState:
        """Before the round (e.g. note the nodes that rejoined)."""
        ...

    def __call__(
        self,
        algorithm: Algorithm,
        state: RoundState,
        downlink: torch.Tensor | None,
        round_index: int,
        evaluate: bool,
        context: CombineContext,
    ) -> Replies:
        """Every node's receive, training, finish and message; `state` is the round's start,
        `context` what the receivers' combination will use (attacks may search against it)."""
        ...

    def counters(self) -> dict[str, int]:
        """Cumulative counts of the transport's own events, added to every metric row."""
        ...


Reference = Callable[[torch.Tensor, int], torch.Tensor]
"""`reference(global model [d], round) -> [d]`: the server's own update (FLTrust)."""


class RoundRecord(NamedTuple):
    dropped: int  # messages not accepted this round
    samples: int  # local training samples this round


def step(
    algorithm: Algorithm,
    state: RoundState,
    work: NodeWork,
    round_index: int,
    *,
    seed: int,
    reference: Reference | None = None,
    evaluate: bool = False,
) -> tuple[RoundState, RoundRecord]:
    """One round: downlink, the nodes' work, acceptance, the receivers' combination."""
    server_update = None
    if algorithm.needs_reference and reference is not None:
        server_update = reference(algorithm.models(state)[0], round_index)
    context = CombineContext(
        generator(seed, "aggregate", round_index), server_update, reuse_state=True
    )
    downlink = algorithm.downlink(state.hub)
    replies = work(algorithm, state, downlink, round_index, evaluate, context)
    accepted = finite_rows(replies.messages)
    if replies.delivered is not None:
        accepted &= replies.delivered
    state = algorithm.combine(
        RoundState(state.hub, replies.nodes), replies.messages, accepted, context
    )
    return state, RoundRecord(int((~accepted).sum()), replies.samples)


@dataclass(frozen=True)
class Schedule:
    rounds: int
    eval_every: int
    seed: int


ProgressCallback = Callable[[str, int, int], None]
Evaluate = Callable[[RoundState], dict[str, Any]]
Broken = Callable[[RoundState], bool]


def run_rounds(
    algorithm: Algorithm,
    work: NodeWork,
    state: RoundState,
    schedule: Schedule,
    *,
    evaluate: Evaluate,
    broken: Broken,
    reference: Reference | None = None,
    progress: ProgressCallback | None = None,
    label: str = "",
    columns: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """The round loop: evaluate at round 0, every `eval_every` rounds and at the last round, and
    stop when the run breaks (`broken`) or its loss is not finite. Returns (metric rows, status).

    Each row is `evaluate(state)` plus `columns`, the round, the cumulative samples and dropped
    messages, the transport's counters, the seconds since the start (`wall_time`) and the
    seconds this evaluation took (`eval_time`).
    """
    rows: list[dict[str, Any]] = []
    totals = {"samples": 0, "dropped": 0}
    began = time.perf_counter()

    def record(round_index: int) -> bool:
        evaluation_began = time.perf_counter()
        row = evaluate(state)
        row["eval_time"] = time.perf_counter() - evaluation_began
        row.update(columns or {})
        row.update(
            round=round_index,
            samples=totals["samples"],
            dropped_messages=totals["dropped"],
            **work.counters(),
            wall_time=time.perf_counter() - began,
        )
        rows.append(row)
        return math.isfinite(row["test_loss"])

    record(0)
    for round_index in range(1, schedule.rounds + 1):
        state = work.begin(algorithm, state, round_index)
        due = round_index % schedule.eval_every == 0 or round_index == schedule.rounds
        state, outcome = step(
            algorithm,
            state,
            work,
            round_index,
            seed=schedule.seed,
            reference=reference,
            evaluate=due,
        )
        totals["samples"] += outcome.samples
        totals["dropped"] += outcome.dropped
        stop = broken(state)
        if due or stop:
            finite = record(round_index)
            if stop or not finite:
                return rows, f"diverged at round {round_index}"
        if progress is not None:
            progress(label, round_index, schedule.rounds)
    return rows, "ok"
