"""One round, written once: the step every runtime calls, and the loop around it.

    local work (receive -> K SGD steps -> finish)  ->  messages  ->  strike (attack at its target)
      ->  accepted = delivered & finite  ->  combine (receivers, optionally robust)  ->  record

`step` is called by the in-process engine (`fedpdmm.engine`), by the Flower server (whose
transport only adds missing and malformed replies) and by the benchmarks; `run_rounds` is the one
round loop (evaluation, divergence, progress). The node half of a round is a `NodeWork`: in
process it trains every node and strikes the Byzantine rows (`strike`); over a transport it sends
the downlink and collects the replies.

Where an attack strikes (`Target`):
- `model`:   the Byzantine node's trained model is perturbed, then encoded into its message;
- `update`:  the change since the round's start is perturbed (start + attack(trained - start));
- `message`: the transmitted vector itself is perturbed;
- `none`:    the pseudo-target of unattacked runs (nothing is perturbed).
For FedAvg the message is the model, so `message` and `model` coincide. Byzantine nodes compute
honestly and keep honest state; only what they transmit is corrupted (or, for a data attack such
as `label_flip`, what they train on). On a graph a Byzantine node may send a different message on
each of its edges: per-row attacks draw their noise per directed edge.
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
from fedpdmm.targets import NO_ATTACK, Target

__all__ = ["NO_ATTACK", "Target", "corrupt", "run_rounds", "step", "strike"]


@dataclass(frozen=True)
class MessageRows:
    """Who sends each message row and the key of its attack noise.

    `senders` `[m]`: the node of each row (None: row k is node k, as with a server); `keys`: one
    per row (the client index, or the edge "i>j"), so a node alone on another machine draws the
    same noise as in the simulator.
    """

    senders: torch.Tensor | None
    keys: list[Any]


def corrupt(
    attack,
    rows: torch.Tensor,
    byzantine: torch.Tensor,
    seed: int,
    round_index: int,
    keys: list[Any],
    *,
    copy: bool = True,
) -> torch.Tensor:
    """`attack` applied to the Byzantine rows of `rows` `[m, d]` in round `round_index`.

    With `copy=False` the Byzantine rows are rewritten in place (a fresh `rows` the caller owns).
    An attack that reads only its own row runs row by row with the generator
    `(seed, "attack", round, key)`; an omniscient attack sees every row and draws from
    `(seed, "attack", round)`.
    """
    if not bool(byzantine.any()):
        return rows
    if attack.omniscient:
        return attack(rows, byzantine, generator=generator(seed, "attack", round_index))
    out = rows.clone() if copy else rows
    own = torch.ones(1, dtype=torch.bool)
    for row in byzantine.nonzero().flatten().tolist():
        gen = generator(seed, "attack", round_index, keys[row])
        out[row : row + 1] = attack(rows[row : row + 1], own, generator=gen)
    return out


def strike(
    target: Target,
    attack,
    algorithm: Algorithm,
    nodes: Any,
    start: torch.Tensor,
    trained: torch.Tensor,
    byzantine: torch.Tensor,
    rows: MessageRows,
    seed: int,
    round_index: int,
) -> torch.Tensor:
    """The transmitted rows `[m, w]`, with the Byzantine ones rewritten at `target`.

    `start` and `trained` `[n, d]` are every node's model at the start and the end of local
    training, `byzantine` `[m]` marks the rows sent by Byzantine nodes. Honest rows are always
    `encode(trained)`, bit for bit, whatever the target, so a node computes its message alone
    (on a Flower node) exactly as among all nodes.
    """
    if target in (Target.MESSAGE, Target.NONE) or not bool(byzantine.any()):
        messages = algorithm.encode_nodes(nodes, trained)
        copy = messages is trained  # an encoding that is the model itself must not be altered
        return corrupt(attack, messages, byzantine, seed, round_index, rows.keys, copy=copy)
    if rows.senders is not None:
        start, trained = start.index_select(0, rows.senders), trained.index_select(0, rows.senders)
    if target == Target.MODEL:
        return algorithm.encode(
            nodes, corrupt(attack, trained, byzantine, seed, round_index, rows.keys)
        )
    delta = corrupt(attack, trained - start, byzantine, seed, round_index, rows.keys)
    models = trained.clone()  # honest rows send exactly their trained model
    models[byzantine] = start[byzantine] + delta[byzantine]
    return algorithm.encode(nodes, models)


class Replies(NamedTuple):
    """The node half of a round: the nodes' states (a view, over a transport), their messages
    `[m, w]`, which rows arrived well-formed (`delivered`, None: all), which edges are in the
    receivers' combination (`open`, None: all) and the training samples used."""

    nodes: Any
    messages: torch.Tensor
    delivered: torch.Tensor | None
    open: torch.Tensor | None
    samples: int


class NodeWork(Protocol):
    """How the node half of a round is carried out: in process, or over a transport."""

    def begin(self, algorithm: Algorithm, state: RoundState, round_index: int) -> RoundState:
        """Before the round (e.g. re-open the edges of nodes that rejoined)."""
        ...

    def __call__(
        self,
        algorithm: Algorithm,
        nodes: Any,
        downlink: torch.Tensor | None,
        round_index: int,
        evaluate: bool,
    ) -> Replies: ...

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
    downlink = algorithm.downlink(state.hub)
    replies = work(algorithm, state.nodes, downlink, round_index, evaluate)
    accepted = finite_rows(replies.messages)
    if replies.delivered is not None:
        accepted &= replies.delivered
    server_update = None
    if algorithm.needs_reference and reference is not None:
        server_update = reference(algorithm.models(state)[0], round_index)
    context = CombineContext(generator(seed, "aggregate", round_index), server_update, replies.open)
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
    messages, the transport's counters and the seconds since the start.
    """
    rows: list[dict[str, Any]] = []
    totals = {"samples": 0, "dropped": 0}
    began = time.perf_counter()

    def record(round_index: int) -> bool:
        row = evaluate(state)
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
