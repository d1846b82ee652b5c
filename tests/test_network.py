"""Unreliable networks (`[network]`, `fedpdmm.channel`): the draws, what each algorithm does with
a message that did not arrive, exactness of PDMM under loss and participation on quadratics,
FedAvg's estimator under sampling, and whole runs."""

from __future__ import annotations

import pytest
import torch
from quadratics import all_prox, consensus_optimum, quadratics

from fedpdmm import aggregators, topology
from fedpdmm.aggregators.robust import fit_to_rows
from fedpdmm.algorithms import FedAvg, PDMMStar
from fedpdmm.algorithms.base import CombineContext
from fedpdmm.algorithms.graph_pdmm import GraphPDMM
from fedpdmm.algorithms.scaffold import Scaffold
from fedpdmm.build import build_algorithm, build_attack
from fedpdmm.channel import Channel
from fedpdmm.config import load
from fedpdmm.engine import LocalWork, Target, keep_rows, run
from fedpdmm.errors import ConfigError
from fedpdmm.rounds import Replies, step
from fedpdmm.setup import build_setup


def channel(n: int, *, loss=0.0, participation=1.0, stragglers=0.0, mode="partial", edges=None):
    senders = torch.arange(n) if edges is None else edges.src
    receivers = None if edges is None else edges.dst
    return Channel(loss, participation, stragglers, mode, 0.5, 4, senders, receivers, seed=3)


class QuadraticWork:
    """The node half with exact proxes of the quadratics; offline nodes keep their state."""

    def __init__(self, q: torch.Tensor, a: torch.Tensor) -> None:
        self.q, self.a = q, a

    def begin(self, algorithm, state, round_index):
        return state

    def counters(self):
        return {}

    def __call__(self, algorithm, state, downlink, round_index, evaluate, context, conditions=None):
        received, problem = algorithm.receive(state.nodes, downlink)
        trained = all_prox(self.q, self.a, problem.prox_center, problem.rho)
        nodes = algorithm.finish(received, trained)
        if conditions is not None:
            nodes = keep_rows(state.nodes, nodes, conditions.working)
            trained = nodes.x
        return Replies(nodes, algorithm.encode_nodes(nodes, trained), None, 0)


N, DIM = 8, 3


def pdmm_error(setting: str, theta: float, rounds: int, **conditions) -> float:
    """max |x_i - x*| over the nodes after `rounds` of exact-prox PDMM over a lossy channel."""
    q, a = quadratics(N, DIM, seed=0)
    if setting == "server":
        algorithm, edges = PDMMStar(N, c=1.0, theta=theta), None
    else:
        params = {"radius": 0.6} if setting == "random_geometric" else {}
        edges = topology.edge_index(topology.build(setting, N, seed=0, **params))
        algorithm = GraphPDMM(edges, c=1.0, theta=theta)
    network = channel(N, edges=edges, **conditions)
    state = algorithm.init(torch.zeros(DIM, dtype=torch.float64))
    work = QuadraticWork(q, a)
    for round_index in range(1, rounds + 1):
        state, _ = step(algorithm, state, work, round_index, seed=0, channel=network)
    return float((algorithm.models(state)[1] - consensus_optimum(q, a)).abs().max())


SETTINGS = ("server", "ring", "random_geometric")


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize(
    ("conditions", "rounds"),
    [({"loss": 0.3}, 400), ({"participation": 0.5}, 1000)],
    ids=["loss-0.3", "participation-0.5"],
)
def test_averaged_pdmm_reaches_the_exact_optimum(setting, conditions, rounds):
    """Bastianello et al.: relaxed PDMM (theta = 1/2) under i.i.d. loss or random activation is a
    randomized coordinate update of an averaged operator and converges to the optimum."""
    assert pdmm_error(setting, 0.5, rounds, **conditions) < 1e-8


@pytest.mark.parametrize("setting", SETTINGS)
def test_pdmm_theta_one_under_the_same_loss(setting):
    """What theta = 1 does under loss 0.3: on these strongly convex quadratics it converges too
    (the averaging is what the theory needs, not what these problems need)."""
    assert pdmm_error(setting, 1.0, 400, loss=0.3) < 1e-8


