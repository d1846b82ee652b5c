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
    """Defaults shared by the graph algorithms: no hub, no downlink, no transport hooks."""

    setting: ClassVar[str] = "graph"
    transport_hooks: ClassVar[bool] = False
    combines_own_row: ClassVar[bool] = False  # the receiver's own model is one of its rows
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

    def reopen(self, hub: Any, nodes: list[int]) -> Any:
        return hub

    def node_rule(
        self, rows: torch.Tensor, base: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """base + rule(rows - base) for one receiver (graph rules keep no state)."""
        value, _ = self.robust(rows, base, RuleContext(generator=generator))  # type: ignore[misc]
        return value


def check_graph_rule(robust: RobustCombine, label: str) -> None:
    """Rules that need a server (per-client history, a root dataset) cannot run on a graph."""
    if robust.rule.stateful or robust.rule.needs_reference:
        raise ConfigError(
            f"{robust.rule.name} in {label!r} needs a server (per-client history or a root "
            "dataset); use it with topology.name = 'server'"
        )
