"""Specification of `fedpdmm.algorithms`: FedAvg and PDMM with a server, driven through their
step functions (downlink -> receive -> local solve -> finish -> encode -> combine) with exact local
solvers on strongly convex quadratics f_i(x) = 0.5 (x - a_i)^T Q_i (x - a_i), in float64."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import networkx as nx
import pytest
import torch
from quadratics import quadratics as _quadratics

from fedpdmm import pdmm
from fedpdmm.algorithms import FedAvg, LocalProblem, PDMMStar, RoundState
from fedpdmm.seeding import generator


def quadratics(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _quadratics(n, dim, seed, "algorithm-quadratics")


N = 6
DIM = 4
LocalSolver = Callable[[LocalProblem], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Quadratics and exact local solvers
# ---------------------------------------------------------------------------------------------


def consensus_optimum(q: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """argmin_x sum_i f_i(x) = (sum_i Q_i)^{-1} sum_i Q_i a_i."""
    return torch.linalg.solve(q.sum(0), (q @ a.unsqueeze(2)).sum(0).squeeze(1))


def exact_prox(q: torch.Tensor, a: torch.Tensor) -> LocalSolver:
    """Exact LocalProblem(start, center v, rho) solver: (Q_i + rho I)^{-1} (Q_i a_i + rho v_i)."""
    eye = torch.eye(q.shape[1], dtype=q.dtype)

    def solve(problem: LocalProblem) -> torch.Tensor:
        rho = float(problem.rho)
        rhs = (q @ a.unsqueeze(2)).squeeze(2) + rho * problem.prox_center
        return torch.linalg.solve(q + rho * eye, rhs)

    return solve


def gradient_steps(q: torch.Tensor, a: torch.Tensor, lr: float, steps: int) -> LocalSolver:
    """`steps` full-gradient steps x <- x - lr Q_i (x - a_i) from `problem.start` (rho = 0)."""

    def solve(problem: LocalProblem) -> torch.Tensor:
        assert problem.prox_center is None and float(problem.rho) == 0.0
        x = problem.start.clone()
        for _ in range(steps):
            x = x - lr * (q @ (x - a).unsqueeze(2)).squeeze(2)
        return x

    return solve


def relative_error(x: torch.Tensor, optimum: torch.Tensor) -> float:
    """max over rows of ||x_i - x*|| / ||x*|| (x may be [d] or [m, d])."""
    return ((x.reshape(-1, optimum.numel()) - optimum).norm(dim=1).max() / optimum.norm()).item()


def one_round(
    algorithm: Any, server: Any, clients: Any, local: LocalSolver, accepted: torch.Tensor | None
) -> tuple[Any, Any, torch.Tensor]:
    """One round through the step functions; returns the new server, clients and the messages."""
    received = algorithm.downlink(server)
    clients, problem = algorithm.receive(clients, received)
    trained = local(problem)
    clients = algorithm.finish(clients, trained)
    messages = algorithm.encode(clients, trained)
    if accepted is None:
        accepted = torch.ones(messages.shape[0], dtype=torch.bool)
    server, clients = algorithm.combine(RoundState(server, clients), messages, accepted)
    return server, clients, messages


def run_rounds(algorithm: Any, x0: torch.Tensor, local: LocalSolver, rounds: int) -> RoundState:
    """`RoundState(server, clients)` after `rounds` rounds from `x0`."""
    server, clients = algorithm.init(x0)
    for _ in range(rounds):
        server, clients, _ = one_round(algorithm, server, clients, local, None)
    return RoundState(server, clients)


# ---------------------------------------------------------------------------------------------
# PDMM with a server
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [1.0, 0.5])
@pytest.mark.parametrize("c", [0.5, 2.0])
def test_pdmm_star_reaches_the_centralized_optimum(c: float, theta: float) -> None:
    q, a = quadratics(N, DIM, seed=3)
    optimum = consensus_optimum(q, a)
    algorithm = PDMMStar(num_clients=N, c=c, theta=theta)
    x0 = torch.randn(DIM, generator=generator(0, "x0"), dtype=torch.float64)
    global_model, client_models = algorithm.models(
        run_rounds(algorithm, x0, exact_prox(q, a), rounds=500)
    )
    assert relative_error(global_model, optimum) < 1e-8
    assert relative_error(client_models, optimum) < 1e-8
    assert global_model.dtype == torch.float64


def test_pdmm_star_client_problem_is_the_pdmm_x_update() -> None:
    """receive gives rho = c and center = -z_i / c with z_i = (1 - theta) z_i + theta y(s|i),
    y(s|i) = z_s[i] - 2 c x_s; encode sends z_i + 2 c x_i; the server keeps x_s = mean z_s / c."""
    c, theta = 0.7, 0.5
    algorithm = PDMMStar(num_clients=N, c=c, theta=theta)
    gen = generator(1, "pdmm-state")
    server, clients = algorithm.init(torch.zeros(DIM, dtype=torch.float64))
    z_s = torch.randn(N, DIM, generator=gen, dtype=torch.float64)
    server = server._replace(z=z_s, x=z_s.mean(0) / c)
    z_i = torch.randn(N, DIM, generator=gen, dtype=torch.float64)
    clients = clients._replace(z=z_i)

    received = algorithm.downlink(server)
    torch.testing.assert_close(received, z_s - 2 * c * z_s.mean(0) / c, rtol=0, atol=1e-14)
    clients, problem = algorithm.receive(clients, received)
    z_new = (1 - theta) * z_i + theta * received
    torch.testing.assert_close(clients.z, z_new, rtol=0, atol=1e-14)
    torch.testing.assert_close(problem.prox_center, -z_new / c, rtol=0, atol=1e-14)
    assert float(problem.rho) == c

    trained = torch.randn(N, DIM, generator=gen, dtype=torch.float64)
    clients = algorithm.finish(clients, trained)
    messages = algorithm.encode(clients, trained)
    torch.testing.assert_close(messages, z_new + 2 * c * trained, rtol=0, atol=1e-14)
    new_server = algorithm.combine(
        RoundState(server, clients), messages, torch.ones(N, dtype=torch.bool)
    ).hub
    expected_z = (1 - theta) * z_s + theta * messages
    torch.testing.assert_close(new_server.z, expected_z, rtol=0, atol=1e-14)
    torch.testing.assert_close(new_server.x, expected_z.mean(0) / c, rtol=0, atol=1e-14)


def star_graph_with_hub_last(n: int) -> nx.Graph:
    """Clients 0..n-1 and the server as node n (so A(i|s) = +1, A(s|i) = -1, as in PDMMStar)."""
    graph = nx.Graph()
    graph.add_nodes_from(range(n + 1))
    graph.add_edges_from((i, n) for i in range(n))
    return graph


def star_prox(q: torch.Tensor, a: torch.Tensor):
    """Node prox for the generic solver: the quadratics for clients, prox = v for the hub."""
    eye = torch.eye(q.shape[1], dtype=q.dtype)

    def prox(i: int, v: torch.Tensor, rho: float) -> torch.Tensor:
        if i == q.shape[0]:
            return v.clone()
        return torch.linalg.solve(q[i] + rho * eye, q[i] @ a[i] + rho * v)

    return prox


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_pdmm_star_fixed_point_equals_the_generic_solver(theta: float) -> None:
    q, a = quadratics(N, DIM, seed=5)
    c = 1.0
    graph = star_graph_with_hub_last(N)
    generic = pdmm.solve(star_prox(q, a), graph, DIM, c=c, theta=theta, rounds=600)
    algorithm = PDMMStar(num_clients=N, c=c, theta=theta)
    global_model, client_models = algorithm.models(
        run_rounds(algorithm, torch.zeros(DIM, dtype=torch.float64), exact_prox(q, a), rounds=300)
    )
    torch.testing.assert_close(client_models, generic[:N], rtol=0, atol=1e-9)
    torch.testing.assert_close(global_model, generic[N], rtol=0, atol=1e-9)


@pytest.mark.parametrize("rounds", [1, 2, 5])
def test_pdmm_star_iterates_are_the_synchronous_pdmm_iterates_at_theta_1(rounds: int) -> None:
    """On the bipartite star, synchronous PDMM at theta = 1 splits into two independent chains;
    the server-first schedule of PDMMStar follows one of them: after T rounds the clients hold
    the generic x_i of round 2T and the server the generic x_s of round 2T + 1."""
    q, a = quadratics(N, DIM, seed=9)
    c = 0.8
    graph = star_graph_with_hub_last(N)
    algorithm = PDMMStar(num_clients=N, c=c, theta=1.0)
    server, clients = run_rounds(
        algorithm, torch.zeros(DIM, dtype=torch.float64), exact_prox(q, a), rounds=rounds
    )
    clients_generic = pdmm.solve(star_prox(q, a), graph, DIM, c=c, theta=1.0, rounds=2 * rounds)
    hub_generic = pdmm.solve(star_prox(q, a), graph, DIM, c=c, theta=1.0, rounds=2 * rounds + 1)
    torch.testing.assert_close(clients.x, clients_generic[:N], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(server.x, hub_generic[N], rtol=1e-12, atol=1e-12)


def test_pdmm_star_rejected_message_keeps_its_dual_and_leaves_the_server_mean() -> None:
    q, a = quadratics(N, DIM, seed=4)
    algorithm = PDMMStar(num_clients=N, c=1.0, theta=0.5)
    server, clients = run_rounds(
        algorithm, torch.zeros(DIM, dtype=torch.float64), exact_prox(q, a), rounds=3
    )
    before = server.z.clone()
    received = algorithm.downlink(server)
    clients, problem = algorithm.receive(clients, received)
    trained = exact_prox(q, a)(problem)
    clients = algorithm.finish(clients, trained)
    messages = algorithm.encode(clients, trained)
    messages[2] = float("nan")
    accepted = torch.isfinite(messages).all(dim=1)
    new = algorithm.combine(RoundState(server, clients), messages, accepted).hub

    assert torch.equal(new.z[2], before[2])
    others = accepted.nonzero().flatten()
    expected = 0.5 * before[others] + 0.5 * messages[others]
    torch.testing.assert_close(new.z[others], expected, rtol=0, atol=1e-14)
    assert torch.isfinite(new.x).all()
    # the rejected edge leaves the server's mean and degree (no stale or zero vote)
    torch.testing.assert_close(new.x, new.z[others].mean(0) / 1.0, rtol=0, atol=1e-14)
    assert new.open.tolist() == accepted.tolist()
    assert torch.equal(server.z, before), "combine must not mutate the old server state"


def test_pdmm_star_client_steps_act_on_any_subset_of_rows() -> None:
    """A client alone (one row) computes what its row computes among all clients."""
    q, a = quadratics(N, DIM, seed=8)
    algorithm = PDMMStar(num_clients=N, c=0.6, theta=0.5)
    server, clients = run_rounds(
        algorithm, torch.zeros(DIM, dtype=torch.float64), exact_prox(q, a), rounds=2
    )
    received = algorithm.downlink(server)
    all_clients, problem = algorithm.receive(clients, received)
    trained = exact_prox(q, a)(problem)
    all_messages = algorithm.encode(algorithm.finish(all_clients, trained), trained)
    k = 3
    one = type(clients)(*(field[k : k + 1] for field in clients))
    one, one_problem = algorithm.receive(one, received[k : k + 1])
    torch.testing.assert_close(
        one_problem.prox_center, problem.prox_center[k : k + 1], rtol=0, atol=0
    )
    one = algorithm.finish(one, trained[k : k + 1])
    one_message = algorithm.encode(one, trained[k : k + 1])
    torch.testing.assert_close(one_message, all_messages[k : k + 1], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# FedAvg
# ---------------------------------------------------------------------------------------------


def isotropic(n: int, dim: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Q_i = scale I for every client, centers a [n, dim]."""
    q = scale * torch.eye(dim, dtype=torch.float64).expand(n, dim, dim).clone()
    a = torch.randn(n, dim, generator=generator(seed, "fedavg-centers"), dtype=torch.float64)
    return q, a