def test_without_loss_the_channel_changes_nothing():
    """A reliable channel (no loss, full participation) gives the reliable run bit for bit."""
    q, a = quadratics(N, DIM, seed=0)
    algorithm = PDMMStar(N, c=1.0, theta=0.5)
    work = QuadraticWork(q, a)
    plain = lossless = algorithm.init(torch.zeros(DIM, dtype=torch.float64))
    for round_index in range(1, 6):
        plain, _ = step(algorithm, plain, work, round_index, seed=0)
        lossless, _ = step(algorithm, lossless, work, round_index, seed=0, channel=channel(N))
    assert torch.equal(plain.hub.x, lossless.hub.x)
    assert torch.equal(plain.nodes.z, lossless.nodes.z)


# ---------------------------------------------------------------------------------------------
# the draws
# ---------------------------------------------------------------------------------------------


def test_draws_depend_only_on_the_seed_and_round_and_match_their_rates():
    first = [channel(200, loss=0.3, participation=0.5).draw(r) for r in range(1, 41)]
    again = [channel(200, loss=0.3, participation=0.5).draw(r) for r in range(1, 41)]
    assert all(torch.equal(x.arrived, y.arrived) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0].arrived, first[1].arrived)
    working = torch.stack([c.working for c in first]).double().mean()
    arrived = torch.stack([c.arrived for c in first]).double().mean()
    assert working == pytest.approx(0.5 * 0.7, abs=0.02)  # online, and the downlink arrived
    assert arrived == pytest.approx(0.5 * 0.7 * 0.7, abs=0.02)
    assert not bool((torch.stack([c.arrived & ~c.working for c in first])).any())


def test_graph_messages_need_both_ends_online():
    edges = topology.edge_index(topology.build("ring", 10, seed=0))
    for r in range(1, 20):
        draw = channel(10, participation=0.5, edges=edges).draw(r)
        both = draw.working[edges.src] & draw.working[edges.dst]
        assert torch.equal(draw.arrived, both)


def test_partial_stragglers_run_fewer_steps():
    draw = channel(10, stragglers=0.3).draw(1)
    assert int((draw.steps == 2).sum()) == 3 and int((draw.steps == 4).sum()) == 7
    assert bool(draw.working.all()) and bool(draw.arrived.all())


def test_a_delayed_message_arrives_one_round_late_and_its_sender_skips_a_round():
    network = channel(10, stragglers=0.2, mode="delay")
    first = network.draw(1)
    late = first.withheld
    assert int(late.sum()) == 2 and not bool(first.arrived[late].any())
    sent_first = torch.arange(10.0).unsqueeze(1).repeat(1, 2)
    network.deliver(sent_first, first)
    second = network.draw(2)
    assert torch.equal(second.busy, late) and not bool(second.working[late].any())
    received = network.deliver(sent_first + 100, second)
    assert torch.equal(received[late], sent_first[late])  # last round's messages
    fresh = second.arrived & ~late
    assert torch.equal(received[fresh], sent_first[fresh] + 100)


# ---------------------------------------------------------------------------------------------
# what a receiver does with a message that did not arrive
# ---------------------------------------------------------------------------------------------


def test_pdmm_keeps_the_dual_of_a_lost_message_and_closes_a_rejected_one():
    algorithm = PDMMStar(4, c=0.5, theta=0.5)
    state = algorithm.init(torch.zeros(2, dtype=torch.float64))
    z = torch.arange(8.0, dtype=torch.float64).reshape(4, 2)
    state = state._replace(hub=state.hub._replace(z=z))
    messages = torch.ones(4, 2, dtype=torch.float64)
    accepted = torch.tensor([True, True, False, False])
    lost = torch.tensor([False, False, True, False])  # row 2 lost, row 3 rejected
    new = algorithm.combine(state, messages, accepted, CombineContext(lost=lost))
    assert new.hub.open.tolist() == [True, True, True, False]
    assert torch.equal(new.hub.z[2], z[2])  # kept, and still in the mean
    expected = torch.stack([torch.lerp(z[0], messages[0], 0.5), torch.lerp(z[1], messages[1], 0.5)])
    assert torch.allclose(new.hub.x, torch.cat([expected, z[2:3]]).mean(0) / 0.5)


def test_fedavg_under_participation_is_the_sampled_clients_weighted_mean():
    """x <- sum_S w_i y_i / sum_S w_i over the clients whose messages arrived."""
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    algorithm = FedAvg(5, weights=weights)
    state = algorithm.init(torch.zeros(3, dtype=torch.float64))
    messages = torch.randn(5, 3, dtype=torch.float64)
    arrived = torch.tensor([True, False, True, False, True])
    new = algorithm.combine(state, messages, arrived, CombineContext(lost=~arrived))
    expected = (weights[arrived].double() @ messages[arrived]) / weights[arrived].sum()
    assert torch.allclose(new.hub.x, expected)
    nothing = torch.zeros(5, dtype=torch.bool)
    assert torch.equal(algorithm.combine(state, messages, nothing).hub.x, state.hub.x)


