"""Specification of `fedpdmm.attacks`: one contract suite over the case table, then the formulas."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest
import torch
from attack_cases import CASES, AttackCase, coordinate_median

from fedpdmm import attacks
from fedpdmm.attacks.omniscient import (
    min_max_gamma,
    min_sum_gamma,
    perturbation_vector,
    squared_distances,
)
from fedpdmm.attacks.optimal import line_search_max
from fedpdmm.errors import ConfigError, DataError
from fedpdmm.seeding import generator

BYZANTINE = torch.tensor([True, False, False, True, False, False, False])
INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64}


def sample_messages(dtype: torch.dtype, n: int = 7, d: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=generator(seed, "messages"), dtype=torch.float64).to(dtype)


def bits(x: torch.Tensor) -> torch.Tensor:
    """Exact bit patterns, so that NaN payloads and signed zeros compare too."""
    return x.contiguous().view(INT_VIEW[x.dtype])


def build(case: AttackCase) -> attacks.Attack:
    """The case's attack; those that read the receiver or their past rows get a fixed context
    (receiver model 0, rows 7 x 5, past rows of 3), as a round's strike would give them."""
    attack = attacks.get(case.name, **case.params)
    if attack.needs_receiver or attack.history:
        past = torch.full((1, 5), 3.0)
        attack = attack.bind(attacks.StrikeContext(base=torch.zeros(5), past=past))
    return attack


def run(attack: attacks.Attack, messages: torch.Tensor, mask: torch.Tensor = BYZANTINE, seed=1):
    return attack(messages, mask, generator=generator(seed, "attack"))


# The contract, for every registered attack.


def test_every_registered_name_has_a_case():
    assert sorted(case.name for case in CASES) == attacks.names()


def test_names_are_the_registry_plus_aliases():
    assert set(attacks.names(include_aliases=False)) == set(attacks.REGISTRY)
    assert "bit_flip" in attacks.names() and "bit_flip" not in attacks.REGISTRY


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_only_byzantine_rows_change_and_input_is_kept(case: AttackCase, dtype: torch.dtype):
    messages = sample_messages(dtype)
    before = messages.clone()
    attacked = run(build(case), messages)

    assert attacked.shape == messages.shape and attacked.dtype == dtype
    assert torch.equal(bits(messages), bits(before)), "input mutated"
    assert attacked.data_ptr() != messages.data_ptr()
    assert torch.equal(bits(attacked[~BYZANTINE]), bits(messages[~BYZANTINE]))
    changed = (bits(attacked[BYZANTINE]) != bits(messages[BYZANTINE])).any(dim=1)
    assert bool(changed.all()) if case.changes_byzantine else not bool(changed.any())


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_same_seed_same_output_and_global_rng_untouched(case: AttackCase):
    messages = sample_messages(torch.float64)
    attack = build(case)
    global_state = torch.get_rng_state()
    first, again = run(attack, messages, seed=3), run(attack, messages, seed=3)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(bits(first), bits(again))
    other = run(attack, messages, seed=4)
    assert torch.equal(bits(first), bits(other)) != case.uses_randomness


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_no_byzantine_row_gives_an_unchanged_copy(case: AttackCase):
    messages = sample_messages(torch.float32)
    attacked = run(build(case), messages, torch.zeros(7, dtype=torch.bool))
    assert torch.equal(bits(attacked), bits(messages))
    assert attacked.data_ptr() != messages.data_ptr()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_built_attack_is_a_frozen_picklable_dataclass(case: AttackCase):
    attack = build(case)
    assert dataclasses.is_dataclass(attack)
    assert attack.name in attacks.names()
    assert set(case.params) <= set(attack.params)
    assert isinstance(attack.omniscient, bool) and isinstance(attack.data_attack, bool)
    with pytest.raises(dataclasses.FrozenInstanceError):
        attack.extra = 1  # type: ignore[attr-defined]
    copy = pickle.loads(pickle.dumps(attack))
    assert copy == attack
    messages = sample_messages(torch.float64)
    assert torch.equal(bits(run(copy, messages)), bits(run(attack, messages)))


@pytest.mark.parametrize(
    ("case", "params", "expected"),
    [(case, params, expected) for case in CASES for params, expected in case.invalid],
    ids=lambda value: value.name if isinstance(value, AttackCase) else "",
)
def test_invalid_params_raise_config_error_naming_attack_and_params(case, params, expected):
    with pytest.raises(ConfigError) as error:
        attacks.get(case.name, **params)
    message = str(error.value)
    assert expected in message
    assert f"attack {attacks.get(case.name, **case.params).name!r}" in message
    assert "valid parameters:" in message and "\n" not in message


