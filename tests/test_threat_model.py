"""The threat model: what Byzantine nodes remember, what a rejected message does, what an
omniscient attacker sees and searches against, and the attacks on PDMM's consensus."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import networkx as nx
import pytest
import torch
from quadratics import all_prox, consensus_optimum, quadratics

from fedpdmm import attacks, config, engine, topology
from fedpdmm.algorithms import FedAvg, GraphPDMM, PDMMStar, RoundState, build_combine
from fedpdmm.algorithms.base import CombineContext
from fedpdmm.engine import LocalWork
from fedpdmm.evaluation import evaluate_round, is_broken
from fedpdmm.network import Network
from fedpdmm.rounds import MessageRows, Target, per_receiver, step, strike
from fedpdmm.seeding import generator
from fedpdmm.setup import build_setup

N, DIM, SEED = 5, 3, 0


def quadratic_setup(n: int, state: str = "honest", topology_name: str = "server"):
    """A real setup (for the seed, the attacker's memory settings and the network) whose data
    the quadratic work below never touches."""
    overrides = [f"data.num_clients={n}", f"attack.state={state}", "attack.num_byzantine=1"]
    if topology_name != "server":
        overrides.append(f"topology.name={topology_name}")
    return build_setup(config.load(None, overrides))


@dataclass
class QuadraticWork(LocalWork):
    """`LocalWork` whose local step is the exact prox of quadratics f_i (no data, no SGD)."""

    q: torch.Tensor | None = None
    a: torch.Tensor | None = None

    def train(self, algorithm, nodes, downlink, round_index: int, conditions=None):
        nodes, problem = algorithm.receive(nodes, downlink)
        center = (
            torch.zeros_like(problem.start) if problem.prox_center is None else problem.prox_center
        )
        trained = all_prox(self.q, self.a, center, problem.rho)
        return algorithm.finish(nodes, trained), problem.start, trained


def run_quadratic(algorithm, work: QuadraticWork, rounds: int) -> RoundState:
    state = algorithm.init(torch.zeros(DIM, dtype=torch.float64))
    for round_index in range(1, rounds + 1):
        state, _ = step(algorithm, state, work, round_index, seed=SEED)
    return state


def quadratic_work(setup, attack: str, byzantine: torch.Tensor, q, a, target=Target.MESSAGE):
    return QuadraticWork(
        setup, attacks.get(attack), target, byzantine, setup.data.clients, q=q, a=a
    )


# ---------------------------------------------------------------------------------------------
# attack.state: what a Byzantine node remembers
# ---------------------------------------------------------------------------------------------


def hand_written_star(q, a, c, theta, byzantine: int, rounds: int, honest_state: bool):
    """PDMM with a server, client by client, a Byzantine client that negates its message and,
    with `honest_state`, keeps a shadow of the server's dual of its edge built from its honest
    messages, receiving shadow - 2 c x_s instead of z_s[b] - 2 c x_s."""
    x0 = torch.zeros(DIM, dtype=torch.float64)
    z_server = [c * x0.clone() for _ in range(N)]
    z_client = [-c * x0.clone() for _ in range(N)]
    x_server = x0.clone()
    shadow = c * x0.clone()
    eye = torch.eye(DIM, dtype=torch.float64)
    for _ in range(rounds):
        sent = []
        for i in range(N):
            down = z_server[i] - 2 * c * x_server
            if i == byzantine and honest_state:
                down = down + (shadow - z_server[i])
            z_client[i] = (1 - theta) * z_client[i] + theta * down
            x_i = torch.linalg.solve(q[i] + c * eye, q[i] @ a[i] + c * (-z_client[i] / c))
            honest = z_client[i] + 2 * c * x_i
            if i == byzantine:
                shadow = torch.lerp(shadow, honest, theta)
                sent.append(-honest)
            else:
                sent.append(honest)
        z_server = [(1 - theta) * z + theta * m for z, m in zip(z_server, sent, strict=True)]
        x_server = torch.stack(z_server).mean(0) / c
    return x_server, torch.stack(z_client)


@pytest.mark.parametrize("theta", [1.0, 0.5])
@pytest.mark.parametrize("state", ["honest", "received"])
def test_attacker_state_with_a_server_equals_the_hand_written_loop(theta: float, state: str):
    q, a = quadratics(N, DIM, seed=1)
    setup = quadratic_setup(N, state)
    byzantine = torch.zeros(N, dtype=torch.bool)
    byzantine[2] = True
    algorithm = PDMMStar(N, c=0.7, theta=theta)
    got = run_quadratic(algorithm, quadratic_work(setup, "sign_flip", byzantine, q, a), 12)
    want_x, want_z = hand_written_star(q, a, 0.7, theta, 2, 12, state == "honest")
    torch.testing.assert_close(got.hub.x, want_x, rtol=0, atol=1e-10)
    torch.testing.assert_close(got.nodes.z, want_z, rtol=0, atol=1e-10)


def test_the_two_attacker_states_differ_for_pdmm_and_coincide_for_fedavg():
    q, a = quadratics(N, DIM, seed=2)
    byzantine = torch.tensor([False, False, True, False, False])
    final = {}
    for state in ("honest", "received"):
        setup = quadratic_setup(N, state)
        for algorithm in (PDMMStar(N, c=0.7, theta=1.0), FedAvg(N)):
            work = quadratic_work(setup, "sign_flip", byzantine, q, a)
            final[state, algorithm.name] = run_quadratic(algorithm, work, 8).hub.x
    assert not torch.allclose(final["honest", "pdmm"], final["received", "pdmm"])
    assert torch.equal(final["honest", "fedavg"], final["received", "fedavg"])


def hand_written_graph(graph, q, a, c, theta, byzantine: set[int], rounds: int):
    """Graph PDMM edge by edge; Byzantine nodes negate every message and keep, per edge, a shadow
    of the neighbour's dual built from their honest messages (the honest attacker state)."""
    n = graph.number_of_nodes()
    eye = torch.eye(DIM, dtype=torch.float64)
    sign = {(i, j): 1.0 if i < j else -1.0 for i, j in graph.to_directed().edges}
    z = {edge: torch.zeros(DIM, dtype=torch.float64) for edge in sign}  # z(i|j), x0 = 0
    shadow = {edge: torch.zeros(DIM, dtype=torch.float64) for edge in sign}  # of z(j|i)
    x = torch.zeros(n, DIM, dtype=torch.float64)
    for _ in range(rounds):
        for i in range(n):
            degree = graph.degree(i)
            center = -sum(sign[i, j] * z[i, j] for j in graph.neighbors(i)) / (c * degree)
            rho = c * degree
            x[i] = torch.linalg.solve(q[i] + rho * eye, q[i] @ a[i] + rho * center)
        honest = {(i, j): z[i, j] + 2 * c * sign[i, j] * x[i] for (i, j) in sign}
        sent = {(i, j): -m if i in byzantine else m for (i, j), m in honest.items()}
        new_z = {}
        for i, j in sign:  # z(j|i) from y(i|j); b removes the echo of its own corruption
            received = sent[i, j]
            if j in byzantine:
                received = received + (shadow[j, i] - z[i, j])
            new_z[j, i] = (1 - theta) * z[j, i] + theta * received
        for i, j in sign:
            if i in byzantine:
                shadow[i, j] = torch.lerp(shadow[i, j], honest[i, j], theta)
        z = new_z
    return x


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_honest_attacker_state_on_a_graph_equals_the_hand_written_loop(theta: float):
    n = 6
    q, a = quadratics(n, DIM, seed=3)
    graph = topology.build("ring", n, seed=0)
    setup = quadratic_setup(n, "honest", "ring")
    byzantine = torch.zeros(n, dtype=torch.bool)
    byzantine[[1, 4]] = True
    setup = setup.__class__(
        setup.config, setup.data, setup.network.with_byzantine(byzantine), setup.model, setup.x0
    )
    algorithm = GraphPDMM(topology.edge_index(graph), c=0.6, theta=theta)
    work = quadratic_work(setup, "sign_flip", byzantine, q, a)
    state = algorithm.init(torch.zeros(DIM, dtype=torch.float64))
    for round_index in range(1, 9):
        state, _ = step(algorithm, state, work, round_index, seed=SEED)
    # the engine's x after round t is the prox of round t's centres: compare one more x-update
    _, problem = algorithm.receive(state.nodes, None)
    got = all_prox(q, a, problem.prox_center, problem.rho)
    want = hand_written_graph(graph, q, a, 0.6, theta, {1, 4}, 9)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# A rejected message leaves the receiver's combination
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_pdmm_with_a_server_under_inf_reaches_the_optimum_of_the_honest_clients(theta: float):
    q, a = quadratics(N, DIM, seed=5)
    byzantine = torch.tensor([False, True, False, False, True])
    setup = quadratic_setup(N)
    work = quadratic_work(setup, "inf", byzantine, q, a)
    state = run_quadratic(PDMMStar(N, c=1.0, theta=theta), work, 400)
    honest = ~byzantine
    optimum = consensus_optimum(q[honest], a[honest])
    assert (state.hub.x - optimum).norm() < 1e-8 * optimum.norm()
    everyone = consensus_optimum(q, a)
    assert (everyone - optimum).norm() > 1e-2


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_graph_pdmm_under_inf_reaches_the_optimum_of_the_honest_nodes(theta: float):
    n = 7
    q, a = quadratics(n, DIM, seed=6)
    graph = nx.complete_graph(n)
    byzantine = torch.zeros(n, dtype=torch.bool)
    byzantine[[2, 5]] = True
    setup = quadratic_setup(n, "honest", "complete")
    setup = setup.__class__(
        setup.config, setup.data, setup.network.with_byzantine(byzantine), setup.model, setup.x0
    )
    work = quadratic_work(setup, "inf", byzantine, q, a)
    state = run_quadratic(GraphPDMM(topology.edge_index(graph), c=1.0, theta=theta), work, 600)
    honest = ~byzantine
    optimum = consensus_optimum(q[honest], a[honest])
    models = state.nodes.x[honest]
    assert (models - optimum).norm(dim=1).max() < 1e-8 * optimum.norm()


def test_a_closed_graph_edge_leaves_the_centre_and_the_degree():
    graph = nx.complete_graph(4)
    edges = topology.edge_index(graph)
    algorithm = GraphPDMM(edges, c=0.5, theta=1.0)
    state = algorithm.init(torch.ones(2, dtype=torch.float64))
    z = torch.randn(edges.num_directed_edges, 2, generator=generator(0, "z"), dtype=torch.float64)
    closed = torch.zeros(edges.num_directed_edges, dtype=torch.bool)
    closed[0] = True  # node 0's edge to node 1
    nodes = state.nodes._replace(z=z, open=~closed)
    _, problem = algorithm.receive(nodes, None)
    votes = -z * edges.sign.to(z.dtype).unsqueeze(1) / 0.5
    torch.testing.assert_close(problem.prox_center[0], votes[1:3].mean(0), rtol=0, atol=1e-14)
    assert float(problem.rho[0]) == 0.5 * 2 and float(problem.rho[1]) == 0.5 * 3


def test_robust_rules_lower_f_by_the_rejected_messages():
    """11 clients, bulyan(f=2) needs n >= 11: it still runs when 2 Byzantine rows are rejected."""
    cfg = config.load(
        None,
        [
            "data.num_clients=11",
            "rounds=2",
            'algorithms=["fedavg+bulyan", "pdmm+bulyan"]',
            'attacks=["inf"]',
        ],
    )
    _, results = engine.run(cfg)
    for result in results:
        assert result.status == "ok", result.algorithm
        assert result.rows[-1]["dropped_messages"] == 4
        assert math.isfinite(result.rows[-1]["test_accuracy"])


# ---------------------------------------------------------------------------------------------
# Omniscient attacks per receiver; optimal attacks against the real combination
# ---------------------------------------------------------------------------------------------


def test_omniscient_attacks_on_a_graph_use_each_receivers_rows():
    """IPM to receiver j is -epsilon times the mean of what j combines (its own model and its
    honest neighbours' votes), mapped back to a message: never the mean over all edges."""
    n = 6
    graph = topology.build("ring", n, seed=0)
    edges = topology.edge_index(graph)
    algorithm = GraphPDMM(edges, c=0.5, theta=1.0)
    gen = generator(1, "state")
    x = torch.randn(n, DIM, generator=gen, dtype=torch.float64)
    z = torch.randn(edges.num_directed_edges, DIM, generator=gen, dtype=torch.float64)
    state = RoundState(None, algorithm.init(torch.zeros(DIM, dtype=torch.float64)).nodes)
    state = state._replace(nodes=state.nodes._replace(x=x, z=z))
    byzantine_nodes = torch.tensor([False, True, False, False, False, False])
    rows = byzantine_nodes[edges.src]
    ipm = attacks.get("ipm", epsilon=0.5)
    message_rows = MessageRows(edges.src, [str(k) for k in range(len(edges.src))], edges.dst)
    struck = strike(Target.MESSAGE, ipm, algorithm, state, x, x, rows, message_rows, SEED, 1)
    votes = algorithm.votes(state, struck.honest)
    for row in rows.nonzero().flatten().tolist():
        receiver = int(edges.dst[row])
        into = (edges.dst == receiver).nonzero().flatten()
        honest_into = into[~rows[into]]
        seen = torch.cat([x[receiver : receiver + 1], votes[honest_into]])
        want_vote = -0.5 * seen.mean(0)
        got_vote = algorithm.votes(state, struck.messages)[row]
        torch.testing.assert_close(got_vote, want_vote, rtol=0, atol=1e-12)


def test_alie_z_counts_the_receivers_rows_and_byzantine_senders():
    values = torch.randn(6, 4, generator=generator(2, "values"), dtype=torch.float64)
    byzantine = torch.tensor([True, False, True, False, False, False])
    receivers = torch.tensor([0, 0, 0, 1, 1, 1])
    rows = MessageRows(torch.arange(6), list(range(6)), receivers)
    base = torch.zeros(2, 4, dtype=torch.float64)
    out = per_receiver(
        attacks.get("alie"),
        values,
        byzantine,
        rows,
        SEED,
        1,
        combine=lambda receiver, group, v: v.mean(0),
        base=lambda receiver: base[receiver],
        weights=lambda group: None,
    )
    seen = torch.cat([base[0:1], values[[1]]])  # receiver 0: its own model and row 1
    z = attacks.alie_z(4, 2)  # 3 rows into receiver 0 plus its own, 2 Byzantine
    torch.testing.assert_close(out[0], seen.mean(0) - z * seen.std(0), rtol=0, atol=1e-12)
    assert torch.equal(out[3:], values[3:])  # no Byzantine sender into receiver 1


def real_server_round(algorithm_name: str, theta: float = 1.0):
    """(algorithm, state, messages, honest messages, byzantine, context) after 2 digits rounds."""
    cfg = config.load(
        None,
        [
            "rounds=2",
            f"pdmm.theta={theta}",
            f'algorithms=["{algorithm_name}"]',
            'attacks=["none"]',
            "local.steps=2",
        ],
    )
    setup = build_setup(cfg)
    from fedpdmm.build import build_algorithm

    algorithm = build_algorithm(algorithm_name, cfg, setup.network, setup.data.clients.sizes)
    work = LocalWork(
        setup, attacks.get("none"), Target.NONE, setup.network.byzantine, setup.data.clients
    )
    state = algorithm.init(setup.x0)
    for round_index in (1, 2):
        state, _ = step(
            algorithm,
            state,
            work,
            round_index,
            seed=cfg.seed,
            reference=partial(engine.server_reference, setup),
        )
    nodes, _, trained = work.train(algorithm, state.nodes, algorithm.downlink(state.hub), 3)
    reference = engine.server_reference(setup, algorithm.models(state)[0], 3)
    context = CombineContext(generator(cfg.seed, "aggregate", 3), reference)
    return algorithm, state._replace(nodes=nodes), trained, setup.network.byzantine, context


@pytest.mark.parametrize(
    ("algorithm_name", "theta"),
    [("fedavg+fltrust", 1.0), ("fedavg+centered_clipping", 1.0), ("pdmm+trimmed_mean", 0.5)],
)
def test_optimal_alie_searches_the_combination_the_round_applies(algorithm_name, theta):
    algorithm, state, trained, byzantine, context = real_server_round(algorithm_name, theta)
    attack = attacks.get("optimal_alie", grid_points=9, refine_steps=4)
    rows = MessageRows(None, list(range(len(byzantine))))
    struck = strike(
        Target.MESSAGE,
        attack,
        algorithm,
        state,
        trained,
        trained,
        byzantine,
        rows,
        SEED,
        3,
        context=context,
    )
    honest_votes = algorithm.votes(state, struck.honest)
    honest_rows = honest_votes[~byzantine]
    mu, sigma = honest_rows.mean(0), honest_rows.std(0)

    def real_outcome(votes_stack):
        messages = struck.honest.clone()
        b = byzantine.nonzero().flatten()
        messages[b] = algorithm.from_votes(state, votes_stack[b], b)
        every = torch.ones(len(byzantine), dtype=torch.bool)
        fresh = context._replace(generator=generator(SEED, "aggregate", 3))
        return algorithm.combine(state, messages, every, fresh).hub.x

    unattacked = real_outcome(honest_votes)

    def moved(scale):
        stack = honest_votes.clone()
        stack[byzantine] = mu - scale * sigma
        return float((real_outcome(stack) - unattacked).norm())

    def real_combine(votes_stack):
        fresh = context._replace(generator=generator(SEED, "aggregate", 3))
        return algorithm.combine_at(state, 0, torch.arange(len(byzantine)), votes_stack, fresh)

    bound = attack.bind(attacks.StrikeContext(combine=real_combine))
    scale = bound.best_scale(honest_votes, byzantine)
    sent_votes = algorithm.votes(state, struck.messages)
    torch.testing.assert_close(
        sent_votes[byzantine], (mu - scale * sigma).expand(2, -1), rtol=1e-5, atol=1e-8
    )
    grid = [10.0 * k / 8 for k in range(9)]
    assert moved(scale) >= max(moved(s) for s in grid) - 1e-6
    # the attack's own objective is the real round's displacement
    for s in (0.0, 1.5, 4.0):
        assert bound.displacement(honest_votes, byzantine, s) == pytest.approx(moved(s), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Smaller points: PDMM's start, graph divergence, data attacks once
# ---------------------------------------------------------------------------------------------


def test_pdmm_starts_at_the_initial_model_with_a_server_and_on_a_graph():
    cfg = config.load(None, ["rounds=1", 'attacks=["none"]'])
    _, (pdmm, fedavg) = engine.run(cfg)
    assert pdmm.rows[0]["test_accuracy"] == fedavg.rows[0]["test_accuracy"]
    edges = topology.edge_index(nx.cycle_graph(5))
    x0 = torch.randn(4, generator=generator(0, "x0"), dtype=torch.float64)
    algorithm = GraphPDMM(edges, c=0.3, theta=0.5)
    _, problem = algorithm.receive(algorithm.init(x0).nodes, None)
    torch.testing.assert_close(problem.prox_center, x0.expand(5, -1), rtol=0, atol=1e-14)


def test_one_non_finite_honest_node_does_not_end_a_graph_run():
    cfg = config.load(None, ["topology.name=ring", "rounds=1", 'attacks=["none"]'])
    setup = build_setup(cfg)
    from fedpdmm.build import build_algorithm

    algorithm = build_algorithm("dsgd", cfg, setup.network)
    state = algorithm.init(setup.x0)
    models = state.nodes.x.clone()
    models[3] = float("nan")
    state = state._replace(nodes=state.nodes._replace(x=models))
    nobody = torch.zeros(cfg.data.num_clients, dtype=torch.bool)
    row = evaluate_round(setup, algorithm, state, nobody)
    assert math.isfinite(row["test_loss"]) and math.isfinite(row["honest_accuracy_min"])
    assert row["nonfinite_clients"] == 1
    assert not is_broken(algorithm, state, nobody)


def test_a_data_attack_runs_once_whatever_the_targets():
    cfg = config.load(
        None, ['attacks=["none", "label_flip"]', 'attack.target=["model", "message"]']
    )
    assert engine.combinations(cfg) == [
        ("pdmm", "none", "none"),
        ("pdmm", "label_flip", "data"),
        ("fedavg", "none", "none"),
        ("fedavg", "label_flip", "data"),
    ]


# ---------------------------------------------------------------------------------------------
# Attacks on the consensus mechanism
# ---------------------------------------------------------------------------------------------


def test_dissensus_cancels_the_gossip_step_of_its_receiver():
    """epsilon = 1: the receiver's Metropolis mix moves it by exactly nothing."""
    rows = torch.randn(4, 3, generator=generator(3, "rows"), dtype=torch.float64)
    weights = torch.tensor([0.2, 0.3, 0.1, 0.25], dtype=torch.float64)
    byzantine = torch.tensor([False, True, False, True])
    own = torch.randn(3, generator=generator(4, "own"), dtype=torch.float64)
    attack = attacks.get("dissensus", epsilon=1.0).bind(
        attacks.StrikeContext(base=own, weights=weights)
    )
    sent = attack(rows, byzantine, generator=generator(0, "g"))
    mixed = own * (1 - weights.sum()) + (weights.unsqueeze(1) * sent).sum(0)
    torch.testing.assert_close(mixed, own, rtol=0, atol=1e-12)


def test_dissensus_pushes_gossip_nodes_apart_on_a_random_geometric_graph():
    cfg = config.load(
        None,
        [
            'attacks=["none", "dissensus"]',
            "topology.name=random_geometric",
            "rounds=10",
            'algorithms=["dsgd"]',
        ],
    )
    _, (clean, attacked) = engine.run(cfg)
    clean_distance = clean.rows[-1]["consensus_distance"]
    attacked_distance = attacked.rows[-1]["consensus_distance"]
    assert attacked_distance > 3 * clean_distance


def test_drift_stays_within_one_std_and_leans_the_same_way_every_round():
    attack = attacks.get("drift", kappa=1.0, pattern_seed=5)
    byzantine = torch.tensor([True, False, False, False, True])
    signs = []
    for round_index in range(3):
        rows = torch.randn(5, 6, generator=generator(round_index, "rows"), dtype=torch.float64)
        sent = attack(rows, byzantine, generator=generator(0, "g"))
        honest = rows[~byzantine]
        offset = (sent[0] - honest.mean(0)) / honest.std(0)
        torch.testing.assert_close(offset.abs(), torch.ones(6, dtype=torch.float64))
        signs.append(torch.sign(offset))
    assert all(torch.equal(signs[0], other) for other in signs[1:])


def test_replay_resends_the_byzantine_nodes_own_row_of_lag_rounds_ago():
    q, a = quadratics(N, DIM, seed=7)
    byzantine = torch.tensor([False, False, False, True, False])
    setup = quadratic_setup(N)
    algorithm = PDMMStar(N, c=0.5, theta=1.0)
    work = QuadraticWork(
        setup,
        attacks.get("replay", lag=2),
        Target.MESSAGE,
        byzantine,
        setup.data.clients,
        q=q,
        a=a,
    )
    honest, sent = [], []
    original_send = work.send

    def recording_send(*args, **kwargs):
        struck = original_send(*args, **kwargs)
        honest.append(struck.honest_rows[0].clone())  # client 3, the one Byzantine row
        sent.append(struck.messages[3].clone())
        return struck

    work.send = recording_send
    run_quadratic(algorithm, work, 5)
    assert torch.equal(sent[0], honest[0]) and torch.equal(sent[1], honest[0])
    for t in range(2, 5):
        assert torch.equal(sent[t], honest[t - 2])


@pytest.mark.parametrize("name", ["dissensus", "drift", "replay"])
@pytest.mark.parametrize("topology_name", ["server", "ring"])
@pytest.mark.parametrize("state", ["honest", "received"])
def test_consensus_attacks_run_with_a_server_and_on_graphs_under_both_states(
    name, topology_name, state
):
    cfg = config.load(
        None,
        [
            f'attacks=["{name}"]',
            f"topology.name={topology_name}",
            f"attack.state={state}",
            "rounds=2",
            "local.steps=2",
        ],
    )
    _, results = engine.run(cfg)
    for result in results:
        assert result.status == "ok"
        assert math.isfinite(result.rows[-1]["test_accuracy"])


def test_network_receivers_are_the_graphs_destinations():
    cfg = config.load(None, ["topology.name=ring"])
    setup = build_setup(cfg)
    rows = engine.message_rows(setup.network)
    assert torch.equal(rows.receivers, setup.network.edges.dst)
    assert engine.message_rows(Network(3, torch.zeros(3, dtype=torch.bool))).receivers is None
    assert build_combine([], "mean", [], {}, 0).is_plain_mean


def test_dissensus_at_the_update_target_cancels_fedavgs_step_with_sample_weights():
    """Update space: the server's own point is a zero update; its weights are the sample
    counts, so epsilon = 1 leaves the global model where it was."""
    cfg = config.load(
        None,
        [
            "rounds=1",
            'algorithms=["fedavg"]',
            'attacks=["dissensus"]',
            "attack.params.dissensus.epsilon=1.0",
            "fedavg.weighting=samples",
            "data.partition=dirichlet",
            "attack.num_byzantine=3",
        ],
    )
    setup = build_setup(cfg)
    from fedpdmm.build import build_algorithm

    algorithm = build_algorithm("fedavg", cfg, setup.network, setup.data.clients.sizes)
    for target in (Target.UPDATE, Target.MODEL):
        work = LocalWork(
            setup,
            attacks.get("dissensus", epsilon=1.0),
            target,
            setup.network.byzantine,
            setup.data.clients,
        )
        state = algorithm.init(setup.x0)
        new, _ = step(algorithm, state, work, 1, seed=cfg.seed)
        torch.testing.assert_close(new.hub.x, state.hub.x, rtol=0, atol=1e-5)


def test_mimic_on_a_graph_copies_a_neighbour_never_the_receivers_own_model():
    n = 6
    graph = topology.build("ring", n, seed=0)
    edges = topology.edge_index(graph)
    algorithm = GraphPDMM(edges, c=0.5, theta=1.0)
    x = torch.randn(n, DIM, generator=generator(5, "x"), dtype=torch.float64)
    state = algorithm.init(torch.zeros(DIM, dtype=torch.float64))
    state = state._replace(nodes=state.nodes._replace(x=x))
    rows = torch.tensor([False, True, False, False, False, False])[edges.src]
    message_rows = MessageRows(edges.src, list(range(len(edges.src))), edges.dst)
    struck = strike(
        Target.MODEL, attacks.get("mimic"), algorithm, state, x, x, rows, message_rows, SEED, 1
    )
    for row in rows.nonzero().flatten().tolist():
        receiver = int(edges.dst[row])
        into = (edges.dst == receiver).nonzero().flatten()
        honest_senders = [int(edges.src[r]) for r in into if not rows[r]]

        def sent_as(node: int, row: int = row) -> torch.Tensor:
            """The message on `row` had its sender's model been node's."""
            return algorithm.encode(state.nodes, x[torch.full_like(edges.src, node)])[row]

        assert any(torch.equal(struck.messages[row], sent_as(s)) for s in honest_senders)
        assert not torch.equal(struck.messages[row], sent_as(receiver))


def test_colluding_byzantine_neighbours_keep_each_others_state_honest():
    n = 6
    q, a = quadratics(n, DIM, seed=8)
    byzantine = torch.zeros(n, dtype=torch.bool)
    byzantine[[0, 1]] = True  # adjacent on the ring
    setup = quadratic_setup(n, "honest", "ring")
    setup = setup.__class__(
        setup.config, setup.data, setup.network.with_byzantine(byzantine), setup.model, setup.x0
    )
    edges = setup.network.edges
    algorithm = GraphPDMM(edges, c=0.6, theta=1.0)
    work = quadratic_work(setup, "sign_flip", byzantine, q, a)
    state = algorithm.init(torch.zeros(DIM, dtype=torch.float64))
    for round_index in range(1, 6):
        state, _ = step(algorithm, state, work, round_index, seed=SEED)
    rows = byzantine[edges.src]
    colluding = (rows & byzantine[edges.dst])[rows]
    actual = algorithm.echo(state, rows.nonzero().flatten())
    gap = (work.memory.shadow - actual).norm(dim=1)
    assert bool((gap[colluding] < 1e-9).all()) and bool((gap[~colluding] > 1e-3).all())
