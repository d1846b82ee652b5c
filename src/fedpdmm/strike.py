"""Where an attack strikes: the Byzantine rows of a round, rewritten at their target.

- `model`:   the Byzantine node's trained model is perturbed, then encoded into its message;
- `update`:  the change since the round's start is perturbed (start + attack(trained - start));
- `message`: the transmitted vector itself is perturbed;
- `data`:    a data attack (`label_flip`) corrupted the training data; messages are sent as is;
- `none`:    the pseudo-target of unattacked runs (nothing is perturbed).

Per-row attacks (sign flip, noise, replay) rewrite each Byzantine row alone, from its own seeded
stream; omniscient ones are computed per receiver from the rows it combines (`per_receiver`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch

from fedpdmm.algorithms.base import Algorithm, CombineContext, RoundState
from fedpdmm.attacks.base import StrikeContext
from fedpdmm.seeding import generator
from fedpdmm.targets import Target

__all__ = ["MessageRows", "Struck", "corrupt", "per_receiver", "strike"]


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
    arrived: torch.Tensor | None = None,
    memory: dict | None = None,
) -> torch.Tensor:
    """An omniscient attack applied once per receiver to the rows that receiver combines.

    Receiver j's Byzantine rows are computed from all rows into j (with a server every
    client's; on a graph its neighbours', with j's own model as one more honest row, as in He,
    Karimireddy and Jaggi's decentralized attacks): the statistics of what j combines, with j's
    own number of rows and of Byzantine senders. A receiver with fewer honest rows than the
    attack needs (`attack.min_honest`) gets honest rows. It draws from `(seed, "attack", round)`
    with a server and `(seed, "attack", round, "to", j)` on a graph.

    `arrived` `[m]` (an unreliable network, `fedpdmm.channel`): the rows whose message of this
    round reaches its receiver this round. The attacker then knows the network's draw and
    computes against only the rows that arrive at j (and j's rule on those rows): the worst
    case, stronger than an attacker calibrated on messages the receiver never sees. Byzantine
    rows that do not arrive stay honest; they are never combined. `memory` (receiver -> dict):
    what the attacker of each receiver keeps across rounds (`StrikeContext.memory`).
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
        if arrived is not None:
            group = group[arrived[group]]
        mask = byzantine[group]
        if not bool(mask.any()):
            continue  # none of the receiver's Byzantine rows arrives this round
        own = base(receiver)
        whole = rows.receivers is None and len(group) == len(values)  # a server hearing all
        # attacks never write into their input (tested), so the server's stack is `values`
        stack, shown, row_weights = values if whole else values[group], mask, weights(group)
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
            memory=None if memory is None else memory.setdefault(receiver, {}),
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
    if target != Target.MESSAGE:
        base = base[: trained.shape[1]]  # the model part of a wider row (SCAFFOLD's [x, dc])
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
    """What a round sends (`messages` `[m, w]`); what it would have sent honestly (`honest`,
    None unless kept); the Byzantine rows' honest messages (`honest_rows` `[k, w]`) and their
    rows in the attack's space before corruption (`space_rows`: messages, models or updates;
    what a replaying attacker remembers)."""

    messages: torch.Tensor
    honest: torch.Tensor | None
    honest_rows: torch.Tensor
    space_rows: torch.Tensor


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
    keep_honest: bool = True,
    arrived: torch.Tensor | None = None,
    memory: dict | None = None,
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
    receiver applies this round (`Algorithm.combine_at`, with `context`). With
    `keep_honest=False` the Byzantine rows are rewritten in the freshly encoded tensor, which
    saves a copy of every message (`Struck.honest` is then None). `arrived` `[m]`: over an
    unreliable network, the rows whose message of this round arrives this round; omniscient
    attacks compute per receiver against those rows only (`per_receiver`). `memory`: the
    attackers' memory across rounds, per receiver.
    """
    nodes = state.nodes
    honest = algorithm.encode_nodes(nodes, trained)
    if target in (Target.NONE, Target.DATA) or not bool(byzantine.any()):
        kept = honest[byzantine]
        return Struck(honest, honest, kept, kept)
    attackers = byzantine.nonzero().flatten()
    honest_rows = honest[attackers]
    copy = keep_honest or honest is trained  # an encoding that is the model is never altered
    if target == Target.MESSAGE:
        if not attack.omniscient:
            sent = corrupt(
                attack, honest, byzantine, seed, round_index, rows.keys, copy=copy, past=past
            )
            return Struck(sent, honest if keep_honest else None, honest_rows, honest_rows)

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
            arrived=arrived,
            memory=memory,
        )
        sent = honest.clone() if copy else honest
        sent[attackers] = algorithm.from_votes(state, votes[attackers], attackers).to(sent.dtype)
        return Struck(sent, honest if keep_honest else None, honest_rows, honest_rows)
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
            arrived=arrived,
            memory=memory,
        )
    else:
        attacked = corrupt(attack, space, byzantine, seed, round_index, rows.keys, past=past)
    models = trained.clone()
    models[attackers] = attacked[attackers] + (offset[attackers] if target == Target.UPDATE else 0)
    encoded = algorithm.encode(nodes, models)
    sent = honest.clone() if copy else honest
    sent[attackers] = encoded[attackers]
    return Struck(sent, honest if keep_honest else None, honest_rows, space[attackers])
