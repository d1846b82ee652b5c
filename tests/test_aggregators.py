"""Specification of `fedpdmm.aggregators`: the case table's generic suite, properties, naive
float64 loops that the fast paths must match, non-finite rows, and the pipeline contract."""

from __future__ import annotations

import dataclasses
import math
import pickle
import re

import numpy as np
import pytest
import torch
from aggregator_cases import INVALID_CASES, PRE_CASES, RULE_CASES, Case, Invalid
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpdmm import aggregators
from fedpdmm.aggregators import (
    RuleContext,
    aggregate,
    check_pipeline,
    finite_rows,
    foolsgold_weights,
    get,
    get_pre,
)
from fedpdmm.aggregators._kernels import map_column_blocks, mean_closest_to_median_rows, median_rows
from fedpdmm.errors import ConfigError, DataError, NonFiniteError

PROPERTY = settings(max_examples=25, deadline=None)
ALL_CASES = RULE_CASES + PRE_CASES


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(case: Case | Invalid) -> aggregators.Aggregator:
    return get_pre(case.name, **case.params) if case.pre else get(case.name, **case.params)


def context(x: torch.Tensor, seed: int = 0) -> RuleContext:
    """Everything any rule may need for rows x: a center, a reference and a seeded generator."""
    return RuleContext(
        center=x.mean(dim=0) + 0.01,
        reference=x.mean(dim=0),
        generator=torch.Generator().manual_seed(seed),
    )


