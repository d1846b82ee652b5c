"""FedProx and SCAFFOLD: their papers' updates, exact reductions, and runs on digits."""

from __future__ import annotations

import pytest
import torch
from quadratics import consensus_optimum, quadratics

from fedpdmm import config, engine
from fedpdmm.algorithms import FedProx, RoundState, Scaffold
from fedpdmm.cli import app

N, DIM, STEPS, LR = 5, 3, 4, 0.05


def local_gradient_steps(q, a, problem, steps: int, lr: float) -> torch.Tensor:
    """K full-gradient steps on 0.5 (y - a_i)^T Q_i (y - a_i) + <linear_i, y> + prox term."""
    y = problem.start.clone()
    for _ in range(steps):
        gradient = (q @ (y - a).unsqueeze(2)).squeeze(2)
        if problem.linear is not None:
            gradient = gradient + problem.linear
        if problem.prox_center is not None:
            gradient = gradient + problem.rho * (y - problem.prox_center)
        y = y - lr * gradient
    return y


def run_on_quadratics(algorithm, q, a, rounds: int) -> RoundState:
    """The algorithm's own round pieces, with exact gradient steps as the local solver."""
    state = algorithm.init(torch.zeros(DIM, dtype=torch.float64))
    accepted = torch.ones(N, dtype=torch.bool)
    for _ in range(rounds):
        nodes, problem = algorithm.receive(state.nodes, algorithm.downlink(state.hub))
        trained = local_gradient_steps(q, a, problem, STEPS, LR)
        nodes = algorithm.finish(nodes, trained)
        messages = algorithm.encode_nodes(nodes, trained)
        state = algorithm.combine(RoundState(state.hub, nodes), messages, accepted)
    return state


def scaffold_from_the_paper(q, a, rounds: int, server_lr: float) -> torch.Tensor:
    """Algorithm 1 of Karimireddy et al. (2020), option II, every client sampled, one by one."""
    x = torch.zeros(DIM, dtype=torch.float64)
    c = torch.zeros(DIM, dtype=torch.float64)
    c_clients = [torch.zeros(DIM, dtype=torch.float64) for _ in range(N)]
    for _ in range(rounds):
        delta_y, delta_c = [], []
        for i in range(N):
            y = x.clone()
            for _ in range(STEPS):
                y = y - LR * (q[i] @ (y - a[i]) - c_clients[i] + c)
            c_plus = c_clients[i] - c + (x - y) / (STEPS * LR)
            delta_y.append(y - x)
            delta_c.append(c_plus - c_clients[i])
            c_clients[i] = c_plus
        x = x + server_lr * torch.stack(delta_y).mean(0)
        c = c + torch.stack(delta_c).mean(0)  # |S| / N = 1
    return x


@pytest.mark.parametrize("server_lr", [1.0, 0.5])
def test_scaffold_equals_the_papers_per_client_loop_on_quadratics(server_lr: float) -> None:
    q, a = quadratics(N, DIM, seed=3)
    algorithm = Scaffold(num_clients=N, steps=STEPS, lr=LR, server_lr=server_lr)
    state = run_on_quadratics(algorithm, q, a, rounds=30)
    expected = scaffold_from_the_paper(q, a, rounds=30, server_lr=server_lr)
    torch.testing.assert_close(state.hub.x, expected, rtol=0, atol=1e-12)


def test_scaffold_reaches_the_consensus_optimum_where_fedavg_drifts() -> None:
    """Heterogeneous quadratics: SCAFFOLD's corrections remove the client drift of K steps."""
    q, a = quadratics(N, DIM, seed=4)
    optimum = consensus_optimum(q, a)
    scaffold = run_on_quadratics(Scaffold(N, steps=STEPS, lr=LR), q, a, rounds=600)
    fedavg = run_on_quadratics(FedProx(N, mu=0.0), q, a, rounds=600)
    assert (scaffold.hub.x - optimum).norm() < 1e-9 * optimum.norm()
    assert (fedavg.hub.x - optimum).norm() > 1e-4 * optimum.norm()


def test_fedprox_local_problem_is_the_proximal_term_to_the_global_model() -> None:
    algorithm = FedProx(N, mu=0.7)
    state = algorithm.init(torch.ones(DIM, dtype=torch.float64))
    _, problem = algorithm.receive(state.nodes, algorithm.downlink(state.hub))
    assert torch.equal(problem.prox_center, torch.ones(N, DIM, dtype=torch.float64))
    assert problem.rho == 0.7 and problem.linear is None


def digits(*overrides: str) -> config.Config:
    return config.load(None, ["rounds=15", "eval_every=15", 'attacks=["none"]', *overrides])


def test_fedprox_with_mu_zero_is_fedavg_exactly() -> None:
    _, (fedprox, fedavg) = engine.run(
        digits('algorithms=["fedprox", "fedavg"]', "fedprox.mu=0.0", "rounds=5", "eval_every=1")
    )
    drop = {"algorithm", "wall_time", "eval_time"}
    assert [{k: v for k, v in row.items() if k not in drop} for row in fedprox.rows] == [
        {k: v for k, v in row.items() if k not in drop} for row in fedavg.rows
    ]


def test_fedprox_and_scaffold_reach_fedavg_accuracy_on_iid_digits() -> None:
    _, results = engine.run(digits('algorithms=["fedavg", "fedprox", "scaffold"]'))
    final = {result.algorithm: result.rows[-1]["test_accuracy"] for result in results}
    assert final["fedavg"] > 0.85
    assert final["fedprox"] >= final["fedavg"] - 0.02
    assert final["scaffold"] >= final["fedavg"] - 0.02


def test_robust_fedprox_and_scaffold_run_from_the_cli_under_attack(tmp_path) -> None:
    from typer.testing import CliRunner

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--quiet",
            "--out",
            str(out),
            "--set",
            "rounds=3",
            "--set",
            'algorithms=["fedprox+median", "scaffold+trimmed_mean", "scaffold"]',
            "--set",
            'attacks=["none", "sign_flip"]',
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = (out / "metrics.csv").read_text()
    for name in ("fedprox+median", "scaffold+trimmed_mean", "scaffold"):
        assert f"{name},sign_flip,message" in metrics


@pytest.mark.parametrize("attack", ["dissensus", "drift", "alie", "mimic"])
def test_receiver_aware_attacks_run_against_scaffold_at_every_target(attack):
    """SCAFFOLD's row is [model, control-variate change]: attacks that start from the server's
    point read the model part at the model and update targets and the whole row at the message."""
    setting = config.load(
        None,
        [
            "rounds=1",
            'algorithms=["scaffold", "scaffold+trimmed_mean"]',
            f'attacks=["{attack}"]',
            'attack.target=["message", "model", "update"]',
        ],
    )
    _, results = engine.run(setting)
    assert len(results) == 6 and all(result.status == "ok" for result in results)
