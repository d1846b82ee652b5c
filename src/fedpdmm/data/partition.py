"""Split a labelled dataset among clients: IID, Dirichlet label skew, label shards, label-sorted
contiguous parts, and labels dealt by the communities of a graph.

Every scheme returns one sorted int64 index tensor per client; the parts are disjoint and together
cover every sample. All randomness comes from the `generator` argument. `holders` splits the data
over some clients only (the others get empty parts): the honest ones, when Byzantine clients
hold no data (`data.byzantine_data = false`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fedpdmm.errors import ConfigError, DataError

PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "shards", "sorted", "communities")
DIRICHLET_MAX_DRAWS = 100


def partition(
    labels: torch.Tensor,
    num_clients: int,
    scheme: str,
    *,
    generator: torch.Generator,
    alpha: float = 0.5,
    min_size: int = 1,
    shards_per_client: int = 2,
    communities: list[list[int]] | None = None,
    holders: list[int] | None = None,
) -> list[torch.Tensor]:
    """Indices of the samples of each client, under `scheme` (one of `PARTITIONS`).

    labels: int64 [N]. Returns `num_clients` sorted int64 tensors, disjoint, covering `0..N-1`.
    `alpha` and `min_size` apply to "dirichlet", `shards_per_client` to "shards", `communities`
    (lists of clients) to "communities". `holders`: the clients that get data (None: all); the
    others get empty parts and the scheme splits the data over the holders alone.
    """
    _check_labels(labels)
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ConfigError(f"data.num_clients={num_clients!r} must be a positive integer")
    if holders is not None and len(holders) < num_clients:
        held = {client: k for k, client in enumerate(holders)}
        groups = None
        if communities is not None:
            groups = [[held[c] for c in group if c in held] for group in communities]
            groups = [group for group in groups if group]
        parts = partition(
            labels,
            len(holders),
            scheme,
            generator=generator,
            alpha=alpha,
            min_size=min_size,
            shards_per_client=shards_per_client,
            communities=groups,
        )
        empty = torch.empty(0, dtype=torch.int64)
        return [parts[held[k]] if k in held else empty for k in range(num_clients)]
    count = len(labels)
    if num_clients > count:
        raise ConfigError(
            f"data.num_clients={num_clients} exceeds the {count} samples to split; "
            f"lower data.num_clients"
        )
    if scheme == "iid":
        return iid_partition(count, num_clients, generator)
    if scheme == "dirichlet":
        if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
            raise ConfigError(f"data.alpha={alpha!r} must be a finite number > 0")
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
            raise ConfigError(f"data.min_size={min_size!r} must be an integer >= 0")
        if min_size * num_clients > count:
            raise ConfigError(
                f"data.min_size={min_size} for each of data.num_clients={num_clients} clients "
                f"needs more than the {count} samples; lower one of them"
            )
        return dirichlet_partition(labels, num_clients, alpha, min_size, generator)
    if scheme == "shards":
        if (
            isinstance(shards_per_client, bool)
            or not isinstance(shards_per_client, int)
            or shards_per_client < 1
            or shards_per_client * num_clients > count
        ):
            raise ConfigError(
                f"data.shards_per_client={shards_per_client!r} must be an integer >= 1 with "
                f"shards_per_client * num_clients ({num_clients}) <= {count} samples"
            )
        return shard_partition(labels, num_clients, shards_per_client, generator)
    if scheme == "sorted":
        return sorted_partition(labels, num_clients)
    if scheme == "communities":
        if communities is None:
            raise ConfigError(
                "data.partition='communities' needs a graph topology with communities "
                "(e.g. topology.name='two_cliques')"
            )
        return community_partition(labels, num_clients, communities, generator)
    raise ConfigError(f"unknown data.partition={scheme!r}; choose one of {', '.join(PARTITIONS)}")


def _check_labels(labels: torch.Tensor) -> None:
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise DataError(f"labels must be a 1-D integer tensor, got {shape}")
    if len(labels) and int(labels.min()) < 0:
        raise DataError(f"labels must be >= 0, got {int(labels.min())}")


def iid_partition(count: int, num_clients: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A random permutation of `0..count-1` cut into parts whose sizes differ by at most one."""
    order = torch.randperm(count, generator=generator)
    return [part.sort().values for part in torch.tensor_split(order, num_clients)]