def call(agg: aggregators.Aggregator, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The value of `agg` on x, called through `apply` with what it declares it needs."""
    value, _ = agg.apply(x, context(x, seed))
    return value


def randn(n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@st.composite
def matrices(draw, min_n: int = 1, max_n: int = 10, max_d: int = 4) -> torch.Tensor:
    """Float64 `[n, d]` rows from a drawn seed and scale: continuous values, ties have
    probability 0."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    return randn(n, d, draw(st.integers(0, 2**32 - 1))) * scale


# ---------------------------------------------------------------- the case table's generic suite


def test_every_registered_name_has_a_case():
    assert sorted(aggregators.names()) == sorted(case.name for case in RULE_CASES)
    assert sorted(aggregators.pre_names()) == sorted(case.name for case in PRE_CASES)


@pytest.mark.parametrize("shape", [(9, 5), (9, 1)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_case_contract(case: Case, dtype: torch.dtype, shape: tuple[int, int]):
    agg = build(case)
    x = randn(*shape, seed=1, dtype=dtype)
    before = x.clone()
    value = call(agg, x, seed=3)
    expected_shape = (agg.output_rows(9), shape[1]) if case.pre else (shape[1],)
    assert value.shape == expected_shape
    assert value.dtype == dtype
    assert torch.equal(x, before), "x was mutated"
    assert torch.equal(call(agg, x, seed=3), value), "not deterministic given the generator"
    assert agg.name == case.name
    assert build(Case(case.name, agg.params, case.pre)) == agg
    copy = pickle.loads(pickle.dumps(agg))
    assert copy == agg
    assert torch.equal(call(copy, x, seed=3), value)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_a_single_row_is_returned_unchanged_where_the_parameters_allow_it(case: Case):
    agg = build(case)
    loosest = {key: value for key, value in {"f": 0, "m": None}.items() if key in agg.params}
    agg = dataclasses.replace(agg, **loosest)
    x = randn(1, 4, seed=5)
    before = x.clone()
    try:
        agg.check(1)
    except ConfigError:
        return  # krum, multi_krum and bulyan need n >= 3
    value = call(agg, x, seed=3)
    assert torch.equal(x, before), "x was mutated"
    if case.name not in ("foolsgold", "clip", "arc"):
        close(value.reshape(-1), x[0])


@pytest.mark.parametrize("case", RULE_CASES, ids=lambda case: case.id)
def test_aggregate_calls_every_rule_like_a_direct_call(case: Case):
    rule = build(case)
    x = randn(9, 5, seed=2)
    result = aggregate(x, rule, context=context(x, seed=3))
    assert torch.equal(result.value, call(rule, x, seed=3))
    assert result.num_dropped == 0
    assert (result.state is not None) == rule.stateful


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda case: case.id)
def test_invalid_inputs_raise_config_error(case: Invalid):
    message = re.escape(case.message)
    if case.n is None:
        with pytest.raises(ConfigError, match=message):
            build(case)
        return
    agg = build(case)
    with pytest.raises(ConfigError, match=message):
        agg.check(case.n)
    if case.n > 0:
        with pytest.raises(ConfigError, match=message):
            call(agg, randn(case.n, 3))


# ---------------------------------------------------------------- naive float64 references


def naive_median(x: np.ndarray) -> np.ndarray:
    n, d = x.shape
    out = np.empty(d)
    for j in range(d):
        v = sorted(x[:, j])
        out[j] = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return out


def naive_trimmed_mean(x: np.ndarray, f: int) -> np.ndarray:
    n, d = x.shape
    return np.array([np.mean(sorted(x[:, j])[f : n - f]) for j in range(d)])


def naive_meamed(x: np.ndarray, f: int) -> np.ndarray:
    n, d = x.shape
    med = naive_median(x)
    out = np.empty(d)
    for j in range(d):
        order = sorted(range(n), key=lambda i: (abs(x[i, j] - med[j]), x[i, j]))[: n - f]
        out[j] = np.mean([x[i, j] for i in order])
    return out


def naive_krum_scores(
    x: np.ndarray, f: int, alive: list[int], power: float = 2.0
) -> dict[int, float]:
    scores = {}
    for i in alive:
        dist = sorted(float(np.sqrt(np.sum((x[i] - x[j]) ** 2))) ** power for j in alive if j != i)
        scores[i] = sum(dist[: min(max(len(alive) - f - 2, 1), len(alive) - 1)])
    return scores


def naive_krum_order(x: np.ndarray, f: int, power: float = 2.0) -> list[int]:
    """Rows by (score, row values): ties go to the lexicographically smaller row."""
    scores = naive_krum_scores(x, f, list(range(len(x))), power)
    return sorted(scores, key=lambda i: (scores[i], tuple(x[i])))


def naive_bulyan(x: np.ndarray, f: int) -> np.ndarray:
    n = len(x)
    alive = list(range(n))
    for _ in range(n - 2 * f):
        scores = naive_krum_scores(x, f, alive)
        alive.remove(min(alive, key=lambda i: (scores[i], tuple(x[i]))))
    selected = sorted(set(range(n)) - set(alive))
    return naive_meamed(x[selected], 2 * f)


def naive_weiszfeld(x: np.ndarray, eps: float, max_iter: int, tol: float) -> np.ndarray:
    n = len(x)
    z = np.mean(x, axis=0)
    dist = [float(np.sqrt(np.sum((x[i] - z) ** 2))) for i in range(n)]
    objective = sum(dist)
    for _ in range(max_iter):
        w = [1 / max(eps, dist[i]) for i in range(n)]
        z = sum(w[i] * x[i] for i in range(n)) / sum(w)
        dist = [float(np.sqrt(np.sum((x[i] - z) ** 2))) for i in range(n)]
        previous, objective = objective, sum(dist)
        if previous - objective <= tol * objective:
            break
    return z


def naive_clip_row(u: np.ndarray, tau: float) -> np.ndarray:
    norm = float(np.sqrt(np.sum(u**2)))
    return u if norm <= tau else u * (tau / norm)


def naive_centered_clipping(x: np.ndarray, center: np.ndarray, tau: float, iters: int):
    v = center.copy()
    for _ in range(iters):
        v = v + sum(naive_clip_row(x[i] - v, tau) for i in range(len(x))) / len(x)
    return v


def naive_nnm(x: np.ndarray, f: int) -> np.ndarray:
    n = len(x)
    out = np.empty_like(x)
    for i in range(n):
        dist = {j: (-1.0 if j == i else float(np.sum((x[i] - x[j]) ** 2))) for j in range(n)}
        nearest = sorted(range(n), key=lambda j: (dist[j], j))[: n - f]
        out[i] = np.mean(x[nearest], axis=0)
    return out


def naive_arc(x: np.ndarray, f: int) -> np.ndarray:
    n = len(x)
    clipped = (2 * f * (n - f)) // n
    norms = [float(np.sqrt(np.sum(row**2))) for row in x]
    threshold = sorted(norms)[n - clipped - 1]
    return np.stack([naive_clip_row(row, threshold) for row in x])


def naive_fltrust(x: np.ndarray, g0: np.ndarray) -> np.ndarray:
    g0_norm = float(np.sqrt(np.sum(g0**2)))
    total, acc = 0.0, np.zeros_like(g0)
    for row in x:
        norm = float(np.sqrt(np.sum(row**2)))
        trust = max(0.0, float(np.sum(row * g0)) / (norm * g0_norm))
        total += trust
        acc = acc + trust * row * (g0_norm / norm)
    return acc / total if total > 0 else np.zeros_like(g0)


def naive_foolsgold_weights(h: np.ndarray) -> np.ndarray:
    """Fung et al.'s reference code, as loops."""
    n = len(h)
    cs = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            ni, nj = np.sqrt(np.sum(h[i] ** 2)), np.sqrt(np.sum(h[j] ** 2))
            cs[i, j] = np.sum(h[i] * h[j]) / (ni * nj) if ni * nj > 0 else 0.0
    np.fill_diagonal(cs, 0.0)  # cos(h_i, h_i) - 1, without its rounding noise
    maxcs = cs.max(axis=1)
    for i in range(n):
        for j in range(n):
            if i != j and maxcs[i] < maxcs[j]:
                cs[i, j] = cs[i, j] * maxcs[i] / maxcs[j]
    wv = np.clip(1 - cs.max(axis=1), 0, 1)
    if wv.max() == 0:
        return wv
    wv = wv / wv.max()
    wv[wv == 1] = 0.99
    with np.errstate(divide="ignore"):
        wv = np.log(wv / (1 - wv)) + 0.5
    wv[(np.isinf(wv) + wv) > 1] = 1
    wv[wv < 0] = 0
    return wv


def naive_dnc(x: np.ndarray, f: int, niters: int, c: float, b: int, seed: int) -> np.ndarray:
    n, d = x.shape
    generator = torch.Generator().manual_seed(seed)
    votes = [0] * n
    for _ in range(niters):
        cols = torch.randperm(d, generator=generator)[:b].tolist() if b < d else list(range(d))
        centered = x[:, cols] - x[:, cols].mean(axis=0)
        v = np.linalg.svd(centered)[2][0]
        scores = [float(np.dot(centered[i], v)) ** 2 for i in range(n)]
        for i in sorted(range(n), key=lambda i: (scores[i], i))[: n - int(c * f)]:
            votes[i] += 1
    good = [i for i in range(n) if votes[i] == max(votes)]
    return np.mean(x[good], axis=0)


def close(actual: torch.Tensor, expected, scale: float = 1.0, rtol: float = 1e-10):
    expected = torch.as_tensor(np.asarray(expected), dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


# ---------------------------------------------------------------- fast paths == naive loops


@PROPERTY
@given(data=st.data())
def test_coordinatewise_rules_match_naive_loops(data):
    f = data.draw(st.integers(0, 3))
    x = data.draw(matrices(min_n=2 * f + 1, max_n=2 * f + 6))
    xs, scale = x.numpy(), float(x.abs().max())
    close(get("median")(x), naive_median(xs), scale)
    close(get("trimmed_mean", f=f)(x), naive_trimmed_mean(xs, f), scale)
    close(get("meamed", f=f)(x), naive_meamed(xs, f), scale)
    x32 = x.float()
    close(get("median")(x32), naive_median(x32.double().numpy()), scale, rtol=1e-6)
    close(get("trimmed_mean", f=f)(x32), naive_trimmed_mean(x32.double().numpy(), f), scale, 1e-6)
    close(get("meamed", f=f)(x32), naive_meamed(x32.double().numpy(), f), scale, rtol=1e-6)


@PROPERTY
@given(data=st.data())
def test_krum_family_matches_naive_loops(data):
    f = data.draw(st.integers(0, 2))
    x = data.draw(matrices(min_n=4 * f + 3, max_n=4 * f + 7))
    n, xs, scale = len(x), x.numpy(), float(x.abs().max())
    order = naive_krum_order(xs, f)
    assert torch.equal(get("krum", f=f)(x), x[order[0]])
    assert torch.equal(get("krum", f=f, power=4)(x), x[naive_krum_order(xs, f, 4.0)[0]])
    m = data.draw(st.integers(1, n))
    close(get("multi_krum", f=f, m=m)(x), xs[order[:m]].mean(axis=0), scale)
    close(get("multi_krum", f=f)(x), xs[order[: n - f]].mean(axis=0), scale)
    close(get("bulyan", f=f)(x), naive_bulyan(xs, f), scale)


@PROPERTY
@given(x=matrices(min_n=1), max_iter=st.integers(1, 30))
def test_geometric_median_matches_naive_weiszfeld(x, max_iter):
    rule = get("geometric_median", eps=1e-8, max_iter=max_iter, tol=1e-9)
    expected = naive_weiszfeld(x.numpy(), 1e-8, max_iter, 1e-9)
    close(rule(x), expected, float(x.abs().max()), rtol=1e-8)


@PROPERTY
@given(x=matrices(min_n=3), tau=st.floats(1e-3, 1e3), iters=st.integers(1, 4))
def test_centered_clipping_and_clip_match_naive_loops(x, tau, iters):
    center = x[0] * 0.5
    expected = naive_centered_clipping(x.numpy(), center.numpy(), tau, iters)
    scale = float(x.abs().max())
    close(get("centered_clipping", tau=tau, iters=iters)(x, center=center), expected, scale)
    clipped = np.stack([naive_clip_row(row, tau) for row in x.numpy()])
    close(get_pre("clip", tau=tau)(x), clipped, scale)


@PROPERTY
@given(data=st.data())
def test_nnm_arc_bucketing_match_naive_loops(data):
    x = data.draw(matrices(min_n=2))
    n, xs, scale = len(x), x.numpy(), float(x.abs().max())
    f = data.draw(st.integers(0, n - 1))
    close(get_pre("nnm", f=f)(x), naive_nnm(xs, f), scale)
    close(get_pre("arc", f=f)(x), naive_arc(xs, f), scale)
    s, seed = data.draw(st.integers(1, n)), data.draw(st.integers(0, 1000))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    buckets = [xs[order[k : k + s]].mean(axis=0) for k in range(0, n, s)]
    got = get_pre("bucketing", s=s)(x, generator=torch.Generator().manual_seed(seed))
    close(got, np.stack(buckets), scale)


@PROPERTY
@given(x=matrices(min_n=1), data=st.data())
def test_fltrust_and_foolsgold_match_naive_loops(x, data):
    xs, scale = x.numpy(), float(x.abs().max())
    g0 = x[data.draw(st.integers(0, len(x) - 1))] + 0.5 * x.mean(dim=0)
    close(get("fltrust")(x, reference=g0), naive_fltrust(xs, g0.numpy()), scale)
    weights = naive_foolsgold_weights(xs)
    close(foolsgold_weights(x), weights)
    expected = (weights @ xs) / weights.sum() if weights.sum() > 0 else np.zeros(x.shape[1])
    close(get("foolsgold")(x)[0], expected, scale)


@PROPERTY
@given(data=st.data())
def test_dnc_matches_naive_loops(data):
    x = data.draw(matrices(min_n=5, max_n=10, max_d=6))
    f = data.draw(st.integers(0, 2))
    niters, b, seed = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 7)), 7
    rule = get("dnc", f=f, niters=niters, b=b)
    got = rule(x, generator=torch.Generator().manual_seed(seed))
    close(got, naive_dnc(x.numpy(), f, niters, 1.0, b, seed), float(x.abs().max()))


def test_threads_share_column_blocks_without_changing_the_result():
    x = randn(9, 20_000, seed=4)  # several blocks of columns
    for kernel, args in [(median_rows, ()), (mean_closest_to_median_rows, (6,))]:
        alone = map_column_blocks(x, kernel, *args, workers=1)
        assert torch.equal(map_column_blocks(x, kernel, *args, workers=3), alone)


def test_krum_distances_stay_exact_for_float32_rows_far_from_the_origin():
    # models 1e3 from the origin, 1e-2 apart: a raw float32 Gram matrix would lose every digit
    x = 1e3 + 1e-2 * randn(12, 2000, seed=5, dtype=torch.float32)
    order = naive_krum_order(x.double().numpy(), 2)
    assert torch.equal(get("krum", f=2)(x), x[order[0]])


# ---------------------------------------------------------------- invariances


@PROPERTY
@given(x=matrices(min_n=7), seed=st.integers(0, 1000))
def test_rules_are_permutation_invariant(x, seed):
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    scale = float(x.abs().max())
    for case in RULE_CASES:  # dnc too: its randomness draws coordinates, not rows
        rule = build(case)
        close(call(rule, x[perm]), call(rule, x), scale, rtol=1e-7)
    for case in PRE_CASES:
        pre = build(case)
        if not pre.randomized:
            close(call(pre, x[perm]), call(pre, x)[perm], scale, rtol=1e-7)


EQUIVARIANT = ("mean", "median", "trimmed_mean", "meamed", "krum", "multi_krum", "bulyan")
APPROXIMATELY_EQUIVARIANT = ("geometric_median", "centered_clipping", "dnc")


@PROPERTY
@given(x=matrices(min_n=7), shift=st.sampled_from([1e-2, 1.0, 1e3]), seed=st.integers(0, 99))
def test_translation_equivariance(x, shift, seed):
    t = randn(1, x.shape[1], seed)[0] * shift
    scale = float(x.abs().max()) + shift
    for case in RULE_CASES:
        if case.name in EQUIVARIANT + APPROXIMATELY_EQUIVARIANT:
            rule = build(case)  # centered_clipping: the center (mean + 0.01) moves with x
            rtol = 1e-9 if case.name in EQUIVARIANT else 1e-6
            close(call(rule, x + t), call(rule, x) + t, scale, rtol=rtol)
    nnm = get_pre("nnm", f=2)
    close(nnm(x + t), nnm(x) + t, scale, rtol=1e-9)


@PROPERTY
@given(row=matrices(min_n=1, max_n=1), n=st.integers(7, 10))
def test_identical_rows_return_that_row(row, n):
    x = row.repeat(n, 1)
    for case in ALL_CASES:
        if case.name in ("foolsgold", "clip", "arc"):
            continue  # foolsgold zeroes sybils; clipping changes norms
        value = call(build(case), x)
        expected = row[0] if not case.pre else row.expand_as(value)
        close(value, expected, float(row.abs().max()))


def test_foolsgold_gives_identical_histories_weight_zero():
    x = torch.eye(5, 4, dtype=torch.float64) * torch.tensor([[1.0], [2.0], [3.0], [4.0], [4.0]])
    x[4] = x[3]  # two sybils sending the same update, three honest orthogonal ones
    assert torch.equal(foolsgold_weights(x), torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]).double())
    value, _ = get("foolsgold")(x)
    close(value, x[:3].mean(dim=0))
    assert torch.equal(get("foolsgold")(x[3:].clone())[0], torch.zeros(4, dtype=x.dtype))


