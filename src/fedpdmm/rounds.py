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
from fedpdmm.channel import Channel, RoundConditions
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
        conditions: RoundConditions | None = None,
    ) -> Replies:
        """Every node's receive, training, finish and message; `state` is the round's start,
        `context` what the receivers' combination will use (attacks may search against it).
        `conditions` (None: every node works K steps and every message arrives): only the
        working nodes train (their `steps`), the others keep their state."""
        ...

    def counters(self) -> dict[str, int]:
        """Cumulative counts of the transport's own events, added to every metric row."""
        ...


Reference = Callable[[torch.Tensor, int], torch.Tensor]
"""`reference(global model [d], round) -> [d]`: the server's own update (FLTrust)."""


class RoundRecord(NamedTuple):
    dropped: int  # messages not accepted this round
    samples: int  # local training samples this round
    lost: int = 0  # messages the network lost this round
    active: int | None = None  # nodes that worked or delivered this round (None: all)


def step(
    algorithm: Algorithm,
    state: RoundState,
    work: NodeWork,
    round_index: int,
    *,
    seed: int,
    reference: Reference | None = None,
    evaluate: bool = False,
    channel: Channel | None = None,
) -> tuple[RoundState, RoundRecord]:
    """One round: downlink, the nodes' work, delivery over `channel` (None: a reliable
    network), acceptance, the receivers' combination.

    A row that did not arrive (lost, or its sender offline) is passed to `combine` as
    `context.lost`: the receiver keeps what it had for it. A row that arrived but is not
    finite (or, over a transport, malformed or missing) is rejected: it closes its edge."""
    server_update = None
    if algorithm.needs_reference and reference is not None:
        server_update = reference(algorithm.models(state)[0], round_index)
    context = CombineContext(
        generator(seed, "aggregate", round_index), server_update, reuse_state=True
    )
    downlink = algorithm.downlink(state.hub)
    conditions = None if channel is None else channel.draw(round_index)
    replies = work(algorithm, state, downlink, round_index, evaluate, context, conditions)
    messages = replies.messages
    if conditions is not None:
        messages = channel.deliver(messages, conditions)
    accepted = finite_rows(messages)
    if replies.delivered is not None:
        accepted &= replies.delivered
    lost, active = 0, None
    if conditions is not None:
        accepted &= conditions.arrived
        context = context._replace(lost=~conditions.arrived)
        lost, active = conditions.lost, int(conditions.online.sum())
    state = algorithm.combine(RoundState(state.hub, replies.nodes), messages, accepted, context)
    return state, RoundRecord(int((~accepted).sum()), replies.samples, lost, active)


def network_columns(
    channel: Channel | None, lost: int, active: int | None, round_index: int
) -> dict[str, int]:
    """`lost_messages` (cumulative) and `active_nodes` (this round) over an unreliable channel."""
    if channel is None:
        return {}
    nodes = channel.num_nodes if round_index == 0 or active is None else active
    return {"lost_messages": lost, "active_nodes": nodes}


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
    channel: Channel | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """The round loop: evaluate at round 0, every `eval_every` rounds and at the last round, and
    stop when the run breaks (`broken`) or its loss is not finite. Returns (metric rows, status).

    Each row is `evaluate(state)` plus `columns`, the round, the cumulative samples and dropped
    messages, the transport's counters, the seconds since the start (`wall_time`) and the
    seconds this evaluation took (`eval_time`). Over an unreliable `channel` rows also hold the
    cumulative `lost_messages` and the nodes that took part in the row's round (`active_nodes`).
    """
    rows: list[dict[str, Any]] = []
    totals = {"samples": 0, "dropped": 0, "lost": 0}
    active = {"nodes": None}
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
            **network_columns(channel, totals["lost"], active["nodes"], round_index),
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
            channel=channel,
        )
        totals["samples"] += outcome.samples
        totals["dropped"] += outcome.dropped
        totals["lost"] += outcome.lost
        active["nodes"] = outcome.active
        stop = broken(state)
        if due or stop:
            finite = record(round_index)
            if stop or not finite:
                return rows, f"diverged at round {round_index}"
        if progress is not None:
            progress(label, round_index, schedule.rounds)
    return rows, "ok"