def test_unknown_attack_lists_valid_names():
    with pytest.raises(
        ConfigError, match=r"unknown attack 'sign_flp'; valid names: none, sign_flip, "
    ):
        attacks.get("sign_flp")


def test_omniscient_and_data_flags():
    built = {name: build(case) for case in CASES for name in [case.name]}
    omniscient = {name for name, attack in built.items() if attack.omniscient}
    expected = {"mimic", "alie", "ipm", "min_max", "min_sum", "optimal_alie", "optimal_ipm"}
    expected |= {"dissensus", "drift"}
    assert omniscient == expected
    assert {name for name, attack in built.items() if attack.data_attack} == {"label_flip"}
    assert attacks.get("bit_flip") == attacks.get("sign_flip")


@pytest.mark.parametrize(
    ("messages", "mask", "expected"),
    [
        (torch.zeros(7), BYZANTINE, "messages must be a floating [n, d] tensor, got (7,)"),
        (torch.zeros(7, 2, dtype=torch.int64), BYZANTINE, "of dtype torch.int64"),
        (torch.zeros(7, 2), BYZANTINE.to(torch.int64), "byzantine must be a bool tensor"),
        (torch.zeros(6, 2), BYZANTINE, "byzantine must be a bool tensor of shape (6,), got (7,)"),
    ],
)
def test_malformed_inputs_raise_value_error(messages, mask, expected):
    with pytest.raises(ValueError) as error:
        attacks.get("zero")(messages, mask, generator=generator(0))
    assert expected in str(error.value)


# Basic attacks: exact outputs.


def test_sign_flip_scales_and_negates():
    messages = sample_messages(torch.float64)
    attacked = run(attacks.get("bit_flip", scale=3), messages)
    assert torch.equal(attacked[BYZANTINE], -3.0 * messages[BYZANTINE])


def test_zero_inf_and_constant_values():
    messages = sample_messages(torch.float32)
    assert bool((run(attacks.get("zero"), messages)[BYZANTINE] == 0).all())
    assert bool(torch.isposinf(run(attacks.get("inf"), messages)[BYZANTINE]).all())
    huge = run(attacks.get("inf", value=-1e20), messages)[BYZANTINE]
    assert bool((huge == torch.tensor(-1e20, dtype=torch.float32)).all())
    assert bool(run(attacks.get("inf", value=float("nan")), messages)[BYZANTINE].isnan().all())


@pytest.mark.parametrize("mode", ["add", "replace"])
def test_gaussian_noise_has_the_asked_scale(mode: str):
    messages = sample_messages(torch.float64, n=4, d=20_000)
    mask = torch.tensor([True, False, True, False])
    noise = run(attacks.get("gaussian", sigma=0.3, mode=mode), messages, mask)[mask]
    if mode == "add":
        noise = noise - messages[mask]
    assert abs(float(noise.mean())) < 0.01
    assert float(noise.std()) == pytest.approx(0.3, rel=0.02)
    assert not torch.equal(noise[0], noise[1])


def test_gaussian_default_is_the_documented_small_additive_noise():
    assert attacks.get("gaussian").params == {"sigma": 0.1, "mode": "add"}


def test_mimic_copies_the_first_honest_node_or_the_target():
    messages = sample_messages(torch.float64)
    assert bool((run(attacks.get("mimic"), messages)[BYZANTINE] == messages[1]).all())
    assert bool((run(attacks.get("mimic", target=5), messages)[BYZANTINE] == messages[5]).all())


