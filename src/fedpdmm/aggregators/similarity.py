"""Rules that weigh or filter rows by their direction: FoolsGold, DnC, FLTrust.

These expect updates (model changes), not models: they compare directions from the origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from fedpdmm.aggregators._base import (
    Aggregator,
    check_generator,
    check_matrix,
    check_point,
    need_float,
    need_int,
    need_rows,
    set_field,
)
from fedpdmm.aggregators._kernels import small_eigh, weighted_rows_sum
from fedpdmm.errors import DataError


def cosine_similarities(x: Tensor) -> Tensor:
    """`[n, n]` float64 cosine similarities of the rows of `[n, d]`; 0 where a row is zero."""
    gram = (x @ x.T).double()
    norms = gram.diagonal().clamp(min=0).sqrt()
    scale = norms[:, None] * norms[None, :]
    return torch.where(scale > 0, gram / scale, 0.0)


def foolsgold_weights(history: Tensor, confidence: float = 1.0) -> Tensor:
    """`[n]` FoolsGold weights in [0, 1] from the `[n, d]` update histories.

    Fung, Yoon, Beschastnikh, "The limitations of federated learning in sybil settings", RAID
    2020, Algorithm 1 (without feature importance): cs = cosine similarities with cs_ii = 0;
    v_i = max_j cs_ij; pardoning cs_ij *= v_i / v_j where v_i < v_j; a_i = clip(1 - max_j cs_ij,
    0, 1); a /= max(a); a = 0.99 where a = 1; a = clip(k (ln(a / (1 - a)) + 0.5), 0, 1) with
    k = `confidence`. All zeros if every a_i is 0.
    """
    cs = cosine_similarities(history).fill_diagonal_(0.0)
    v = cs.max(dim=1).values
    pardon = v[:, None] < v[None, :]
    cs = torch.where(pardon, cs * v[:, None] / torch.where(pardon, v[None, :], 1.0), cs)
    a = (1.0 - cs.max(dim=1).values).clamp(0.0, 1.0)
    top = a.max()
    if top <= 0:
        return torch.zeros_like(a)
    a = a / top
    a = torch.where(a == 1.0, 0.99, a)
    return (confidence * (torch.log(a / (1.0 - a)) + 0.5)).clamp(0.0, 1.0)


class FoolsGoldState(NamedTuple):
    """FoolsGold memory: `history` `[N, d]`, row k = sum of all rows client k has sent."""

    history: Tensor


@dataclass(frozen=True)
class FoolsGold(Aggregator):
    """Weighted mean sum_i a_i x_i / sum_i a_i with FoolsGold weights of the update histories.

    Fung et al., RAID 2020 (see `foolsgold_weights`). Rows whose histories point the same way
    (sybils) get weight 0; if every weight is 0 the result is the zero update. Stateful:
    `agg(x, state=None, clients=None) -> (value [d], FoolsGoldState)`; `clients` (int `[n]`)
    says which client sent each row (default 0..n-1); the history grows to new clients.
    """

    confidence: float = 1.0
    name: ClassVar[str] = "foolsgold"
    stateful: ClassVar[bool] = True

    def __post_init__(self) -> None:
        set_field(self, "confidence", need_float(self.name, "confidence", self.confidence))

    def __call__(
        self, x: Tensor, *, state: FoolsGoldState | None = None, clients: Tensor | None = None
    ) -> tuple[Tensor, FoolsGoldState]:
        n, d = check_matrix(self.name, x)
        self.check(n)
        clients = _client_ids(clients, n)
        history = _add_to_history(state, clients, x)
        everyone = n == history.shape[0] and bool((clients == torch.arange(n)).all())
        weights = foolsgold_weights(history if everyone else history[clients], self.confidence)
        total = weights.sum()
        value = weighted_rows_sum(weights / total, x) if total > 0 else x.new_zeros(d)
        return value, FoolsGoldState(history)


def _add_to_history(state: FoolsGoldState | None, clients: Tensor, x: Tensor) -> Tensor:
    """A new `[N, d]` history: the old one (zeros for new clients) plus row i at clients[i]."""
    d = x.shape[1]
    size = int(clients.max()) + 1
    if state is None:
        return x.new_zeros(size, d).index_add_(0, clients, x)
    old = state.history
    if not isinstance(old, Tensor) or old.dim() != 2 or old.shape[1] != d:
        shape = tuple(old.shape) if isinstance(old, Tensor) else type(old).__name__
        raise DataError(
            f"foolsgold: state history has shape {shape}, expected [N, {d}]; pass the state "
            "returned by the previous call on the same model"
        )
    history = x.new_zeros(max(size, old.shape[0]), d)
    history[: old.shape[0]] = old
    return history.index_add_(0, clients, x)


def _client_ids(clients: Tensor | None, n: int) -> Tensor:
    if clients is None:
        return torch.arange(n)
    ok = isinstance(clients, Tensor) and clients.shape == (n,) and not clients.is_floating_point()
    if not ok or (clients.numel() and (int(clients.min()) < 0 or clients.unique().numel() != n)):
        raise DataError(f"foolsgold: clients must be {n} distinct non-negative ints, got {clients}")
    return clients.long()


@dataclass(frozen=True)
class DnC(Aggregator):
    """Divide and conquer: drop outliers along the top singular direction of random coordinates.

    Shejwalkar, Houmansadr, "Manipulating the Byzantine: optimizing model poisoning attacks and
    defenses for federated learning", NDSS 2021, Algorithm 2. Each of `niters` rounds draws b
    coordinates without replacement (all if b >= d), centres the rows on them, scores row i by
    <x_i - mean, v>^2 for the top right singular vector v, and keeps the n - floor(c f) lowest
    scores (ties: lower row). Result: mean of the rows kept in the most rounds (the intersection
    of the kept sets whenever it is not empty). `agg(x, generator=g)`; `[n, d] -> [d]`.
    """

    f: int
    niters: int = 5
    c: float = 1.0
    b: int = 10_000
    name: ClassVar[str] = "dnc"
    randomized: ClassVar[bool] = True

    def __post_init__(self) -> None:
        set_field(self, "f", need_int(self.name, "f", self.f, 0))
        set_field(self, "niters", need_int(self.name, "niters", self.niters, 1))
        set_field(self, "c", need_float(self.name, "c", self.c))
        set_field(self, "b", need_int(self.name, "b", self.b, 1))

    def check(self, n: int) -> None:
        super().check(n)
        removed = int(self.c * self.f)
        need_rows(self, n, n > removed, "n > floor(c f)", "lower f or c")

    def __call__(self, x: Tensor, *, generator: torch.Generator) -> Tensor:
        n, d = check_matrix(self.name, x)
        self.check(n)
        generator = check_generator(self.name, generator)
        keep = n - int(self.c * self.f)
        votes = torch.zeros(n, dtype=torch.long)
        for _ in range(self.niters):
            if self.b >= d:
                sub = x
            else:
                picked = torch.randperm(d, generator=generator, device=generator.device)
                sub = x[:, picked[: self.b].to(x.device)]
            centered = (sub - sub.mean(dim=0)).double()
            # top right singular vector v: centered @ v = s u with (s^2, u) the top eigenpair
            eigenvalues, eigenvectors = small_eigh(centered @ centered.T)
            scores = eigenvalues[-1] * eigenvectors[:, -1] ** 2
            votes[scores.sort(stable=True).indices[:keep]] += 1
        good = (votes == votes.max()).double()
        return weighted_rows_sum(good / good.sum(), x)


@dataclass(frozen=True)
class FLTrust(Aggregator):
    """Trust-weighted mean of rows rescaled to the norm of the server's own update g0.

    Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust federated learning via trust
    bootstrapping", NDSS 2021: t_i = relu(cos(x_i, g0)), result = sum_i t_i (||g0|| / ||x_i||)
    x_i / sum_i t_i; the zero update if every t_i is 0. g0 is the server's update on its small
    root dataset: `agg(x, reference=g0)`; `[n, d], [d] -> [d]`.
    """

    name: ClassVar[str] = "fltrust"
    needs_reference: ClassVar[bool] = True

    def __call__(self, x: Tensor, *, reference: Tensor) -> Tensor:
        n, d = check_matrix(self.name, x)
        self.check(n)
        g0 = check_point(self.name, "reference", reference, x)
        g0_norm = torch.linalg.vector_norm(g0).double()
        norms = torch.linalg.vector_norm(x, dim=1).double()
        scale = norms * g0_norm
        trust = torch.where(scale > 0, (x @ g0).double() / scale, 0.0).clamp(min=0.0)
        total = trust.sum()
        if total <= 0:
            return x.new_zeros(d)
        weights = torch.where(norms > 0, trust * g0_norm / norms, 0.0) / total
        return weighted_rows_sum(weights, x)
