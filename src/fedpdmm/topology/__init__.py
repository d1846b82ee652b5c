"""Communication graphs on nodes 0..n-1, and the matrices and edge tables built from them.

`build(name, n, seed=..., **params)` returns a connected, undirected `networkx.Graph`, the same one
for the same arguments. Random graphs are drawn with integer seeds derived from `seed` (never from a
global generator); a disconnected draw is replaced by a draw from the next derived seed, up to
`MAX_ATTEMPTS` times, so a random topology is sampled *conditioned on being connected*. This
matters at small n: the default radius `sqrt(ln n / n)` of `random_geometric` (used in earlier PDMM
experiments by the paper's co-authors; about 1.8 times the connectivity threshold
`sqrt(ln n / (pi n))`, Penrose 2003) connects 10 nodes only about 3 draws in 4.

Every topology needs `num_nodes >= 2`; `ring` needs 3, `two_cliques` 4, `torus` 9.
"""

from __future__ import annotations

from fedpdmm.topology.edges import (
    EdgeIndex,
    algebraic_connectivity,
    communities,
    edge_index,
    edge_list,
    isolated_honest,
    metropolis_weights,
    spectral_gap,
)
from fedpdmm.topology.graphs import MAX_ATTEMPTS, TOPOLOGIES, Topology, build, describe, names

__all__ = [
    "MAX_ATTEMPTS",
    "TOPOLOGIES",
    "EdgeIndex",
    "Topology",
    "algebraic_connectivity",
    "build",
    "communities",
    "describe",
    "edge_index",
    "edge_list",
    "isolated_honest",
    "metropolis_weights",
    "names",
    "spectral_gap",
]