def test_fedavg_one_exact_step_per_round_reaches_the_average_optimum() -> None:
    """Q_i = I and lr = 1: each client lands on a_i; the uniform average is mean(a_i)."""
    q, a = isotropic(N, DIM, 1.0, seed=0)
    algorithm = FedAvg(num_clients=N)
    x0 = torch.randn(DIM, generator=generator(1, "x0"), dtype=torch.float64)
    state = run_rounds(algorithm, x0, gradient_steps(q, a, lr=1.0, steps=1), rounds=1)
    assert relative_error(algorithm.models(state)[0], a.mean(0)) < 1e-14


@pytest.mark.parametrize("weighting", ["uniform", "samples"])
def test_fedavg_small_steps_reach_the_uniform_or_weighted_mean(weighting: str) -> None:
    q, a = isotropic(N, DIM, 2.0, seed=1)
    sizes = torch.tensor([5, 40, 7, 100, 1, 13])
    weights = None if weighting == "uniform" else sizes
    algorithm = FedAvg(num_clients=N, weights=weights)
    uniform_mean = a.mean(0)
    weighted_mean = (sizes.double() @ a) / sizes.sum()
    target, other = (
        (uniform_mean, weighted_mean) if weighting == "uniform" else (weighted_mean, uniform_mean)
    )
    x0 = torch.zeros(DIM, dtype=torch.float64)
    state = run_rounds(algorithm, x0, gradient_steps(q, a, lr=0.05, steps=1), 600)
    global_model, _ = algorithm.models(state)
    assert relative_error(global_model, target) < 1e-8
    assert relative_error(global_model, other) > 1e-2
    assert state.nodes.x.shape == (N, DIM)


