"""Client partitions: seeded, sorted, disjoint covers; label skew behaves as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpdmm.data import PARTITIONS, label_histogram, partition
from fedpdmm.errors import ConfigError, DataError
from fedpdmm.seeding import generator

BALANCED = torch.arange(600) % 10  # 10 classes x 60 samples, interleaved


def halves(num_clients: int) -> list[list[int]]:
    """Two communities, as `two_cliques` has (one when there is a single client)."""
    half = max(1, num_clients // 2)
    groups = [list(range(half)), list(range(half, num_clients))]
    return [group for group in groups if group]


def split(labels, num_clients, scheme, seed=0, **kwargs):
    if scheme == "communities":
        kwargs.setdefault("communities", halves(num_clients))
    return partition(labels, num_clients, scheme, generator=generator(seed, "split"), **kwargs)


RANDOM_PARTITIONS = [scheme for scheme in PARTITIONS if scheme != "sorted"]


def assert_sorted_disjoint_cover(parts, count, num_clients):
    assert len(parts) == num_clients
    for part in parts:
        assert part.dtype == torch.int64 and part.ndim == 1
        assert torch.equal(part, part.sort().values)
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(count))


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_disjoint_complete_sorted(scheme):
    labels = torch.randint(0, 7, (503,), generator=generator(1, "labels"))
    assert_sorted_disjoint_cover(split(labels, 9, scheme), 503, 9)


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(1, 120),
    classes=st.integers(1, 6),
    clients=st.integers(1, 12),
    scheme=st.sampled_from(PARTITIONS),
    seed=st.integers(0, 2**31),
)
def test_cover_for_any_sizes(count, classes, clients, scheme, seed):
    clients = min(clients, count)
    labels = torch.randint(0, classes, (count,), generator=generator(seed, "labels"))
    extra = {"min_size": 0} if scheme == "dirichlet" else {"shards_per_client": 1}
    if scheme == "communities":
        extra["communities"] = [list(range(clients))]  # one community: any label set works
    parts = split(labels, clients, scheme, seed=seed, **extra)
    assert_sorted_disjoint_cover(parts, count, clients)


@pytest.mark.parametrize("scheme", RANDOM_PARTITIONS)
def test_same_seed_same_split_other_seed_other_split(scheme):
    first, again, other = (split(BALANCED, 8, scheme, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_global_random_state_untouched(scheme):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    split(BALANCED, 5, scheme)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)


def test_iid_sizes_differ_by_at_most_one():
    sizes = [len(p) for p in split(torch.zeros(103, dtype=torch.int64), 10, "iid")]
    assert sorted(sizes) == [10] * 7 + [11] * 3


def skew(labels, parts, num_classes):
    """Mean total-variation distance between each client's label distribution and the global."""
    hist = label_histogram(labels, parts, num_classes).double()
    local = hist / hist.sum(dim=1, keepdim=True)
    overall = torch.bincount(labels, minlength=num_classes).double() / len(labels)
    return 0.5 * (local - overall).abs().sum(dim=1).mean().item()


def test_dirichlet_small_alpha_is_more_skewed():
    labels = torch.arange(5000) % 10
    skewed = skew(labels, split(labels, 20, "dirichlet", alpha=0.1), 10)
    mild = skew(labels, split(labels, 20, "dirichlet", alpha=100.0), 10)
    assert skewed > 0.5 > 0.1 > mild


def test_dirichlet_respects_min_size():
    parts = split(BALANCED, 20, "dirichlet", alpha=0.3, min_size=10)
    assert min(len(p) for p in parts) >= 10


def test_dirichlet_min_size_error():
    pattern = (
        r"^dirichlet partition with alpha=0\.01 leaves client \d+ with \d samples \(min_size=5\) "
        r"after 100 draws; raise data\.alpha or lower data\.num_clients$"
    )
    with pytest.raises(DataError, match=pattern):
        split(torch.arange(100) % 10, 20, "dirichlet", alpha=0.01, min_size=5)