def test_meamed_keeps_the_smaller_of_two_values_equally_far_from_the_median():
    column = torch.tensor([[3.0], [-1.0], [2.0], [0.0]], dtype=torch.float64)  # median 1
    for perm in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        # keep 0 and 2 (distance 1), then -1 rather than 3 (both at distance 2)
        assert get("meamed", f=1)(column[perm]).item() == pytest.approx(1 / 3)


@PROPERTY
@given(x=matrices(min_n=5))
def test_special_parameters_reduce_to_simpler_rules(x):
    n, scale = len(x), float(x.abs().max())
    close(get("trimmed_mean", f=0)(x), x.mean(dim=0), scale)
    close(get("meamed", f=0)(x), x.mean(dim=0), scale)
    assert torch.equal(get("multi_krum", f=1, m=1)(x), get("krum", f=1)(x))
    close(get("multi_krum", f=1, m=n)(x), x.mean(dim=0), scale)
    close(get("bulyan", f=0)(x), x.mean(dim=0), scale)


# ---------------------------------------------------------------- robustness


@PROPERTY
@given(data=st.data())
def test_outlying_rows_cannot_drag_robust_rules(data):
    f = data.draw(st.integers(1, 3))
    n = data.draw(st.integers(4 * f + 3, 4 * f + 8))
    x = randn(n, 3, data.draw(st.integers(0, 10**6)))
    byzantine = torch.randperm(n, generator=torch.Generator().manual_seed(n))[:f]
    honest = torch.ones(n, dtype=torch.bool).index_fill_(0, byzantine, False)
    x[byzantine] = 1e6 * torch.tensor([1.0, -1.0, 1.0], dtype=x.dtype)
    low, high = x[honest].min(dim=0).values, x[honest].max(dim=0).values
    for rule in (get("median"), get("trimmed_mean", f=f), get("meamed", f=f), get("bulyan", f=f)):
        value = rule(x)
        assert bool(((value >= low) & (value <= high)).all()), rule
    assert any(torch.equal(get("krum", f=f)(x), row) for row in x[honest])
    honest_mean = x[honest].mean(dim=0)
    close(get("multi_krum", f=f)(x), honest_mean, 1.0)
    close(get("dnc", f=f)(x, generator=torch.Generator().manual_seed(0)), honest_mean, 1.0)


