"""Federated algorithms as explicit state plus small step functions, one contract for all.

A server is a network too: the hub of a star, with no data. Every algorithm (`base.Algorithm`)
splits a round into the pieces a transport runs on different machines; its state is
`RoundState(hub, nodes)` (hub None on a graph):

    hub:    downlink(hub)                      -> [n, w] personal message per client (None: graph)
    nodes:  receive(nodes, downlink)           -> nodes, LocalProblem(start, center, rho, linear)
            (K local SGD steps on that problem: `fedpdmm.local.train`)
            finish(nodes, trained)             -> nodes
            encode(nodes, row_models)          -> [m, w] what is sent on each message row
    receivers: combine(state, messages, accepted, CombineContext(generator, reference, reuse_state))
            models(state)                      -> (global model or None, node models [n, d])

Message rows are one per client with a server and one per directed edge on a graph
(`fedpdmm.network.Network.senders`). Node functions act on any subset of rows (all nodes in the
simulator, one row on a Flower node); every node state has a field `x` `[m, d]`, the nodes'
models. Attacks strike between `finish` and `combine`, at the
model, the update or the message (`fedpdmm.rounds.strike`); `fedpdmm.rounds.step` runs a round.

`ALGORITHMS` holds one entry per name, with the class for each setting it supports; each class
builds itself from its config section (`from_config`). Adding an algorithm is one file and one
line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedpdmm.algorithms.base import (
    Algorithm,
    CombineContext,
    LocalProblem,
    RoundState,
    finite_rows,
)
from fedpdmm.algorithms.fedavg import FedAvg
from fedpdmm.algorithms.fedprox import FedProx
from fedpdmm.algorithms.gossip import DSGD
from fedpdmm.algorithms.graph_pdmm import GraphPDMM
from fedpdmm.algorithms.pdmm_star import PDMMStar
from fedpdmm.algorithms.robust import RobustCombine, build_combine, parse_algorithm
from fedpdmm.algorithms.scaffold import Scaffold
from fedpdmm.registry import Registry


@dataclass(frozen=True)
class AlgorithmEntry:
    """An algorithm name and its implementation per setting (`server`, `graph`)."""

    name: str
    server: type | None = None
    graph: type | None = None
    description: str = ""

    def supports(self, setting: str) -> bool:
        return self.implementation(setting) is not None

    def implementation(self, setting: str) -> Any:
        return self.server if setting == "server" else self.graph


ALGORITHMS: Registry[AlgorithmEntry] = Registry(
    "algorithm",
    (
        AlgorithmEntry("fedavg", server=FedAvg, description="FedAvg: average of local models"),
        AlgorithmEntry(
            "pdmm",
            server=PDMMStar,
            graph=GraphPDMM,
            description="PDMM: primal-dual method of multipliers (server: FedSplit at theta 1)",
        ),
        AlgorithmEntry("dsgd", graph=DSGD, description="decentralized SGD, Metropolis gossip"),
        AlgorithmEntry(
            "fedprox", server=FedProx, description="FedProx: FedAvg + (mu/2)||x-x_g||^2"
        ),
        AlgorithmEntry("scaffold", server=Scaffold, description="SCAFFOLD, option II"),
    ),
)


def names(setting: str) -> tuple[str, ...]:
    """Algorithm names available with a server (`"server"`) or on a graph (`"graph"`)."""
    return tuple(name for name, entry in ALGORITHMS.items() if entry.supports(setting))


CENTRALIZED = names("server")
DECENTRALIZED = names("graph")

__all__ = [
    "ALGORITHMS",
    "CENTRALIZED",
    "DECENTRALIZED",
    "DSGD",
    "Algorithm",
    "AlgorithmEntry",
    "CombineContext",
    "FedAvg",
    "FedProx",
    "GraphPDMM",
    "LocalProblem",
    "PDMMStar",
    "RobustCombine",
    "RoundState",
    "Scaffold",
    "build_combine",
    "finite_rows",
    "names",
    "parse_algorithm",
]
