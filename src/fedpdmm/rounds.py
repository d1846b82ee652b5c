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
from functools import partial
from typing import Any, NamedTuple, Protocol

import torch

from fedpdmm.algorithms.base import Algorithm, CombineContext, RoundState, finite_rows
from fedpdmm.attacks.base import StrikeContext
from fedpdmm.seeding import generator
from fedpdmm.targets import NO_ATTACK, Target

__all__ = ["NO_ATTACK", "Target", "corrupt", "run_rounds", "step", "strike"]


@dataclass(frozen=True)
class MessageRows:
    """Who sends and who receives each message row, and the key of its attack noise.

    `senders` `[m]`: the node of each row (None: row k is node k, as with a server); `receivers`
    `[m]`: the receiving node of each row (None: one receiver, the server); `keys`: one per row
    (the client index, or the edge "i>j"), so a node alone on another machine draws the same
    noise as in the simulator.
    """

    senders: torch.Tensor | None
    keys: list[Any]
    receivers: torch.Tensor | None = None


def corrupt(
    attack,
    rows: torch.Tensor,
    byzantine: torch.Tensor,
    seed: int,
    round_index: int,
    keys: list[Any],
    *,
    copy: bool = True,
    past: torch.Tensor | None = None,
) -> torch.Tensor:
    """`attack` applied row by row to the Byzantine rows of `rows` `[m, w]` in one round.

    Row r draws from the generator `(seed, "attack", round, keys[r])`; with `copy=False` the
    Byzantine rows are rewritten in place (a fresh `rows` the caller owns). `past` `[m, w]`: each
    row's own honest row `attack.history` rounds ago, for attacks that replay (read only on
    Byzantine rows). Omniscient attacks go through `strike`, per receiver.
    """
    if not bool(byzantine.any()):
        return rows
    out = rows.clone() if copy else rows
    own = torch.ones(1, dtype=torch.bool)
    for row in byzantine.nonzero().flatten().tolist():
        gen = generator(seed, "attack", round_index, keys[row])
        bound = attack if past is None else attack.bind(StrikeContext(past=past[row : row + 1]))
        out[row : row + 1] = bound(rows[row : row + 1], own, generator=gen)
    return out


GroupCombine = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
"""`combine(receiver, rows [k], values [k, w]) -> [d]`: what a receiver computes when its rows
carry these values (in the attack's space)."""


def per_receiver(
    attack,
    values: torch.Tensor,
    byzantine: torch.Tensor,
    rows: MessageRows,
    seed: int,
    round_index: int,
    *,
    combine: GroupCombine,
    base: Callable[[int], torch.Tensor],
    weights: Callable[[torch.Tensor], torch.Tensor | None],
) -> torch.Tensor:
    """An omniscient attack applied once per receiver to the rows that receiver combines.

    Receiver j's Byzantine rows are computed from all rows into j (with a server every
    client's; on a graph its neighbours', with j's own model as one more honest row, as in He,
    Karimireddy and Jaggi's decentralized attacks): the statistics of what j combines, with j's
    own number of rows and of Byzantine senders. A receiver with fewer honest rows than the
    attack needs (`attack.min_honest`) gets honest rows. It draws from `(seed, "attack", round)`
    with a server and `(seed, "attack", round, "to", j)` on a graph.
    """
    out = values.clone()
    if rows.receivers is None:
        groups = [(0, torch.arange(values.shape[0]), generator(seed, "attack", round_index))]
    else:
        targets = sorted(set(rows.receivers[byzantine].tolist()))
        groups = [
            (
                j,
                (rows.receivers == j).nonzero().flatten(),
                generator(seed, "attack", round_index, "to", j),
            )
            for j in targets
        ]
    for receiver, group, gen in groups:
        mask = byzantine[group]
        own = base(receiver)
        stack, shown, row_weights = values[group], mask, weights(group)
        senders = group if rows.senders is None else rows.senders[group]
        if rows.receivers is not None:  # a graph node's own model is known and honest too
            stack = torch.cat([own.unsqueeze(0).to(stack.dtype), stack])
            shown = torch.cat([torch.zeros(1, dtype=torch.bool), mask])
            senders = torch.cat([torch.tensor([receiver]), senders])
            if row_weights is not None:
                row_weights = torch.cat([row_weights.new_zeros(1), row_weights])
        if int((~shown).sum()) < attack.min_honest:
            continue  # too few honest rows for the attack's statistics: they stay honest
        context = StrikeContext(
            combine=partial(combine_group, combine, receiver, group, rows.receivers is not None),
            base=own,
            weights=row_weights,
            senders=senders,
            own_row=rows.receivers is not None,
        )
        attacked = attack.bind(context)(stack, shown, generator=gen)
        out[group[mask]] = attacked[shown]
    return out


def combine_group(
    combine: GroupCombine, receiver: int, group: torch.Tensor, own_row: bool, stack: torch.Tensor
) -> torch.Tensor:
    """`combine` on an attack's stack (without the receiver's own leading row, if it has one)."""
    return combine(receiver, group, stack[1:] if own_row else stack)