def test_geometric_median_beats_every_row_and_the_mean_on_its_objective():
    x = randn(9, 3, seed=9)
    x[:2] += 50.0

    def objective(z):
        return float(torch.linalg.vector_norm(x - z, dim=1).sum())

    z = get("geometric_median", max_iter=500, tol=0.0, eps=1e-12)(x)
    assert all(objective(z) <= objective(p) for p in [*x, x.mean(dim=0)])
    unit = (z - x) / torch.linalg.vector_norm(z - x, dim=1, keepdim=True)
    assert float(torch.linalg.vector_norm(unit.sum(dim=0))) < 1e-6  # first-order optimality


# ---------------------------------------------------------------- non-finite rows, state, pipeline


def test_nonfinite_rows_are_dropped_and_counted():
    x = randn(8, 3, seed=10)
    x[1, 0], x[5, 2], x[6, 1] = math.nan, math.inf, -math.inf
    finite = torch.tensor([True, False, True, True, True, False, False, True])
    result = aggregate(x, get("mean"))
    assert result.num_dropped == 3
    close(result.value, x[finite].mean(dim=0))
    assert bool(torch.isnan(x[1, 0])), "x was mutated"
    huge = torch.full((2, 3), 3e38)  # finite rows whose float32 sums overflow
    assert torch.equal(finite_rows(huge), torch.tensor([True, True]))