def test_scaffold_divides_by_the_steps_a_straggler_ran():
    algorithm = Scaffold(2, steps=4, lr=0.5)
    _, nodes = algorithm.init(torch.zeros(1, dtype=torch.float64))
    trained = torch.tensor([[-4.0], [-4.0]], dtype=torch.float64)
    finished = algorithm.finish(nodes, trained, steps=torch.tensor([4, 2]))
    assert finished.c.flatten().tolist() == [2.0, 4.0]  # (x - y) / (K_i lr)


def test_a_robust_rule_keeps_its_f_for_rows_that_did_not_arrive():
    rule = aggregators.TrimmedMean(f=2)
    fitted, _ = fit_to_rows(rule, [], 10)
    assert fitted.f == 2  # enough rows: f is kept
    fitted, _ = fit_to_rows(rule, [], 4)
    assert fitted.f == 1  # only as far down as 4 rows require (n > 2f)


def test_an_omniscient_attack_computes_against_the_rows_that_arrive():
    """Over a lossy network the attack at each receiver is the attack on the arrived rows
    alone; a Byzantine row that does not arrive is left honest."""
    from fedpdmm import attacks
    from fedpdmm.seeding import generator
    from fedpdmm.strike import MessageRows, per_receiver

    values = torch.randn(8, 3, generator=generator(2, "values"), dtype=torch.float64)
    byzantine = torch.tensor([True, True, False, False, False, False, False, False])
    arrived = torch.tensor([True, False, True, False, True, True, False, True])
    alie = attacks.get("alie")

    def attacked(vals, byz, keys, mask=None):
        return per_receiver(
            alie,
            vals,
            byz,
            MessageRows(None, keys),
            5,
            1,
            combine=lambda receiver, group, v: v.mean(0),
            base=lambda receiver: torch.zeros(3, dtype=torch.float64),
            weights=lambda group: None,
            arrived=mask,
        )

    out = attacked(values, byzantine, list(range(8)), arrived)
    alone = attacked(values[arrived], byzantine[arrived], list(range(5)))
    torch.testing.assert_close(out[arrived], alone, rtol=0, atol=0)
    assert torch.equal(out[1], values[1])  # lost Byzantine row: never combined, kept honest
    seen = values[arrived & ~byzantine]
    z = attacks.alie_z(5, 1)
    torch.testing.assert_close(out[0], seen.mean(0) - z * seen.std(0), rtol=0, atol=1e-12)
    everything = attacked(values, byzantine, list(range(8)))
    assert not torch.allclose(everything[0], out[0])  # calibrated on all rows it would differ