def base_in_space(
    algorithm: Algorithm,
    state: RoundState,
    target: Target,
    start: torch.Tensor,
    trained: torch.Tensor,
    receiver: int,
) -> torch.Tensor:
    """The receiver's own point in the attack's space: its model (model target), or at the
    update target its own update on a graph (`trained - start` of node `receiver`) and zero with
    a server (the server's model relative to itself)."""
    base = algorithm.receiver_base(state, receiver)
    if target != Target.UPDATE:
        return base
    if algorithm.setting == "server":
        return torch.zeros_like(base)
    return trained[receiver] - start[receiver]


def replayed(context: CombineContext) -> CombineContext:
    """`context` with a copy of its generator, so that evaluating the combination for an attack
    draws exactly the randomness the real combination will draw, and leaves it untouched."""
    if context.generator is None:
        return context
    copy = torch.Generator(device=context.generator.device)
    copy.set_state(context.generator.get_state())
    return context._replace(generator=copy)


class Struck(NamedTuple):
    """What a round sends (`messages` `[m, w]`), what it would have sent honestly (`honest`),
    and the rows in the attack's space before corruption (`space`: messages, models or
    updates; what a replaying attacker remembers)."""

    messages: torch.Tensor
    honest: torch.Tensor
    space: torch.Tensor


def strike(
    target: Target,
    attack,
    algorithm: Algorithm,
    state: RoundState,
    start: torch.Tensor,
    trained: torch.Tensor,
    byzantine: torch.Tensor,
    rows: MessageRows,
    seed: int,
    round_index: int,
    *,
    context: CombineContext = CombineContext(),
    past: torch.Tensor | None = None,
) -> Struck:
    """The transmitted rows `[m, w]`, with the Byzantine ones rewritten at `target`.

    `state` is the round's state with the nodes after `finish`; `start` and `trained` `[n, d]`
    are every node's model at the start and the end of local training; `byzantine` `[m]` marks
    the rows sent by Byzantine nodes. Honest rows are always `encode_nodes(trained)`, bit for
    bit, whatever the target, so a node computes its message alone (on a Flower node) exactly as
    among all nodes. Omniscient attacks act per receiver (`per_receiver`); at the message target
    they act on the receivers' votes (`Algorithm.votes`: for PDMM the relaxed duals in the
    receiver's frame, whose raw messages differ in sign from edge to edge) and the result is
    mapped back to messages. Attacks that search against the rule get the combination the
    receiver applies this round (`Algorithm.combine_at`, with `context`).
    """
    nodes = state.nodes
    honest = algorithm.encode_nodes(nodes, trained)
    if target in (Target.NONE, Target.DATA) or not bool(byzantine.any()):
        return Struck(honest, honest, honest)
    attackers = byzantine.nonzero().flatten()
    if target == Target.MESSAGE:
        if not attack.omniscient:
            sent = corrupt(attack, honest, byzantine, seed, round_index, rows.keys, past=past)
            return Struck(sent, honest, honest)

        def combine_votes(receiver: int, group: torch.Tensor, votes: torch.Tensor):
            return algorithm.combine_at(state, receiver, group, votes, replayed(context))

        votes = per_receiver(
            attack,
            algorithm.votes(state, honest),
            byzantine,
            rows,
            seed,
            round_index,
            combine=combine_votes,
            base=partial(algorithm.receiver_base, state),
            weights=algorithm.receiver_weights,
        )
        sent = honest.clone()
        sent[attackers] = algorithm.from_votes(state, votes[attackers], attackers).to(sent.dtype)
        return Struck(sent, honest, honest)
    node_start, node_trained = start, trained
    if rows.senders is not None:
        start, trained = start.index_select(0, rows.senders), trained.index_select(0, rows.senders)
    offset = start if target == Target.UPDATE else torch.zeros_like(start[:1])
    space = trained - offset if target == Target.UPDATE else trained
    if attack.omniscient:

        def combine_models(receiver: int, group: torch.Tensor, values: torch.Tensor):
            models = trained.clone()
            models[group] = values + (offset[group] if target == Target.UPDATE else 0)
            votes = algorithm.votes(state, algorithm.encode(nodes, models))
            return algorithm.combine_at(state, receiver, group, votes[group], replayed(context))

        attacked = per_receiver(
            attack,
            space,
            byzantine,
            rows,
            seed,
            round_index,
            combine=combine_models,
            base=partial(base_in_space, algorithm, state, target, node_start, node_trained),
            weights=algorithm.receiver_weights,
        )
    else:
        attacked = corrupt(attack, space, byzantine, seed, round_index, rows.keys, past=past)
    models = trained.clone()
    models[attackers] = attacked[attackers] + (offset[attackers] if target == Target.UPDATE else 0)
    sent = torch.where(byzantine.unsqueeze(1), algorithm.encode(nodes, models), honest)
    return Struck(sent, honest, space)


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
    context = CombineContext(generator(seed, "aggregate", round_index), server_update)
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
