"""What the peer-to-peer algorithms share: the edge layout, the graph checks, the rule calls.

Row e of a `[2E, d]` message tensor belongs to the directed edge `edges.src[e] -> edges.dst[e]`
(`fedpdmm.topology.EdgeIndex`); edges are sorted by source, so a node's outgoing rows are
contiguous. There is no hub: an algorithm's state is `RoundState(None, nodes)`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from fedpdmm.aggregators import RuleContext
from fedpdmm.algorithms.robust import RobustCombine
from fedpdmm.errors import ConfigError
from fedpdmm.topology import EdgeIndex


def outgoing_edges(edges: EdgeIndex, node: int) -> slice:
    """Rows of the edges node -> j (edges are sorted by source, so they are contiguous)."""
    start = int(edges.degree[:node].sum())
    return slice(start, start + int(edges.degree[node]))


class GraphAlgorithm:
    """Defaults shared by the graph algorithms: no hub, no downlink; votes are the messages."""

    setting: ClassVar[str] = "graph"
    combines_own_row: ClassVar[bool] = False  # the receiver's own model is one of its rows
    has_echo: ClassVar[bool] = False  # `echo` is not None (PDMM's duals)
    edges: EdgeIndex
    robust: RobustCombine | None

    @property
    def needs_reference(self) -> bool:
        return False

    @property
    def is_robust(self) -> bool:
        return self.robust is not None and not self.robust.is_plain_mean

    def message_size(self, dim: int) -> int:
        return dim

    def downlink(self, hub: Any) -> None:
        return None

    def echo(self, state: Any, rows: torch.Tensor) -> torch.Tensor | None:
        return None

    def votes(self, state: Any, messages: torch.Tensor) -> torch.Tensor:
        return messages

    def from_votes(self, state: Any, votes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return votes

    def receiver_base(self, state: Any, receiver: int) -> torch.Tensor:
        """The receiving node's own model: where its combination starts from."""
        return state.nodes.x[receiver]

    def receiver_weights(self, rows: torch.Tensor) -> torch.Tensor | None:
        """The receiver's weight of each of its incoming `rows` (None: uniform)."""
        return None

    def node_rule(
        self,
        rows: torch.Tensor,
        base: torch.Tensor,
        generator: torch.Generator | None,
        dropped: int = 0,
        absent: int = 0,
    ) -> torch.Tensor:
        """base + rule(rows - base) for one receiver (graph rules keep no state); `dropped`
        rows of this receiver were rejected and lower the rule's f; `absent` did not arrive."""
        context = RuleContext(generator=generator, dropped=dropped, absent=absent)
        value, _ = self.robust(rows, base, context)  # type: ignore[misc]
        return value


def keeps_aggregate(rule) -> bool:
    return bool(getattr(rule, "keeps_aggregate", False))


def check_graph_rule(robust: RobustCombine, label: str) -> None:
    """Rules that need a server (per-client history, a root dataset) cannot run on a graph."""
    if robust.rule.stateful or robust.rule.needs_reference or keeps_aggregate(robust.rule):
        raise ConfigError(
            f"{robust.rule.name} in {label!r} needs a server (per-client history, a root "
            "dataset or the previous aggregate); use it with topology.name = 'server'"
        )
