"""The one contract every algorithm follows, with a server and on a graph (see the package doc)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, Protocol

import torch

from fedpdmm.aggregators import finite_rows

__all__ = [
    "Algorithm",
    "CombineContext",
    "LocalProblem",
    "RoundState",
    "ServerAlgorithm",
    "finite_rows",
    "kept_open",
    "missing_rows",
]


class LocalProblem(NamedTuple):
    """min_x f_i(x) + <linear_i, x> + (rho_i / 2) ||x - v_i||^2, by SGD from `start`, where the
    prox centre v_i = center_scale * center_i (a scale, so that no scaled `[m, d]` copy is made).

    All `[m, d]` (one row per node); `center` and `linear` may be None (no such term).
    """

    start: torch.Tensor
    center: torch.Tensor | None
    rho: torch.Tensor | float
    linear: torch.Tensor | None = None
    center_scale: float = 1.0

    @property
    def prox_center(self) -> torch.Tensor | None:
        """The prox centres v `[m, d]` themselves (a new tensor unless the scale is 1)."""
        if self.center is None or self.center_scale == 1:
            return self.center
        return self.center * self.center_scale


class RoundState(NamedTuple):
    """An algorithm's whole state: the hub's (the server's; None on a graph) and the nodes'."""

    hub: Any
    nodes: Any


class CombineContext(NamedTuple):
    """What a receiver's combination may use beyond the messages: `generator` for randomized
    rules (seeded per round) and `reference` `[d]`, FLTrust's server update. `reuse_state`: the
    caller hands the state over, so `combine` may write the new state into its buffers instead
    of allocating (the round step does; a caller that keeps the old state leaves it False).
    `lost` `[m]` bool: rows that did not arrive over an unreliable network (`fedpdmm.channel`);
    they are not accepted, but unlike a rejected row they do not close their edge: the
    receiver keeps what it had for them (None: every row that is not accepted was rejected)."""

    generator: torch.Generator | None = None
    reference: torch.Tensor | None = None
    reuse_state: bool = False
    lost: torch.Tensor | None = None


def missing_rows(accepted: torch.Tensor, context: CombineContext) -> tuple[int, int]:
    """(rejected, absent): the rows not accepted that arrived (rejected: they lower a robust
    rule's f) and those that did not arrive over an unreliable network (absent)."""
    missing = int((~accepted).sum())
    if context.lost is None:
        return missing, 0
    absent = int((~accepted & context.lost).sum())
    return missing - absent, absent


def kept_open(open_rows: torch.Tensor, accepted: torch.Tensor, context: CombineContext):
    """`[m]` the rows a receiver combines after this round: the accepted ones, and the open ones
    whose messages did not arrive (a lost message keeps its edge; a rejected one closes it)."""
    if context.lost is None:
        return accepted
    return accepted | (open_rows & context.lost)


class Algorithm(Protocol):
    """One round of any algorithm, as the pieces a transport runs on different machines.

    Node functions act on any subset of rows (all n nodes in the simulator, one row on a real
    node); `combine` is the receivers' side (the server, or every graph node for its edges).
    A message that is not accepted (non-finite, malformed, missing) closes its edge in the
    receiver's combination until one is accepted again (each algorithm states how).

    What attacks may know about the combination (`fedpdmm.rounds.strike`): `votes` maps message
    rows to what their receivers combine (and `from_votes` back), `combine_at` is the value a
    receiver computes from a given set of votes, `echo` is the part of each receiver's state that
    its next message back to the sender carries (PDMM's duals; None where there is none).
    """

    name: ClassVar[str]  # the registry name, e.g. "pdmm"
    setting: ClassVar[str]  # "server" or "graph"
    combines_own_row: ClassVar[bool]  # the receiver's own model is one of its rows (gossip)
    has_echo: ClassVar[bool]  # `echo` is not None: what a Byzantine node remembers matters
    robust: Any

    @property
    def needs_reference(self) -> bool: ...

    def message_size(self, dim: int) -> int: ...

    def init(self, x0: torch.Tensor) -> RoundState: ...

    def downlink(self, hub: Any) -> torch.Tensor | None: ...

    def receive(
        self,
        nodes: Any,
        downlink: torch.Tensor | None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Any, LocalProblem]: ...

    def finish(self, nodes: Any, trained: torch.Tensor, steps: torch.Tensor | None = None) -> Any:
        """The nodes' state after training to `trained`; `steps` `[m]`: the local steps each row
        ran (None: K each)."""
        ...

    def encode(self, nodes: Any, row_models: torch.Tensor) -> torch.Tensor: ...

    def encode_nodes(self, nodes: Any, models: torch.Tensor) -> torch.Tensor: ...

    def combine(
        self,
        state: RoundState,
        messages: torch.Tensor,
        accepted: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> RoundState: ...

    def models(self, state: RoundState) -> tuple[torch.Tensor | None, torch.Tensor]: ...

    def echo(self, state: RoundState, rows: torch.Tensor) -> torch.Tensor | None: ...

    def votes(self, state: RoundState, messages: torch.Tensor) -> torch.Tensor: ...

    def from_votes(
        self, state: RoundState, votes: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor: ...

    def receiver_base(self, state: RoundState, receiver: int) -> torch.Tensor: ...

    def receiver_weights(self, rows: torch.Tensor) -> torch.Tensor | None: ...

    def combine_at(
        self,
        state: RoundState,
        receiver: int,
        rows: torch.Tensor,
        votes: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> torch.Tensor: ...


class ServerAlgorithm:
    """Defaults shared by the algorithms with a server: one message row per client, all of them
    received by the server (receiver 0); votes are the messages themselves; no echo."""

    setting: ClassVar[str] = "server"
    combines_own_row: ClassVar[bool] = False
    has_echo: ClassVar[bool] = False
    robust: Any = None

    @property
    def needs_reference(self) -> bool:
        """Whether the server needs its own update on a root dataset (FLTrust)."""
        return self.robust is not None and self.robust.rule.needs_reference

    @property
    def is_robust(self) -> bool:
        return self.robust is not None and not self.robust.is_plain_mean

    def message_size(self, dim: int) -> int:
        return dim

    def encode_nodes(self, nodes: Any, models: torch.Tensor) -> torch.Tensor:
        return self.encode(nodes, models)  # type: ignore[attr-defined]

    def echo(self, state: RoundState, rows: torch.Tensor) -> torch.Tensor | None:
        return None

    def votes(self, state: RoundState, messages: torch.Tensor) -> torch.Tensor:
        return messages

    def from_votes(self, state: RoundState, votes: torch.Tensor, rows: torch.Tensor):
        return votes

    def receiver_base(self, state: RoundState, receiver: int) -> torch.Tensor:
        """The server's model: where its combination starts from."""
        return state.hub.x

    def receiver_weights(self, rows: torch.Tensor) -> torch.Tensor | None:
        """The server's weight of each of `rows` (None: uniform)."""
        return None

    def combine_at(
        self,
        state: RoundState,
        receiver: int,
        rows: torch.Tensor,
        votes: torch.Tensor,
        context: CombineContext = CombineContext(),
    ) -> torch.Tensor:
        """The server's new model if message rows `rows` carry `votes` (all rows accepted)."""
        every = torch.ones(votes.shape[0], dtype=torch.bool)
        value, _ = self.combination(state, votes, every, context)  # type: ignore[attr-defined]
        return value