def test_fedavg_downlink_sends_the_global_model_to_every_client() -> None:
    algorithm = FedAvg(num_clients=N)
    x0 = torch.arange(DIM, dtype=torch.float64)
    server, clients = algorithm.init(x0)
    received = algorithm.downlink(server)
    assert received.shape == (N, DIM)
    assert torch.equal(received, x0.expand(N, DIM))
    clients, problem = algorithm.receive(clients, received)
    assert torch.equal(problem.start, received)
    assert problem.prox_center is None and float(problem.rho) == 0.0
    trained = torch.randn(N, DIM, generator=generator(2, "t"), dtype=torch.float64)
    assert torch.equal(algorithm.encode(algorithm.finish(clients, trained), trained), trained)


@pytest.mark.parametrize("weighting", ["uniform", "samples"])
def test_fedavg_leaves_rejected_messages_out_of_the_average(weighting: str) -> None:
    sizes = torch.tensor([3, 1, 4, 1, 5, 9])
    algorithm = FedAvg(num_clients=N, weights=None if weighting == "uniform" else sizes)
    state = algorithm.init(torch.zeros(DIM, dtype=torch.float64))
    messages = torch.randn(N, DIM, generator=generator(3, "messages"), dtype=torch.float64)
    messages[1] = float("inf")
    messages[4, 0] = float("nan")
    accepted = torch.isfinite(messages).all(dim=1)
    new = algorithm.combine(state, messages, accepted)
    keep = [0, 2, 3, 5]
    if weighting == "uniform":
        expected = messages[keep].mean(0)
    else:
        w = sizes[keep].double()
        expected = (w @ messages[keep]) / w.sum()
    torch.testing.assert_close(algorithm.models(new)[0], expected, rtol=0, atol=1e-14)


