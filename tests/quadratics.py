"""Strongly convex quadratics f_i(x) = 0.5 (x - a_i)^T Q_i (x - a_i), their prox and optimum."""

from __future__ import annotations

import torch

from fedpdmm.seeding import generator


def quadratics(
    n: int, dim: int, seed: int, stream: str = "quadratics"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random SPD Q [n, dim, dim] (eigenvalues >= 0.5) and centers a [n, dim], float64."""
    gen = generator(seed, stream)
    b = torch.randn(n, dim, dim, generator=gen, dtype=torch.float64)
    q = b @ b.transpose(1, 2) / dim + 0.5 * torch.eye(dim, dtype=torch.float64)
    a = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    return q, a


def consensus_optimum(q: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """argmin_x sum_i f_i(x) = (sum_i Q_i)^{-1} sum_i Q_i a_i."""
    return torch.linalg.solve(q.sum(0), (q @ a.unsqueeze(2)).sum(0).squeeze(1))


def quadratic_prox(q: torch.Tensor, a: torch.Tensor, i: int, v: torch.Tensor, rho: float):
    """prox_{f_i, rho}(v) = (Q_i + rho I)^{-1} (Q_i a_i + rho v) for one node."""
    eye = torch.eye(q.shape[1], dtype=q.dtype)
    return torch.linalg.solve(q[i] + rho * eye, q[i] @ a[i] + rho * v)


def all_prox(q: torch.Tensor, a: torch.Tensor, center: torch.Tensor, rho) -> torch.Tensor:
    """Every node's prox at once: `center` [n, dim], `rho` a float or [n]."""
    rho = torch.as_tensor(rho, dtype=q.dtype).expand(q.shape[0])
    lhs = q + rho.view(-1, 1, 1) * torch.eye(q.shape[1], dtype=q.dtype)
    rhs = (q @ a.unsqueeze(-1)).squeeze(-1) + rho.view(-1, 1) * center
    return torch.linalg.solve(lhs, rhs)


def run_graph_algorithm(algorithm, q: torch.Tensor, a: torch.Tensor, rounds: int) -> torch.Tensor:
    """Node models `[n, dim]` after `rounds` of a graph algorithm whose local step is the exact
    prox of the quadratics, with every message accepted; starts from zero models."""
    state = algorithm.init(torch.zeros(q.shape[1], dtype=q.dtype))
    accepted = torch.ones(algorithm.edges.num_directed_edges, dtype=torch.bool)
    for _ in range(rounds):
        nodes, problem = algorithm.receive(state.nodes, None)
        trained = all_prox(q, a, problem.prox_center, problem.rho)
        nodes = algorithm.finish(nodes, trained)
        messages = algorithm.encode_nodes(nodes, trained)
        state = algorithm.combine(state._replace(nodes=nodes), messages, accepted)
    return algorithm.models(state)[1]