def test_dropped_rows_use_up_the_byzantine_budget():
    x = randn(11, 4, seed=11)
    x[7] = math.nan
    result = aggregate(x, get("bulyan", f=2))  # 10 rows left: bulyan(f=2) alone would refuse
    assert result.num_dropped == 1
    assert torch.equal(result.value, get("bulyan", f=1)(torch.cat([x[:7], x[8:]])))


def test_all_rows_nonfinite_raises():
    x = torch.full((3, 2), math.nan)
    with pytest.raises(NonFiniteError, match="all 3 rows to aggregate are non-finite"):
        aggregate(x, get("median"))
    with pytest.raises(NonFiniteError, match="centered_clipping: center has NaN or Inf"):
        aggregate(randn(3, 2), get("centered_clipping", tau=1.0), context=RuleContext(center=x[0]))


def test_foolsgold_state_follows_clients_across_rounds_and_dropped_rows():
    rule = get("foolsgold")
    first, second = randn(4, 3, seed=12), randn(4, 3, seed=13)
    result = aggregate(first, rule)
    second[2] = math.inf
    result = aggregate(second, rule, context=RuleContext(state=result.state))
    assert result.num_dropped == 1
    history = first + second
    history[2] = first[2]  # client 2's non-finite row never enters its history
    close(result.state.history, history)
    weights = torch.as_tensor(naive_foolsgold_weights(history[[0, 1, 3]].numpy()))
    close(result.value, (weights @ second[[0, 1, 3]]) / weights.sum())
    _, state = rule(first[:2], clients=torch.tensor([5, 1]))
    assert state.history.shape == (6, 3)
    close(state.history[[5, 1]], first[:2])