def test_fedavg_with_no_accepted_message_keeps_the_global_model() -> None:
    algorithm = FedAvg(num_clients=N)
    x0 = torch.arange(DIM, dtype=torch.float64)
    state = algorithm.init(x0)
    messages = torch.full((N, DIM), float("nan"), dtype=torch.float64)
    new = algorithm.combine(state, messages, torch.zeros(N, dtype=torch.bool))
    assert torch.equal(algorithm.models(new)[0], x0)


def test_fedavg_with_many_local_steps_drifts_but_pdmm_does_not() -> None:
    """Heterogeneous Q_i: FedAvg with K = 10 exact gradient steps settles away from the optimum
    (client drift), while PDMM's exact x-update reaches it."""
    q, a = quadratics(N, DIM, seed=11)
    optimum = consensus_optimum(q, a)
    fedavg = FedAvg(num_clients=N)
    x0 = torch.zeros(DIM, dtype=torch.float64)
    state = run_rounds(fedavg, x0, gradient_steps(q, a, lr=0.1, steps=10), rounds=200)
    assert relative_error(fedavg.models(state)[0], optimum) > 1e-3
    star = PDMMStar(num_clients=N, c=1.0, theta=1.0)
    state = run_rounds(star, x0, exact_prox(q, a), rounds=200)
    assert relative_error(star.models(state)[0], optimum) < 1e-8
