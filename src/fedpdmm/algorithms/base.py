"""The one contract every algorithm follows, with a server and on a graph (see the package doc)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, Protocol

import torch

from fedpdmm.aggregators import finite_rows

__all__ = ["Algorithm", "CombineContext", "LocalProblem", "RoundState", "finite_rows"]


class LocalProblem(NamedTuple):
    """min_x f_i(x) + <linear_i, x> + (rho_i / 2) ||x - center_i||^2, by SGD from `start`.

    All `[m, d]` (one row per node); `center` and `linear` may be None (no such term).
    """

    start: torch.Tensor
    center: torch.Tensor | None
    rho: torch.Tensor | float
    linear: torch.Tensor | None = None


class RoundState(NamedTuple):
    """An algorithm's whole state: the hub's (the server's; None on a graph) and the nodes'."""

    hub: Any
    nodes: Any


class CombineContext(NamedTuple):
    """What a receiver's combination may use beyond the messages.

    `generator`: randomized rules (seeded per round); `reference` `[d]`: FLTrust's server update;
    `open` `[m]` bool: the message rows whose edge is in the receivers' combination this round
    (None: every edge). A closed edge (a node that dropped out) is left out of the combination
    altogether; a message that is merely not accepted leaves the receiver's state of that edge
    as it was.
    """

    generator: torch.Generator | None = None
    reference: torch.Tensor | None = None
    open: torch.Tensor | None = None


class Algorithm(Protocol):
    """One round of any algorithm, as the pieces a transport runs on different machines.

    Node functions act on any subset of rows (all n nodes in the simulator, one row on a real
    node); `combine` is the receivers' side (the server, or every graph node for its edges).
    """

    name: ClassVar[str]  # the registry name, e.g. "pdmm"
    setting: ClassVar[str]  # "server" or "graph"
    transport_hooks: ClassVar[bool]  # `reopen` re-initialises the edges of rejoining nodes
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

    def finish(self, nodes: Any, trained: torch.Tensor) -> Any: ...

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

    def reopen(self, hub: Any, nodes: list[int]) -> Any: ...


class ServerAlgorithm:
    """Defaults shared by the algorithms with a server: one message row per client."""

    setting: ClassVar[str] = "server"
    transport_hooks: ClassVar[bool] = False
    combines_own_row: ClassVar[bool] = False
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

    def reopen(self, hub: Any, nodes: list[int]) -> Any:
        return hub