def test_pre_aggregations_run_in_order_before_the_rule():
    x = randn(9, 4, seed=14)
    clip, nnm = get_pre("clip", tau=0.5), get_pre("nnm", f=2)
    result = aggregate(x, get("trimmed_mean", f=1), [clip, nnm])
    close(result.value, get("trimmed_mean", f=1)(nnm(clip(x))))


def test_check_pipeline_counts_rows_through_the_steps():
    bucketing = get_pre("bucketing", s=2)
    assert check_pipeline(get("krum", f=1), [bucketing], n=10) == 5
    with pytest.raises(ConfigError, match=re.escape("krum needs n >= 2f + 3, got n=5, f=2")):
        check_pipeline(get("krum", f=2), [bucketing], n=10)
    with pytest.raises(ConfigError, match="foolsgold keeps per-client state and cannot follow nnm"):
        check_pipeline(get("foolsgold"), [get_pre("nnm", f=1)], n=10)
    with pytest.raises(ConfigError, match=re.escape("built by fedpdmm.aggregators.get_pre")):
        aggregate(randn(4, 2), get("mean"), [get("median")])


def test_bad_tensors_and_missing_keywords_are_reported():
    x = randn(5, 3)
    with pytest.raises(DataError, match=re.escape("aggregates a [n, d] tensor, got (3,)")):
        get("median")(x[0])
    with pytest.raises(DataError, match=re.escape("floating-point tensor, got dtype=torch.int64")):
        aggregate(torch.ones(4, 2, dtype=torch.long), get("mean"))
    with pytest.raises(DataError, match=re.escape("center must have shape (3,)")):
        get("centered_clipping", tau=1.0)(x, center=torch.zeros(4))
    with pytest.raises(DataError, match="fltrust needs reference=<tensor"):
        aggregate(x, get("fltrust"))
    with pytest.raises(ConfigError, match="dnc is randomized and needs generator="):
        aggregate(x, get("dnc", f=1))
    with pytest.raises(ConfigError, match="bucketing is randomized and needs generator="):
        aggregate(x, get("mean"), [get_pre("bucketing", s=2)])


def test_krum_with_the_bucketing_papers_fourth_powers_can_pick_another_row():
    """Summed fourth powers weigh the farthest of the nearest rows more: on these seven points
    (f = 2, three nearest each) squared distances pick row 6 and fourth powers row 3."""
    x = torch.tensor(
        [[10, 5], [10, 9], [8, 2], [9, 0], [6, 4], [11, 2], [11, 1]], dtype=torch.float64
    )
    assert torch.equal(get("krum", f=2)(x), x[6])
    assert torch.equal(get("krum", f=2, power=4)(x), x[3])
    assert naive_krum_order(x.numpy(), 2)[0] == 6 and naive_krum_order(x.numpy(), 2, 4.0)[0] == 3