def dirichlet_partition(
    labels: torch.Tensor,
    num_clients: int,
    alpha: float,
    min_size: int,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """Label skew: for each class c, proportions p_c ~ Dir(alpha * 1) over the clients.

    The samples of class c are shuffled and cut at floor(cumsum(p_c) * n_c) (Hsu, Qi, Brown 2019,
    "Measuring the effects of non-identical data distribution"; per-class form of Yurochkin et al.
    2019). If some client gets fewer than `min_size` samples the whole split is redrawn, at most
    `DIRICHLET_MAX_DRAWS` times. The Dirichlet is sampled by numpy, seeded from `generator`.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    labels_np = labels.cpu().numpy()
    members = [np.flatnonzero(labels_np == c) for c in np.unique(labels_np)]
    clients = np.arange(num_clients)
    for _ in range(DIRICHLET_MAX_DRAWS):
        owner = np.empty(len(labels_np), dtype=np.int64)
        for indices in members:
            proportions = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = np.floor(np.cumsum(proportions)[:-1] * len(indices)).astype(np.int64)
            cuts = np.clip(cuts, 0, len(indices))
            sizes = np.diff(np.concatenate(([0], cuts, [len(indices)])))
            owner[rng.permutation(indices)] = np.repeat(clients, sizes)
        counts = np.bincount(owner, minlength=num_clients)
        if counts.min() >= min_size:
            break
    else:
        smallest = int(counts.argmin())
        raise DataError(
            f"dirichlet partition with alpha={alpha} leaves client {smallest} with "
            f"{counts[smallest]} samples (min_size={min_size}) after {DIRICHLET_MAX_DRAWS} draws; "
            f"raise data.alpha or lower data.num_clients"
        )
    order = torch.from_numpy(np.argsort(owner, kind="stable"))
    return list(torch.split(order, counts.tolist()))


def shard_partition(
    labels: torch.Tensor, num_clients: int, shards_per_client: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Label shards (McMahan et al. 2017): sort by label, cut into S = num_clients *
    shards_per_client shards, give each client `shards_per_client` shards at random.

    Ties in the label sort keep index order. The remainder N mod S is not dropped: shards differ in
    size by at most one, the first N mod S shards (lowest labels) holding one extra sample.
    """
    num_shards = num_clients * shards_per_client
    by_label = torch.sort(labels, stable=True).indices
    shards = torch.tensor_split(by_label, num_shards)
    dealt = torch.randperm(num_shards, generator=generator).view(num_clients, shards_per_client)
    return [torch.cat([shards[s] for s in row.tolist()]).sort().values for row in dealt]


def sorted_partition(labels: torch.Tensor, num_clients: int) -> list[torch.Tensor]:
    """Label-sorted contiguous parts (the non-IID split of Karimireddy, He and Jaggi, ICLR 2022):
    sort by label (ties in index order) and cut into `num_clients` contiguous parts whose sizes
    differ by at most one. Deterministic: client k holds the k-th slice of the sorted labels."""
    by_label = torch.sort(labels, stable=True).indices
    return [part.sort().values for part in torch.tensor_split(by_label, num_clients)]


def community_partition(
    labels: torch.Tensor,
    num_clients: int,
    communities: list[list[int]],
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """Labels dealt by community: the classes, in order, are cut into as many contiguous groups
    as there are communities (sizes differing by at most one), community g gets every sample of
    its group of classes, split IID (a seeded permutation) over its members. With `two_cliques`
    and ten classes one clique holds digits 0-4 and the other 5-9 (as in He, Karimireddy and
    Jaggi's dumbbell experiments)."""
    members = sorted(c for group in communities for c in group)
    if members != list(range(num_clients)):
        raise ConfigError(
            f"the communities {communities} do not cover the {num_clients} clients exactly once"
        )
    classes = torch.unique(labels)
    if len(communities) > len(classes):
        raise ConfigError(
            f"data.partition='communities' needs at least one class per community: "
            f"{len(communities)} communities but {len(classes)} classes"
        )
    parts: list[torch.Tensor] = [torch.empty(0, dtype=torch.int64)] * num_clients
    class_groups = torch.tensor_split(classes, len(communities))
    for group, own_classes in zip(communities, class_groups, strict=True):
        samples = torch.isin(labels, own_classes).nonzero().flatten()
        if len(samples) < len(group):
            raise ConfigError(
                f"community {group} has {len(group)} clients but only {len(samples)} samples of "
                f"its classes {own_classes.tolist()}; lower data.num_clients"
            )
        order = samples[torch.randperm(len(samples), generator=generator)]
        for client, part in zip(group, torch.tensor_split(order, len(group)), strict=True):
            parts[client] = part.sort().values
    return parts


def label_histogram(
    labels: torch.Tensor, parts: list[torch.Tensor], num_classes: int
) -> torch.Tensor:
    """Counts [num_clients, num_classes] int64: entry (k, c) = #{i in parts[k] : labels[i] = c}."""
    _check_labels(labels)
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(f"label {int(labels.max())} is out of range for num_classes={num_classes}")
    rows = [torch.bincount(labels[part], minlength=num_classes) for part in parts]
    if not rows:
        return torch.zeros(0, num_classes, dtype=torch.int64)
    return torch.stack(rows).to(torch.int64)