def test_the_engine_attacker_knows_the_round_draw():
    """IPM in a lossy FedAvg round: each arriving Byzantine message is -epsilon times the mean
    of the honest messages that arrive this round, not of all honest messages."""
    from fedpdmm import attacks

    config = load(
        None,
        [
            "data.num_clients=8",
            "attack.num_byzantine=2",
            'attack.target="message"',
            "network.loss=0.4",
        ],
    )
    setup = build_setup(config)
    algorithm = build_algorithm("fedavg", config, setup.network, setup.data.clients.sizes)
    network = Channel.from_config(config, setup.network)
    ipm = attacks.get("ipm", epsilon=0.5)
    work = LocalWork(setup, ipm, Target.MESSAGE, setup.network.byzantine, setup.data.clients)
    state = algorithm.init(setup.x0)
    for round_index in range(1, 6):
        draw = network.draw(round_index)
        replies = work(
            algorithm,
            state,
            algorithm.downlink(state.hub),
            round_index,
            False,
            CombineContext(),
            draw,
        )
        honest = draw.arrived & ~setup.network.byzantine
        struck = draw.arrived & setup.network.byzantine
        if bool(struck.any()) and bool(honest.any()):
            break
        state, _ = step(algorithm, state, work, round_index, seed=0, channel=network)
    else:
        pytest.fail("no round with an arriving Byzantine and honest message")
    epsilon = ipm.epsilon
    want = -epsilon * replies.messages[honest].mean(0)
    for row in struck.nonzero().flatten().tolist():
        torch.testing.assert_close(replies.messages[row], want, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# whole runs
# ---------------------------------------------------------------------------------------------


def network_config(**network):
    overrides = [f"network.{key}={value!r}" for key, value in network.items()]
    return load(
        None,
        [
            "data.num_clients=8",
            "rounds=4",
            "eval_every=2",
            'algorithms=["pdmm", "fedavg", "scaffold"]',
            'attacks=["none", "sign_flip"]',
            "eval.node_samples=100",
            "eval.train_samples=100",
            *[o.replace("'", '"') for o in overrides],
        ],
    )


def test_runs_count_lost_messages_and_active_nodes_and_repeat_exactly():
    config = network_config(loss=0.3, participation=0.5, stragglers=0.25)
    _, results = run(config)
    _, again = run(config)
    for result, repeat in zip(results, again, strict=True):
        assert result.status == "ok"
        last = result.rows[-1]
        assert last["lost_messages"] > 0 and 0 < last["active_nodes"] <= 8
        assert last["samples"] < 4 * 8 * config.local.steps * config.local.batch_size
        assert [row["test_accuracy"] for row in result.rows] == [
            row["test_accuracy"] for row in repeat.rows
        ]


def test_offline_clients_keep_their_state_in_the_engine():
    """With participation, a client that did not work keeps its model and duals."""
    config = network_config(participation=0.5)
    setup = build_setup(config)
    algorithm = build_algorithm("pdmm", config, setup.network, setup.data.clients.sizes)
    network = Channel.from_config(config, setup.network)
    attack = build_attack("none", config, None)
    nobody = torch.zeros(8, dtype=torch.bool)
    work = LocalWork(setup, attack, Target.NONE, nobody, setup.data.clients)
    state = algorithm.init(setup.x0)
    state, _ = step(algorithm, state, work, 1, seed=0)
    draw = Channel.from_config(config, setup.network).draw(2)
    new, _ = step(algorithm, state, work, 2, seed=0, channel=network)
    offline = ~draw.working
    assert bool(offline.any()) and bool(draw.working.any())
    assert torch.equal(new.nodes.x[offline], state.nodes.x[offline])
    assert torch.equal(new.nodes.z[offline], state.nodes.z[offline])
    assert not torch.equal(new.nodes.x[draw.working], state.nodes.x[draw.working])


@pytest.mark.parametrize(
    "assignment",
    [
        "network.loss=1.5",
        "network.loss=-0.1",
        "network.participation=0",
        "network.stragglers=2",
        'network.straggler_mode="sometimes"',
        "network.straggler_work=1",
        'network.loss="half"',
        "network.jitter=0.1",
    ],
)
def test_bad_network_settings_name_the_key(assignment):
    with pytest.raises(ConfigError, match="network"):
        load(None, [assignment])


def test_the_network_reproduction_grid_and_its_report(tmp_path):
    """The grid holds every algorithm, loss and participation value of the issue; its report
    tabulates final accuracy and rounds to target for a (tiny, digits) sweep of it."""
    from fedpdmm import reproduce, sweep
    from fedpdmm.reproduce.network import LOSSES, PARTICIPATIONS

    experiments = {e.name: e for e in reproduce.network_experiments(quick=False)}
    assert set(experiments) == {
        "server-loss",
        "server-participation",
        "graph-loss",
        "graph-participation",
    }
    server = reproduce.build_config(experiments["server-loss"])
    graph = reproduce.build_config(experiments["graph-participation"])
    assert server.algorithms == ["pdmm", "fedavg", "fedprox", "scaffold"]
    assert graph.algorithms == ["pdmm", "dsgd"] and graph.decentralized
    assert server.attacks == graph.attacks == ["none", "dissensus"]
    assert experiments["server-loss"].grid == {"network.loss": list(LOSSES)}
    assert experiments["graph-participation"].grid == {
        "network.participation": list(PARTICIPATIONS)
    }
    assert experiments["server-loss"].seeds == 3

    tiny = reproduce.Experiment("server-loss", "tiny", "mnist_network", {})
    base = load(None, ["rounds=2", "eval_every=1", 'algorithms=["pdmm", "fedavg"]'])
    plan = sweep.plan(base, {"network.loss": [0.0, 0.5]}, seeds=1)
    sweep.run_sweep(plan, tmp_path / "server-loss", workers=1, reuse=False)
    written, tables = reproduce.write_network_report([tiny], tmp_path)
    (_title, rows), *_ = tables
    assert len(rows) == 2 * 2 * 2  # algorithms x attacks x loss values
    assert {row[2] for row in rows} == {"loss = 0.0", "loss = 0.5"}
    assert all(row[4] == "not reached" or row[4].isdigit() for row in rows)
    assert "rounds to target" in (written / "report.md").read_text()
