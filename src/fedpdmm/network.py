"""Who talks to whom: a server and n clients, or a peer-to-peer graph on n nodes; who is Byzantine.

A server is the hub of a star whose hub has no data: its message rows are one per client (row k
is client k's uplink). On a graph the message rows are the 2E directed edges (row e is
`edges.src[e] -> edges.dst[e]`, `fedpdmm.topology.EdgeIndex`). `senders` maps rows to nodes and
`keys` names each row for seeded per-row attack noise (the client index, or "i>j").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from functools import cached_property

import networkx as nx
import torch

from fedpdmm import topology
from fedpdmm.config import Config
from fedpdmm.seeding import derive_seed, generator


@dataclass(frozen=True)
class Network:
    num_nodes: int
    byzantine: torch.Tensor  # [n] bool: the nodes that are Byzantine in attacked runs
    graph: nx.Graph | None = None  # None: a server and n clients
    edges: topology.EdgeIndex | None = None
    name: str = "server"
    warnings: tuple[str, ...] = ()

    @property
    def setting(self) -> str:
        """`"server"` or `"graph"`."""
        return "server" if self.edges is None else "graph"

    @cached_property
    def senders(self) -> torch.Tensor:
        """`[m]` the node that sends each message row."""
        return torch.arange(self.num_nodes) if self.edges is None else self.edges.src

    @cached_property
    def keys(self) -> list[int] | list[str]:
        """`[m]` names of the message rows for per-row attack noise: client k, or edge "i>j"."""
        if self.edges is None:
            return list(range(self.num_nodes))
        pairs = zip(self.edges.src.tolist(), self.edges.dst.tolist(), strict=True)
        return [f"{i}>{j}" for i, j in pairs]

    def byzantine_rows(self, byzantine: torch.Tensor) -> torch.Tensor:
        """`[m]` bool: the message rows sent by a node of `byzantine` `[n]`."""
        return byzantine if self.edges is None else byzantine.index_select(0, self.edges.src)

    def with_byzantine(self, byzantine: torch.Tensor) -> Network:
        return replace(self, byzantine=byzantine.clone())

    def default_f(self) -> int:
        """Byzantine rows a rule should expect: with a server the Byzantine count; on a graph the
        most Byzantine neighbours any honest node has (the b-local bound)."""
        if self.graph is None:
            return int(self.byzantine.sum())
        byzantine = set(self.byzantine.nonzero().flatten().tolist())
        counts = [
            sum(neighbour in byzantine for neighbour in self.graph.neighbors(node))
            for node in self.graph.nodes
            if node not in byzantine
        ]
        return max(counts, default=0)

    def rows_per_receiver(self, own_row: bool = False) -> dict[int, int]:
        """Rows each receiver combines (receiver -1 is the server), plus its own if `own_row`."""
        if self.graph is None:
            return {-1: self.num_nodes}
        return {node: self.graph.degree(node) + int(own_row) for node in self.graph.nodes}


def pick_byzantine(config: Config) -> torch.Tensor:
    """`[n]` bool: `config.num_byzantine` nodes drawn by the seed."""
    n = config.data.num_clients
    byzantine = torch.zeros(n, dtype=torch.bool)
    order = torch.randperm(n, generator=generator(config.seed, "byzantine"))
    byzantine[order[: config.num_byzantine]] = True
    return byzantine


def build_network(config: Config, byzantine: torch.Tensor | None = None) -> Network:
    """The config's network: a server, or the seeded graph, with its Byzantine nodes."""
    byzantine = pick_byzantine(config) if byzantine is None else byzantine
    n = config.data.num_clients
    if not config.decentralized:
        return Network(n, byzantine)
    graph = topology.build(
        config.topology.name, n, seed=derive_seed(config.seed, "topology"), **config.topology.params
    )
    notes = []
    isolated = topology.isolated_honest(graph, byzantine)
    if isolated:
        message = (
            f"honest node(s) {isolated} have only Byzantine neighbours in the "
            f"{config.topology.name} graph: no method can help them (in attacked runs)"
        )
        warnings.warn(message, stacklevel=2)
        notes.append(message)
    return Network(
        n,
        byzantine,
        graph=graph,
        edges=topology.edge_index(graph),
        name=config.topology.name,
        warnings=tuple(notes),
    )
