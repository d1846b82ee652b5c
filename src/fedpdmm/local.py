"""The local solver: K steps of SGD on f_i(x) + (rho_i / 2) ||x - v_i||^2 for many clients at once.

FedAvg trains with rho = 0; PDMM's inexact x-update is the same problem with rho_i = c d_i and the
prox centre v_i built from the duals (see `fedpdmm.algorithms`). Every client's batch indices come from
a generator seeded by (seed, client, round) alone, so a client computes the same batches whether it is
simulated here beside the others or runs alone on another machine.

Two execution paths compute the same steps: `vmap` (one `torch.func.vmap` of `torch.func.grad` across
the clients; the default, measured faster for the MLP and CNN in `benchmarks/throughput.py`) and
`loop` (one client after another).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from fedpdmm.models import FlatModel
from fedpdmm.seeding import generator


@dataclass(frozen=True)
class ClientData:
    """Every client's training samples, as indices into one shared feature tensor.

    `features` `[N, C, H, W]` is the dataset's training set (never copied); client k owns
    `sample_index[offsets[k] : offsets[k] + sizes[k]]` with labels `labels[...]` at the same positions
    (a data attack may rewrite a Byzantine client's labels there without touching the dataset).
    """

    features: torch.Tensor
    sample_index: torch.Tensor
    labels: torch.Tensor
    offsets: torch.Tensor
    sizes: torch.Tensor

    @classmethod
    def from_parts(
        cls, features: torch.Tensor, labels: torch.Tensor, parts: list[torch.Tensor]
    ) -> ClientData:
        sizes = torch.tensor([len(part) for part in parts], dtype=torch.int64)
        offsets = torch.cumsum(sizes, 0) - sizes
        index = torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
        return cls(features, index, labels[index], offsets, sizes)

    @property
    def num_clients(self) -> int:
        return len(self.sizes)

    def client_labels(self, client: int) -> torch.Tensor:
        start = int(self.offsets[client])
        return self.labels[start : start + int(self.sizes[client])]

    def with_labels(self, clients: torch.Tensor, transform) -> ClientData:
        """A copy in which `transform(labels)` replaced the labels of `clients`."""
        labels = self.labels.clone()
        for client in clients.tolist():
            start, size = int(self.offsets[client]), int(self.sizes[client])
            labels[start : start + size] = transform(labels[start : start + size])
        return replace(self, labels=labels)


def batch_positions(
    data: ClientData, clients: torch.Tensor, round_index: int, steps: int, batch_size: int, seed: int
) -> torch.Tensor:
    """Positions into `data.sample_index`, `[m, steps, batch_size]`, drawn uniformly with replacement.

    Client k's draws in round t come from `generator(seed, "batches", k, t)` only.
    """
    rows = []
    for client in clients.tolist():
        gen = generator(seed, "batches", client, round_index)
        draws = torch.randint(int(data.sizes[client]), (steps, batch_size), generator=gen)
        rows.append(draws + data.offsets[client])
    return torch.stack(rows)


def _loss_of_views(model: FlatModel):
    def loss(params: dict[str, torch.Tensor], inputs: torch.Tensor, labels: torch.Tensor):
        return F.cross_entropy(functional_call(model.module, params, (inputs,)), labels)

    return loss


def _views(model: FlatModel, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Batched views `[m, *shape]` of the rows of `flat` `[m, d]` as named parameters."""
    rows = flat.shape[0]
    return {
        name: flat[:, offset : offset + shape.numel()].view(rows, *shape)
        for name, shape, offset in zip(model.names, model.shapes, model.offsets, strict=True)
    }


def train(
    model: FlatModel,
    start: torch.Tensor,
    data: ClientData,
    clients: torch.Tensor,
    round_index: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    center: torch.Tensor | None = None,
    rho: torch.Tensor | float = 0.0,
    mode: Literal["vmap", "loop"] = "vmap",
) -> torch.Tensor:
    """K SGD steps for each client in `clients` from `start` `[m, d]`; returns the new `[m, d]`.

    Objective of row k: cross-entropy on client k's data + (rho_k / 2) ||x - center_k||^2, where
    `rho` is a float or a `[m]` tensor and `center` `[m, d]` (ignored where rho is 0).
    """
    params = start.clone()
    positions = batch_positions(data, clients, round_index, steps, batch_size, seed)
    rho_column = torch.as_tensor(rho, dtype=params.dtype).reshape(-1, 1)
    use_prox = center is not None and bool((rho_column != 0).any())
    views = _views(model, params)
    grad_fn = grad(_loss_of_views(model))
    batched_grad = vmap(grad_fn)
    for step in range(steps):
        batch = positions[:, step]
        inputs = data.features[data.sample_index[batch]]
        labels = data.labels[batch]
        if use_prox:
            pull = (params - center) * rho_column
        if mode == "vmap":
            grads = batched_grad(views, inputs, labels)
        else:
            singles = [
                grad_fn({name: view[k] for name, view in views.items()}, inputs[k], labels[k])
                for k in range(params.shape[0])
            ]
            grads = {name: torch.stack([g[name] for g in singles]) for name in views}
        for name, view in views.items():
            view.sub_(grads[name], alpha=lr)
        if use_prox:
            params.sub_(pull, alpha=lr)
    return params


def evaluate(
    model: FlatModel,
    params: torch.Tensor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk: int = 4096,
    models_per_chunk: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean cross-entropy `[m]` of each row of `params` `[m, d]` on one labelled set.

    Rows with non-finite parameters get NaN for both.
    """
    count = params.shape[0]
    correct = torch.zeros(count, dtype=torch.float64)
    total_loss = torch.zeros(count, dtype=torch.float64)
    batched_logits = vmap(model.logits, in_dims=(0, None))
    with torch.no_grad():
        for first in range(0, count, models_per_chunk):
            rows = params[first : first + models_per_chunk]
            for begin in range(0, len(labels), chunk):
                x, y = inputs[begin : begin + chunk], labels[begin : begin + chunk]
                logits = batched_logits(rows, x)
                predictions = logits.argmax(-1)
                correct[first : first + len(rows)] += (predictions == y).sum(-1).double()
                losses = F.cross_entropy(
                    logits.flatten(0, 1), y.repeat(len(rows)), reduction="none"
                ).view(len(rows), -1)
                total_loss[first : first + len(rows)] += losses.double().sum(-1)
    accuracy = correct / len(labels)
    loss = total_loss / len(labels)
    finite = torch.isfinite(params).all(dim=1)
    accuracy[~finite] = float("nan")
    loss[~finite] = float("nan")
    return accuracy, loss