@pytest.mark.parametrize(
    ("target", "mask", "expected"),
    [
        (3, BYZANTINE, "target=3 is Byzantine; choose the index of an honest node"),
        (9, BYZANTINE, "target=9 is out of range for n=7 nodes"),
        (None, torch.ones(7, dtype=torch.bool), "needs at least one honest node"),
    ],
)
def test_mimic_rejects_bad_targets(target, mask, expected):
    with pytest.raises(ConfigError, match="attack 'mimic'") as error:
        run(attacks.get("mimic", target=target), sample_messages(torch.float64), mask)
    assert expected in str(error.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_bit_flip_rate_zero_is_identity_and_rate_one_flips_every_bit(dtype):
    messages = sample_messages(dtype)
    kept = run(attacks.get("float_bit_flip", rate=0.0), messages)
    assert torch.equal(bits(kept), bits(messages))
    flipped = run(attacks.get("float_bit_flip", rate=1.0), messages)
    assert torch.equal(bits(flipped[BYZANTINE]), ~bits(messages[BYZANTINE]))
    assert torch.equal(bits(flipped[~BYZANTINE]), bits(messages[~BYZANTINE]))


def test_float_bit_flip_flips_the_expected_fraction_of_bits():
    messages = sample_messages(torch.float32, n=4, d=2000)
    mask = torch.tensor([True, True, False, False])
    flipped = run(attacks.get("float_bit_flip", rate=0.25), messages, mask)
    xor = bits(flipped[mask]) ^ bits(messages[mask])
    flipped_bits = sum(int(((xor >> b) & 1).sum()) for b in range(32))
    assert flipped_bits / (2 * 2000 * 32) == pytest.approx(0.25, abs=0.006)
    sign_bits = int(((xor >> 31) & 1).sum())  # the top bit flips too, not only low mantissa bits
    assert sign_bits / 4000 == pytest.approx(0.25, abs=0.03)


def test_label_flip_maps_y_to_c_minus_1_minus_y():
    attack = attacks.get("label_flip")
    labels = torch.tensor([0, 1, 2, 9, 5])
    assert attack.flip_labels(labels, 10).tolist() == [9, 8, 7, 0, 4]
    bound = attacks.get("label_flip", num_classes=3)
    assert bound.flip_labels(torch.tensor([0, 1, 2])).tolist() == [2, 1, 0]
    assert labels.tolist() == [0, 1, 2, 9, 5]


@pytest.mark.parametrize(
    ("params", "labels", "classes", "error", "expected"),
    [
        ({}, torch.tensor([0, 10]), 10, DataError, "labels must lie in [0, 10), got range [0, 10]"),
        ({}, torch.tensor([0.0, 1.0]), 10, DataError, "labels must be an integer tensor"),
        ({}, torch.tensor([0, 1]), None, ConfigError, "the number of classes is unknown"),
        ({"num_classes": 10}, torch.tensor([0]), 3, ConfigError, "got num_classes=3 but"),
    ],
)
def test_label_flip_rejects_bad_labels(params, labels, classes, error, expected):
    with pytest.raises(error) as raised:
        attacks.get("label_flip", **params).flip_labels(labels, classes)
    assert expected in str(raised.value)


# ALIE and IPM: the published formulas on hand-computed cases.

# Honest rows of a 5-node stack whose rows 0 and 3 are Byzantine (n = 5, f = 2).
ALIE_STACK = torch.tensor(
    [[100.0, 100.0], [1.0, 2.0], [3.0, 6.0], [-50.0, 7.0], [5.0, 10.0]], dtype=torch.float64
)
ALIE_MASK = torch.tensor([True, False, False, True, False])


def test_alie_matches_baruch_et_al_for_n5_f2():
    # s = floor(5/2 + 1) - 2 = 1, z = Phi^-1((5 - 1)/5) = Phi^-1(0.8) = 0.8416212335729143.
    # Honest mean (3, 6); sample std: sqrt(((1-3)^2 + 0 + (5-3)^2) / 2) = 2, and 4 likewise.
    z = 0.8416212335729143
    attacked = run(attacks.get("alie"), ALIE_STACK, ALIE_MASK)
    expected = torch.tensor([3.0 - 2.0 * z, 6.0 - 4.0 * z], dtype=torch.float64)
    torch.testing.assert_close(attacked[ALIE_MASK], expected.expand(2, 2), rtol=0, atol=1e-12)


def test_alie_z_for_other_n_and_f():
    # n = 10, f = 2: s = 6 - 2 = 4, Phi^-1(0.6); n = 51, f = 12 (the paper's MNIST setup): s = 14.
    assert attacks.alie_z(10, 2) == pytest.approx(0.2533471031357997, abs=1e-12)
    assert attacks.alie_z(51, 12) == pytest.approx(0.5992298680993446, abs=1e-12)
    assert attacks.alie_z(2, 1) == 0.0


def test_alie_with_explicit_z():
    attacked = run(attacks.get("alie", z=1.5), ALIE_STACK, ALIE_MASK)
    assert attacked[0].tolist() == [3.0 - 3.0, 6.0 - 6.0]


def test_alie_errors_on_byzantine_majority_and_single_honest_row():
    mask = torch.tensor([True, True, True, False, False])
    with pytest.raises(ConfigError, match=r"n=5, f=3 \(s=0 <= 0: Byzantine majority\)"):
        run(attacks.get("alie"), ALIE_STACK, mask)
    mask = torch.tensor([True, True, True, True, False])
    with pytest.raises(ConfigError, match="needs at least 2 honest row"):
        run(attacks.get("alie", z=1.0), ALIE_STACK, mask)


def test_ipm_is_minus_epsilon_times_the_honest_mean():
    attacked = run(attacks.get("ipm", epsilon=0.5), ALIE_STACK, ALIE_MASK)
    assert attacked[ALIE_MASK].tolist() == [[-1.5, -3.0], [-1.5, -3.0]]


# Min-Max and Min-Sum: the constraints hold and gamma is maximal.


def naive_squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(len(a), len(b), dtype=torch.float64)
    for i in range(len(a)):
        for j in range(len(b)):
            out[i, j] = sum((float(x) - float(y)) ** 2 for x, y in zip(a[i], b[j], strict=True))
    return out


def test_pairwise_squared_distances_match_a_naive_loop():
    a, b = sample_messages(torch.float64, n=4, d=6), sample_messages(torch.float64, 3, 6, seed=1)
    torch.testing.assert_close(squared_distances(a, b), naive_squared_distances(a, b))


def min_max_gamma_exact(honest: torch.Tensor, p: torch.Tensor) -> float:
    """Smallest positive root over i of ||mu + g p - g_i||^2 = max_{j,k} ||g_j - g_k||^2."""
    bound = float(naive_squared_distances(honest, honest).max())
    offsets = honest.mean(dim=0) - honest
    a, b = float(p @ p), offsets @ p
    c = bound - (offsets * offsets).sum(dim=1)
    return float(((-b + torch.sqrt(b * b + a * c)) / a).min())


def min_sum_gamma_exact(honest: torch.Tensor, p: torch.Tensor) -> float:
    """sum_i ||mu + g p - g_i||^2 = S0 + h g^2 ||p||^2 (cross terms cancel around the mean)."""
    bound = float(naive_squared_distances(honest, honest).sum(dim=1).min())
    s0 = float(((honest - honest.mean(dim=0)) ** 2).sum())
    return math.sqrt((bound - s0) / (len(honest) * float(p @ p)))


@pytest.mark.parametrize("kind", ["std", "unit_vec", "sign"])
def test_min_max_gamma_is_the_largest_feasible_within_tolerance(kind: str):
    honest = sample_messages(torch.float64, n=6, d=8, seed=2) + 0.5
    p = perturbation_vector(honest, kind)
    gamma = min_max_gamma(honest, p, gamma_init=10.0, tol=1e-6)
    exact = min_max_gamma_exact(honest, p)
    assert exact - 2e-6 <= gamma <= exact
    malicious = honest.mean(dim=0) + gamma * p
    honest_max = float(naive_squared_distances(honest, honest).max())
    assert float(naive_squared_distances(malicious[None], honest).max()) <= honest_max


@pytest.mark.parametrize("kind", ["std", "unit_vec", "sign"])
def test_min_sum_gamma_is_the_largest_feasible_within_tolerance(kind: str):
    honest = sample_messages(torch.float64, n=6, d=8, seed=3) - 0.5
    p = perturbation_vector(honest, kind)
    gamma = min_sum_gamma(honest, p, gamma_init=10.0, tol=1e-6)
    exact = min_sum_gamma_exact(honest, p)
    assert exact - 2e-6 <= gamma <= exact
    malicious = honest.mean(dim=0) + gamma * p
    honest_sums = naive_squared_distances(honest, honest).sum(dim=1)
    assert float(naive_squared_distances(malicious[None], honest).sum()) <= float(honest_sums.min())


def test_perturbations_follow_shejwalkar_and_houmansadr():
    honest = torch.tensor([[1.0, -2.0], [3.0, -6.0], [5.0, -10.0]], dtype=torch.float64)
    assert perturbation_vector(honest, "std").tolist() == [-2.0, -4.0]
    assert perturbation_vector(honest, "sign").tolist() == [-1.0, 1.0]
    torch.testing.assert_close(
        perturbation_vector(honest, "unit_vec"),
        torch.tensor([-3.0, 6.0], dtype=torch.float64) / math.sqrt(45.0),
    )
    assert perturbation_vector(torch.zeros(2, 3), "unit_vec").tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", ["min_max", "min_sum"])
def test_distance_bounded_attacks_send_mu_plus_gamma_p(name: str):
    messages = sample_messages(torch.float64, n=7, d=8, seed=4)
    attack = attacks.get(name, tol=1e-7)
    attacked = run(attack, messages)
    honest = messages[~BYZANTINE]
    p = perturbation_vector(honest, "std")
    exact = (min_max_gamma_exact if name == "min_max" else min_sum_gamma_exact)(honest, p)
    torch.testing.assert_close(
        attacked[BYZANTINE], (honest.mean(dim=0) + exact * p).expand(2, 8), rtol=0, atol=1e-6
    )


# Tuned attacks: the search against the bound rule.


def test_line_search_finds_a_smooth_maximum_and_ignores_nan():
    best = line_search_max(lambda x: -((x - 3.3) ** 2), 0.0, 10.0, 21, 12)
    assert best == pytest.approx(3.3, abs=2e-3)
    best = line_search_max(lambda x: math.nan if x > 5 else x, 0.0, 10.0, 11, 0)
    assert best == 5.0


HONEST_NORM_LIMIT = 3.7


def drop_long_rows_then_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of the rows with norm <= 3.7: a rule whose best IPM scale is known."""
    return x[torch.linalg.vector_norm(x, dim=1) <= HONEST_NORM_LIMIT].mean(dim=0)


def test_optimal_ipm_stops_just_below_the_rules_filter():
    # Honest mean (0.6, 0.8) has norm 1, so -eps * mean passes the filter iff eps <= 3.7.
    honest = torch.tensor([[0.5, 0.9], [0.7, 0.7], [0.6, 0.8]], dtype=torch.float64)
    messages = torch.cat([honest, torch.zeros(2, 2, dtype=torch.float64)])
    mask = torch.tensor([False, False, False, True, True])
    attack = attacks.get("optimal_ipm", aggregator=drop_long_rows_then_mean)
    scale = attack.best_scale(messages, mask)
    assert HONEST_NORM_LIMIT - 0.01 <= scale <= HONEST_NORM_LIMIT
    torch.testing.assert_close(
        run(attack, messages, mask)[mask], -scale * honest.mean(0).expand(2, 2)
    )


def test_optimal_ipm_against_the_mean_takes_the_largest_scale():
    attack = attacks.get("optimal_ipm", scale_max=4.0)
    assert attack.best_scale(sample_messages(torch.float64), BYZANTINE) == 4.0


def mean_near_median(x: torch.Tensor) -> torch.Tensor:
    """Mean of the rows within distance 20 of the coordinate median: far outliers are dropped."""
    keep = torch.linalg.vector_norm(x - coordinate_median(x), dim=1) <= 20.0
    return x[keep].mean(dim=0)


@pytest.mark.parametrize(
    ("rule", "search"),
    [
        (attacks.coordinate_mean, {}),
        (coordinate_median, {}),
        (mean_near_median, {}),
        (mean_near_median, {"grid_points": 2, "refine_steps": 0}),  # the paper's z must be tried
    ],
)
def test_optimal_alie_moves_the_aggregate_at_least_as_far_as_alie(rule, search):
    messages = sample_messages(torch.float64, n=10, d=50, seed=5)
    mask = torch.zeros(10, dtype=torch.bool)
    mask[:3] = True
    honest_mean = messages[~mask].mean(dim=0)

    def moved(attack: attacks.Attack) -> float:
        return float(torch.linalg.vector_norm(rule(run(attack, messages, mask)) - honest_mean))

    plain, tuned = (
        moved(attacks.get("alie")),
        moved(attacks.get("optimal_alie", aggregator=rule, **search)),
    )
    assert tuned >= plain
    if rule is attacks.coordinate_mean:
        assert tuned > 10 * plain  # the mean is moved furthest at scale_max = 10


def test_optimal_attack_rejects_a_rule_with_the_wrong_output_shape():
    attack = attacks.get("optimal_alie", aggregator=torch.Tensor.clone)
    with pytest.raises(ConfigError, match=r"aggregator must map \[n, d\] -> \[d\], got \(7, 5\)"):
        run(attack, sample_messages(torch.float64))


@pytest.mark.parametrize("rows", [1, 2, 6, 25])
def test_column_std_is_the_sample_std_of_each_column(rows: int) -> None:
    from fedpdmm.attacks.base import column_std

    values = torch.randn(rows, 1000, generator=torch.Generator().manual_seed(rows)) * 3 + 7
    values[:, 0] = 2.5  # a constant column: exactly 0
    expected = values.double().std(dim=0)
    got = column_std(values)
    assert got.dtype == values.dtype
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    if rows > 1:
        assert float(got[0]) == 0.0
    else:
        assert torch.isnan(got).all()
