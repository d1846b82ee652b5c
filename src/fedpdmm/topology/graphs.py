"""Communication graphs on nodes 0..n-1, drawn from a seed (see `fedpdmm.topology`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import networkx as nx

from fedpdmm.errors import ConfigError
from fedpdmm.registry import Registry
from fedpdmm.seeding import derive_seed

MAX_ATTEMPTS = 100
"""How many derived seeds a random topology tries before it reports that it cannot connect."""

Params = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Parameter checks
# ---------------------------------------------------------------------------------------------


def _int_param(name: str, key: str, value: Any, low: int, high: int) -> int:
    """`value` as an int in [low, high], else a ConfigError naming `topology.<key>`."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"topology.{key} must be an integer, got {value!r} for {name!r}")
    if not low <= int(value) <= high:
        raise ConfigError(
            f"topology.{key} must be in [{low}, {high}] for {name!r}, got {value}; "
            f"set topology.{key} in that range"
        )
    return int(value)


def _real_param(name: str, key: str, value: Any, low: float, high: float, low_open: bool) -> float:
    """`value` as a float in (low, high] (`low_open`) or [low, high], else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ConfigError(f"topology.{key} must be a finite number, got {value!r} for {name!r}")
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ConfigError(
            f"topology.{key} must be in {bracket}{low}, {high}] for {name!r}, got {value}; "
            f"set topology.{key} in that range"
        )
    return float(value)


# ---------------------------------------------------------------------------------------------
# Topologies: `resolve(n, params) -> params` fills defaults and validates; `sample(n, seed, **p)`
# draws the graph (`seed` is None for deterministic topologies).
# ---------------------------------------------------------------------------------------------


def _no_params(n: int, params: Params) -> Params:
    return {}


def _star(n: int, seed: int | None) -> nx.Graph:
    return nx.star_graph(n - 1)


def _complete(n: int, seed: int | None) -> nx.Graph:
    return nx.complete_graph(n)


def _ring(n: int, seed: int | None) -> nx.Graph:
    return nx.cycle_graph(n)


def _two_cliques(n: int, seed: int | None) -> nx.Graph:
    half = n // 2
    graph = nx.complete_graph(half)
    graph.add_edges_from(nx.complete_graph(range(half, n)).edges)
    graph.add_edge(half - 1, half)
    return graph


def _square_factors(n: int) -> tuple[int, int] | None:
    """The factorisation n = rows * cols with 3 <= rows <= cols and rows largest, if any."""
    for rows in range(math.isqrt(n), 2, -1):
        if n % rows == 0:
            return rows, n // rows
    return None


def _torus_params(n: int, params: Params) -> Params:
    rows, cols = params.get("rows"), params.get("cols")
    if rows is None and cols is None:
        factors = _square_factors(n)
        if factors is None:
            raise ConfigError(
                f"topology 'torus' needs num_nodes = rows * cols with rows, cols >= 3, and "
                f"{n} has no such factorisation; use num_nodes such as 9, 12, 16, 20 or 25"
            )
        return {"rows": factors[0], "cols": factors[1]}
    if rows is not None:
        rows = _int_param("torus", "rows", rows, 3, n)
    if cols is not None:
        cols = _int_param("torus", "cols", cols, 3, n)
    if rows is None:
        rows, key = n // cols, "cols"
    elif cols is None:
        cols, key = n // rows, "rows"
    else:
        key = "rows"
    if rows * cols != n or min(rows, cols) < 3:
        raise ConfigError(
            f"topology.{key}: torus needs rows * cols == num_nodes with rows, cols >= 3, got "
            f"rows={params.get('rows')}, cols={params.get('cols')}, num_nodes={n}"
        )
    return {"rows": rows, "cols": cols}


def _torus(n: int, seed: int | None, rows: int, cols: int) -> nx.Graph:
    grid = nx.grid_2d_graph(rows, cols, periodic=True)
    return nx.relabel_nodes(grid, {(r, c): r * cols + c for r, c in grid.nodes})


def _erdos_renyi_params(n: int, params: Params) -> Params:
    p = params.get("p")
    if p is None:
        return {"p": min(1.0, 2.0 * math.log(n) / n)}
    return {"p": _real_param("erdos_renyi", "p", p, 0.0, 1.0, low_open=True)}


def _erdos_renyi(n: int, seed: int | None, p: float) -> nx.Graph:
    return nx.gnp_random_graph(n, p, seed=seed)


def _random_geometric_params(n: int, params: Params) -> Params:
    radius, scale = params.get("radius"), params.get("radius_scale")
    if radius is not None and scale is not None:
        raise ConfigError(
            "topology.radius and topology.radius_scale are both set for 'random_geometric'; "
            "set one of them"
        )
    if radius is not None:
        return {"radius": _real_param("random_geometric", "radius", radius, 0.0, math.inf, True)}
    scale = 1.0 if scale is None else scale
    scale = _real_param("random_geometric", "radius_scale", scale, 0.0, math.inf, True)
    return {"radius": scale * math.sqrt(math.log(n) / n)}


def _random_geometric(n: int, seed: int | None, radius: float) -> nx.Graph:
    return nx.random_geometric_graph(n, radius, dim=2, seed=seed)


def _k_regular_params(n: int, params: Params) -> Params:
    k = params.get("k")
    k = min(4, n - 1) if k is None else _int_param("k_regular", "k", k, 2, n - 1)
    if n * k % 2:
        raise ConfigError(
            f"topology.k: k_regular needs num_nodes * k even, got num_nodes={n}, k={k}; "
            "use an even k or an even num_nodes"
        )
    return {"k": k}


def _k_regular(n: int, seed: int | None, k: int) -> nx.Graph:
    return nx.random_regular_graph(k, n, seed=seed)


def _small_world_params(n: int, params: Params) -> Params:
    k, p = params.get("k"), params.get("p")
    if k is None:
        k = min(4, 2 * ((n - 1) // 2))
    else:
        k = _int_param("small_world", "k", k, 2, n - 1)
        if k % 2:
            raise ConfigError(
                f"topology.k must be even for 'small_world' (k/2 neighbours on each side of the "
                f"ring), got {k}"
            )
    p = 0.1 if p is None else _real_param("small_world", "p", p, 0.0, 1.0, low_open=False)
    return {"k": k, "p": p}


def _small_world(n: int, seed: int | None, k: int, p: float) -> nx.Graph:
    return nx.watts_strogatz_graph(n, k, p, seed=seed)


@dataclass(frozen=True)
class Topology:
    """A registered topology: how to draw it, how to resolve and check its parameters."""

    name: str
    sample: Callable[..., nx.Graph]
    resolve: Callable[[int, Params], Params]
    defaults: Mapping[str, object]  # a number, or the formula in n when the default depends on n
    description: str
    min_nodes: int = 2
    hint: str = ""  # what to raise when random draws stay disconnected

    @property
    def random(self) -> bool:
        return bool(self.hint)


TOPOLOGIES: Registry[Topology] = Registry(
    "topology",
    (
        Topology("star", _star, _no_params, {}, "node 0 is a hub joined to every other node"),
        Topology("complete", _complete, _no_params, {}, "every pair of nodes is joined"),
        Topology("ring", _ring, _no_params, {}, "cycle 0-1-...-(n-1)-0", min_nodes=3),
        Topology(
            "torus",
            _torus,
            _torus_params,
            {"rows": "largest factor <= sqrt(n) with rows, cols >= 3", "cols": "n / rows"},
            "rows x cols grid with wrap-around, every degree 4; node r*cols + c is cell (r, c)",
            min_nodes=9,
        ),
        Topology(
            "erdos_renyi",
            _erdos_renyi,
            _erdos_renyi_params,
            {"p": "min(1, 2 ln(n) / n)"},
            "each pair joined independently with probability p (Erdos-Renyi G(n, p))",
            hint="topology.p",
        ),
        Topology(
            "random_geometric",
            _random_geometric,
            _random_geometric_params,
            {"radius": "radius_scale * sqrt(ln(n) / n)", "radius_scale": 1.0},
            "uniform points in the unit square, joined when closer than radius",
            hint="topology.radius or topology.radius_scale",
        ),
        Topology(
            "k_regular",
            _k_regular,
            _k_regular_params,
            {"k": "min(4, n - 1)"},
            "uniformly random graph with every degree k (n * k even)",
            min_nodes=3,
            hint="topology.k",
        ),
        Topology(
            "small_world",
            _small_world,
            _small_world_params,
            {"k": "min(4, n - 1 rounded down to even)", "p": 0.1},
            "Watts-Strogatz: ring lattice with k neighbours, each edge rewired with probability p",
            min_nodes=3,
            hint="topology.k or a smaller topology.p",
        ),
        Topology(
            "two_cliques",
            _two_cliques,
            _no_params,
            {},
            "complete graphs on 0..n//2-1 and n//2..n-1 joined by the one edge (n//2-1, n//2)",
            min_nodes=4,
        ),
    ),
)


def names() -> tuple[str, ...]:
    """Names accepted by `build`, in registry order."""
    return tuple(TOPOLOGIES)


def describe() -> list[tuple[str, dict[str, object], str]]:
    """`(name, {param: default}, description)` per topology; n-dependent defaults as formulas."""
    return [(name, dict(t.defaults), t.description) for name, t in TOPOLOGIES.items()]


def build(name: str, num_nodes: int, *, seed: int, **params: Any) -> nx.Graph:
    """The connected topology `name` on nodes 0..num_nodes-1, a function of its arguments only.

    `params` are the topology's keys (see `describe()`); a key left out or set to None takes its
    default. Raises ConfigError for an unknown name or key, an invalid value, or a random topology
    that stayed disconnected for `MAX_ATTEMPTS` derived seeds.
    """
    topology = TOPOLOGIES.get(name)
    if topology is None:
        raise ConfigError(f"unknown topology.name {name!r}; valid names: {', '.join(names())}")
    unknown = sorted(set(params) - set(topology.defaults))
    if unknown:
        valid = ", ".join(topology.defaults) or "none"
        raise ConfigError(f"unknown key topology.{unknown[0]} for {name!r}; valid keys: {valid}")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, Integral):
        raise ConfigError(f"num_nodes must be an integer, got {num_nodes!r}")
    if num_nodes < topology.min_nodes:
        raise ConfigError(
            f"topology {name!r} needs num_nodes >= {topology.min_nodes}, got {num_nodes}"
        )
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    n = int(num_nodes)
    resolved = topology.resolve(n, params)
    attempts = MAX_ATTEMPTS if topology.random else 1
    for attempt in range(attempts):
        graph_seed = derive_seed(int(seed), "topology", name, attempt) if topology.random else None
        graph = topology.sample(n, graph_seed, **resolved)
        if nx.is_connected(graph):
            return graph
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in resolved.items()
    )
    if not topology.random:
        raise ConfigError(f"topology {name!r} with num_nodes={n}, {shown} is disconnected")
    raise ConfigError(
        f"topology {name!r} with num_nodes={n}, {shown} was disconnected in all {MAX_ATTEMPTS} "
        f"draws from seed {seed}; use a larger {topology.hint}"
    )