def test_shards_give_at_most_shards_per_client_labels_when_balanced():
    for shards_per_client in (1, 2, 3):
        parts = split(BALANCED, 10, "shards", shards_per_client=shards_per_client)
        hist = label_histogram(BALANCED, parts, 10)
        assert ((hist > 0).sum(dim=1) <= shards_per_client).all()
        assert all(len(p) == 600 // 10 for p in parts)


def test_shards_remainder_spreads_over_first_shards():
    labels = torch.arange(103) % 5  # 103 = 10 shards of 10 + remainder 3
    parts = split(labels, 5, "shards", shards_per_client=2)
    assert sorted(len(p) for p in parts) in ([20, 20, 21, 21, 21], [20, 20, 20, 21, 22])
    assert_sorted_disjoint_cover(parts, 103, 5)


def test_sorted_parts_are_contiguous_label_slices():
    """Karimireddy et al.'s non-IID split: client k holds the k-th slice of the sorted labels,
    so with 10 clients over 10 balanced classes each holds exactly one class."""
    parts = split(BALANCED, 10, "sorted")
    assert [sorted(set(BALANCED[part].tolist())) for part in parts] == [[c] for c in range(10)]
    parts = split(BALANCED, 7, "sorted", seed=3)
    labels = torch.cat([BALANCED[part].sort().values for part in parts])
    assert torch.equal(labels, BALANCED.sort().values)  # concatenated in order: sorted labels
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_communities_hold_disjoint_label_groups():
    """Two communities of a 10-node dumbbell: one holds digits 0-4, the other 5-9, each split
    IID over its members."""
    groups = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    parts = split(BALANCED, 10, "communities", communities=groups)
    histogram = label_histogram(BALANCED, parts, 10)
    assert bool((histogram[:5, 5:] == 0).all()) and bool((histogram[5:, :5] == 0).all())
    assert bool((histogram[:5, :5] > 0).all()) and bool((histogram[5:, 5:] > 0).all())
    assert all(len(p) == 60 for p in parts)  # 300 samples per community, 5 members each


def test_communities_follow_the_graph():
    from fedpdmm import topology

    graph = topology.build("two_cliques", 8, seed=0)
    assert topology.communities(graph) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_holders_split_the_data_over_some_clients_only():
    """`data.byzantine_data = false`: clients 1 and 4 get nothing; the others split it all."""
    holders = [0, 2, 3, 5]
    for scheme in PARTITIONS:
        parts = split(BALANCED, 6, scheme, holders=holders)
        assert len(parts[1]) == 0 and len(parts[4]) == 0
        assert_sorted_disjoint_cover([parts[k] for k in holders], 600, 4)
        alone = split(BALANCED, 4, scheme)
        assert all(torch.equal(parts[k], alone[i]) for i, k in enumerate(holders)), scheme


@pytest.mark.parametrize(
    ("labels", "communities", "match"),
    [
        (BALANCED, [[0, 1], [1, 2]], "do not cover"),
        (BALANCED, [[0], [2, 3]], "do not cover"),
        (torch.zeros(20, dtype=torch.int64), [[0], [1]], "one class per community"),
        (torch.tensor([0, 0, 0, 1]), [[0], [1, 2]], "only 1 samples"),
    ],
)
def test_communities_that_the_data_cannot_satisfy_are_named(labels, communities, match):
    clients = sum(len(group) for group in communities)
    with pytest.raises(ConfigError, match=match):
        split(labels, clients, "communities", communities=communities)


def test_label_histogram_matches_naive_count():
    labels = torch.randint(0, 4, (200,), generator=generator(2, "labels"))
    parts = split(labels, 6, "dirichlet", alpha=0.5)
    hist = label_histogram(labels, parts, num_classes=5)
    assert hist.dtype == torch.int64 and hist.shape == (6, 5)
    for k, part in enumerate(parts):
        for c in range(5):
            assert hist[k, c] == sum(1 for i in part.tolist() if labels[i] == c)
    assert torch.equal(hist.sum(dim=0)[:4], torch.bincount(labels, minlength=4))


def test_label_histogram_rejects_labels_out_of_range():
    with pytest.raises(DataError, match="label 9 is out of range for num_classes=5"):
        label_histogram(torch.tensor([0, 9]), [torch.tensor([0, 1])], 5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_clients": 601}, r"data\.num_clients=601 exceeds the 600 samples"),
        ({"num_clients": 0}, r"data\.num_clients=0 must be a positive integer"),
        ({"scheme": "pathological"}, r"unknown data\.partition='pathological'"),
        ({"scheme": "dirichlet", "alpha": 0.0}, r"data\.alpha=0\.0 must be"),
        ({"scheme": "dirichlet", "alpha": -1}, r"data\.alpha=-1 must be"),
        ({"scheme": "dirichlet", "alpha": float("nan")}, r"data\.alpha=nan must be"),
        ({"scheme": "dirichlet", "min_size": 61}, r"data\.min_size=61 for each of"),
        ({"scheme": "shards", "shards_per_client": 61}, r"data\.shards_per_client=61 must be"),
        ({"scheme": "shards", "shards_per_client": 0}, r"data\.shards_per_client=0 must be"),
    ],
)
def test_bad_arguments_name_the_config_key(kwargs, match):
    args = {"num_clients": 10, "scheme": "iid", **kwargs}
    with pytest.raises(ConfigError, match=match):
        split(BALANCED, args.pop("num_clients"), args.pop("scheme"), **args)


def test_labels_must_be_a_1d_integer_tensor():
    with pytest.raises(DataError, match="1-D integer tensor"):
        split(torch.zeros(10, 2, dtype=torch.int64), 2, "iid")
    with pytest.raises(DataError, match="1-D integer tensor"):
        split(torch.zeros(10), 2, "iid")
