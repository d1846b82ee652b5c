"""The round step's attack strike: targets, per-row noise, honest rows untouched."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from attack_cases import CASES

from fedpdmm import attacks
from fedpdmm.algorithms import FedAvg, PDMMStar, RoundState
from fedpdmm.config import TARGETS
from fedpdmm.rounds import MessageRows, Target, corrupt, strike
from fedpdmm.seeding import generator

SEED = 0
ROUND = 3
N, DIM = 5, 4
BYZANTINE = torch.tensor([False, True, False, False, True])
ROWS = MessageRows(None, list(range(N)))


# ---------------------------------------------------------------------------------------------
# strike and corrupt on hand-made tensors
# ---------------------------------------------------------------------------------------------


def hand_made(algorithm_name: str) -> tuple[Any, Any, torch.Tensor, torch.Tensor]:
    """(algorithm, clients, start [N, D], trained [N, D]) with non-trivial client state."""
    gen = generator(11, "hand-made")
    start = torch.randn(N, DIM, generator=gen)
    trained = start + 0.1 * torch.randn(N, DIM, generator=gen)
    if algorithm_name == "fedavg":
        algorithm = FedAvg(num_clients=N)
        _, clients = algorithm.init(torch.zeros(DIM))
    else:
        algorithm = PDMMStar(num_clients=N, c=0.4, theta=1.0)
        _, clients = algorithm.init(torch.zeros(DIM))
        clients = clients._replace(z=torch.randn(N, DIM, generator=gen))
    clients = algorithm.finish(clients, trained)
    return algorithm, clients, start, trained


def transmit(attack, target: str, algorithm, clients, start, trained) -> torch.Tensor:
    hub = algorithm.init(torch.zeros(DIM)).hub
    state = RoundState(hub, clients)
    struck = strike(
        Target(target), attack, algorithm, state, start, trained, BYZANTINE, ROWS, SEED, ROUND
    )
    return struck.messages


def send(attack, target: str, algorithm_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(honest messages, messages with `attack` at `target`) for the hand-made round."""
    algorithm, clients, start, trained = hand_made(algorithm_name)
    honest = algorithm.encode(clients, trained)
    return honest, transmit(attack, target, algorithm, clients, start, trained)


@pytest.mark.parametrize("algorithm_name", ["fedavg", "pdmm"])
def test_sign_flip_at_message_negates_only_byzantine_messages(algorithm_name: str) -> None:
    honest, sent = send(attacks.get("sign_flip"), "message", algorithm_name)
    assert torch.equal(sent[~BYZANTINE], honest[~BYZANTINE])
    assert torch.equal(sent[BYZANTINE], -honest[BYZANTINE])


@pytest.mark.parametrize("algorithm_name", ["fedavg", "pdmm"])
def test_targets_model_update_message_do_what_the_engine_docstring_says(
    algorithm_name: str,
) -> None:
    """model: encode(-x); update: encode(start - (x - start)); message: -encode(x)."""
    algorithm, clients, start, trained = hand_made(algorithm_name)

    def encode(models):
        return algorithm.encode(clients, models)

    flip = attacks.get("sign_flip")
    byz = BYZANTINE.unsqueeze(1)
    expected = {
        "model": encode(torch.where(byz, -trained, trained)),
        "update": encode(torch.where(byz, start - (trained - start), trained)),
        "message": torch.where(byz, -encode(trained), encode(trained)),
    }
    for target, want in expected.items():
        got = transmit(flip, target, algorithm, clients, start, trained)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=f"target {target}")
    if algorithm_name == "pdmm":
        # z + 2c(-x) differs from -(z + 2c x): the target matters for PDMM.
        assert not torch.allclose(expected["model"], expected["message"])


def test_fedavg_model_and_message_targets_coincide() -> None:
    """For FedAvg the message is the model, so even random attacks give the same rows."""
    gaussian = attacks.get("gaussian", sigma=0.5)
    _, at_model = send(gaussian, "model", "fedavg")
    _, at_message = send(gaussian, "message", "fedavg")
    assert torch.equal(at_model, at_message)


@pytest.mark.parametrize("target", ["model", "update", "message"])
@pytest.mark.parametrize("algorithm_name", ["fedavg", "pdmm"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_attack_at_every_target_leaves_honest_messages_untouched(
    case, algorithm_name: str, target: str
) -> None:
    honest, sent = send(attacks.get(case.name, **case.params), target, algorithm_name)
    assert torch.equal(sent[~BYZANTINE], honest[~BYZANTINE])
    replays = attacks.get(case.name, **case.params).history > 0  # nothing to replay in one round
    if case.changes_byzantine and case.name != "label_flip" and not replays:
        assert not torch.equal(sent[BYZANTINE], honest[BYZANTINE])


def test_no_attack_and_target_none_send_the_encoded_models() -> None:
    algorithm, clients, start, trained = hand_made("pdmm")
    none = attacks.get("none")
    for target in ("none", "message", "model", "update"):
        sent = transmit(none, target, algorithm, clients, start, trained)
        torch.testing.assert_close(sent, algorithm.encode(clients, trained), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "name, params", [("gaussian", {"sigma": 1.0}), ("float_bit_flip", {"rate": 0.05})]
)
def test_per_client_attack_noise_is_the_same_for_all_clients_or_one(name: str, params) -> None:
    """A client alone (keys=[k]) draws from (seed, "attack", round, k), as it does among all."""
    attack = attacks.get(name, **params)
    rows = torch.randn(N, DIM, generator=generator(1, "rows"))
    together = corrupt(attack, rows, BYZANTINE, SEED, ROUND, ROWS.keys)
    alone = torch.ones(1, dtype=torch.bool)
    for k in BYZANTINE.nonzero().flatten().tolist():
        single = corrupt(attack, rows[k : k + 1], alone, SEED, ROUND, [k])
        assert torch.equal(single, together[k : k + 1])
        own = attack(rows[k : k + 1], alone, generator=generator(SEED, "attack", ROUND, k))
        assert torch.equal(own, together[k : k + 1])
    assert torch.equal(together[~BYZANTINE], rows[~BYZANTINE])
    next_round = corrupt(attack, rows, BYZANTINE, SEED, ROUND + 1, ROWS.keys)
    assert not torch.equal(next_round[BYZANTINE], together[BYZANTINE])


def test_omniscient_attack_on_a_server_draws_from_the_round_generator() -> None:
    """With a server every client's row reaches one receiver: FedAvg's votes are its messages."""
    attack = attacks.get("alie")
    algorithm, clients, start, trained = hand_made("fedavg")
    got = transmit(attack, "message", algorithm, clients, start, trained)
    want = attack(trained, BYZANTINE, generator=generator(SEED, "attack", ROUND))
    assert torch.equal(got, want)


def test_corrupt_without_byzantine_rows_returns_the_rows() -> None:
    rows = torch.randn(N, DIM, generator=generator(3, "rows"))
    got = corrupt(attacks.get("sign_flip"), rows, torch.zeros(N, dtype=torch.bool), 0, 1, ROWS.keys)
    assert torch.equal(got, rows)


def test_targets_are_the_config_targets_and_the_unattacked_pseudo_target() -> None:
    assert sorted(target.value for target in Target) == sorted([*TARGETS, "none", "data"])


def test_an_encoding_that_is_the_model_is_not_altered_in_place() -> None:
    """FedAvg sends its model itself: a message attack must not rewrite the client's model."""
    algorithm, clients, start, trained = hand_made("fedavg")
    before = trained.clone()
    transmit(attacks.get("sign_flip"), "message", algorithm, clients, start, trained)
    assert torch.equal(trained, before)
