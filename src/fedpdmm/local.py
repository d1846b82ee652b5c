"""The local solver: K steps of SGD on f_i(x) + (rho_i / 2) ||x - v_i||^2 for many clients at once.

FedAvg trains with rho = 0; PDMM's inexact x-update is the same problem with rho_i = c d_i and the
prox centre v_i built from the duals (see `fedpdmm.algorithms`). Every client's batch indices come
from a generator seeded by (seed, client, round) alone, so a client computes the same batches
whether it is simulated here beside the others or runs alone on another machine.

Three execution paths take the same steps (equal up to float rounding, see `tests/test_local.py`):
- `fused`, for Linear/ReLU stacks (`logreg`, `mlp`): a hand-written forward and backward with
  batched matmuls whose weight gradient is accumulated in place into the parameter rows
  (`baddbmm_`); clients go in chunks of about `FUSED_CHUNK_BYTES` of parameters, each chunk taking
  all K steps while its parameters stay in cache, and the prox term is one in-place interpolation
  x <- x + lr rho (v - x) before the gradient is subtracted;
- `batched`, for stacks of convolutions, ReLU, 2x2 max-pooling, dropout and linear layers
  (every `cnn`): one grouped convolution over all clients' models per layer and batched matrix
  products, with autograd (`fedpdmm.batched`); the only path that applies dropout, from each
  client's seeded stream;
- `vmap`: `torch.func.vmap` of `torch.func.grad` across all clients at once (any model);
- `loop`: `torch.func.grad` for one client after another, each taking all K steps (any model).
`auto` (the default) picks `fused` where it applies, else `batched` for models with convolutions
and `vmap` for the rest.

Measured with `benchmarks/throughput.py` (1 thread, 2 shared busy cores; samples/s, medians;
batch 64) at 10 | 100 clients. MNIST MLP 784-200-10: fused 50.7k | 52.9k, vmap 30.6k | 35.4k,
loop 21.1k | 30.3k; MNIST logreg: fused 170k | 169k, vmap 104k | 141k, loop 44k | 47k; LeNet CNN
on MNIST 28x28: loop 4.0k | 0.94k, vmap 2.4k | 0.55k; on Olivetti 64x64: loop 500 | 645,
vmap 260 | 296 (the load changed between rows: compare within a row). Inside the engine, the MLP
trained at 0.99 | 0.82 (FedAvg) and 0.74 | 0.70 (PDMM, with its prox term) of the throughput of a
bare `nn.Module` + `torch.optim.SGD` loop on all clients' samples as one batch, measured in the
same rounds; `vmap` reached 0.55 | 0.48 of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from fedpdmm import batched
from fedpdmm.aggregators._kernels import finite_rows
from fedpdmm.models import FlatModel
from fedpdmm.seeding import generator


@dataclass(frozen=True)
class ClientData:
    """Every client's training samples, as indices into one shared feature tensor.

    `features` `[N, C, H, W]` is the dataset's training set (never copied); client k owns
    `sample_index[offsets[k] : offsets[k] + sizes[k]]` with labels `labels[...]` at the same
    positions (a data attack may rewrite a Byzantine client's labels there without touching the
    dataset).
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
    data: ClientData,
    clients: torch.Tensor,
    round_index: int,
    steps: int,
    batch_size: int,
    seed: int,
) -> torch.Tensor:
    """Positions into `data.sample_index` `[m, steps, batch_size]`, uniform with replacement.

    Client k's draws in round t come from `generator(seed, "batches", k, t)` only (on the CPU,
    whatever the device of `data`: the same batches on every device); the positions are returned
    on the device of `data.sample_index`.
    """
    rows = []
    for client in clients.tolist():
        gen = generator(seed, "batches", client, round_index)
        size = int(data.sizes[client])
        draws = torch.randint(size, (steps, batch_size), generator=gen, device=gen.device)
        rows.append(draws + int(data.offsets[client]))
    return torch.stack(rows).to(data.sample_index.device)


Mode = Literal["auto", "fused", "batched", "vmap", "loop"]
MODES = ("auto", "fused", "batched", "vmap", "loop")

FUSED_CHUNK_BYTES = 2 * 2**20
"""`fused` trains together clients with this many parameter bytes (kept in cache) per thread^2.

At one thread and 100 MNIST MLP clients (636 KB each; batch 32), chunks of 1.3 to 2 MiB (two or
three clients) trained at 35-38k samples/s against 27-33k with 4 to 8 MiB, measured in the same
run. More threads need larger operations to pay for their synchronisation: with 2 threads on a
busy machine, 16 MiB chunks ran about twice as fast as 4 MiB chunks at 100 clients."""


@dataclass(frozen=True)
class LinearLayer:
    """Where one `nn.Linear` of a Linear/ReLU stack lies in the flat vector."""

    weight: int  # offset of the weight [out, in]
    bias: int  # offset of the bias [out]
    shape: tuple[int, int]  # (out, in)

    def views(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights `[m, out, in]` and biases `[m, out]` inside `rows` `[m, d]`."""
        out_features, in_features = self.shape
        end = self.weight + out_features * in_features
        weight = rows[:, self.weight : end].view(-1, out_features, in_features)
        return weight, rows[:, self.bias : self.bias + out_features]


def linear_relu_layers(model: FlatModel) -> tuple[LinearLayer, ...] | None:
    """The layers of `model` if it is `[Flatten,] Linear (, ReLU, Linear)*` with biases, else None.

    `logreg` and `mlp` are such stacks and take the `fused` path of `train`.
    """
    children = list(model.module.named_children())
    if children and type(children[0][1]) is nn.Flatten:
        children = children[1:]
    if len(children) % 2 == 0:
        return None
    offsets = dict(zip(model.names, model.offsets, strict=True))
    layers = []
    for position, (name, child) in enumerate(children):
        if position % 2 == 1:
            if type(child) is not nn.ReLU:
                return None
            continue
        if type(child) is not nn.Linear or child.bias is None:
            return None
        shape = (child.out_features, child.in_features)
        layers.append(LinearLayer(offsets[f"{name}.weight"], offsets[f"{name}.bias"], shape))
    return tuple(layers)


_relu_backward = torch.ops.aten.threshold_backward.default


def fused_gradients(
    layers: tuple[LinearLayer, ...],
    rows: torch.Tensor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    views: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer l: (input activations a_{l-1} `[m, B, in]`, delta_l `[m, B, out]`).

    A hand-written backward of the mean cross-entropy of the Linear/ReLU stack `layers`, batched
    over the models `rows` `[m, d]` with inputs `[m, B, ...]` and labels `[m, B]`:
    delta_L = softmax(z_L) - onehot(y), delta_l = (delta_{l+1} W_{l+1}) * [a_l > 0], and then
    grad W_l = delta_l^T a_{l-1} / B, grad b_l = sum_B delta_l / B. `views`: the layers'
    (weight, bias) views of `rows` when the caller has them already.
    """
    if views is None:
        views = [layer.views(rows) for layer in layers]
    activation = inputs.reshape(inputs.shape[0], inputs.shape[1], -1)
    activations = []
    for index, (weight, bias) in enumerate(views):
        activations.append(activation)
        activation = torch.baddbmm(bias.unsqueeze(1), activation, weight.transpose(1, 2))
        if index < len(layers) - 1:
            activation = activation.relu_()
    delta = torch.softmax(activation, dim=2)
    delta.scatter_add_(2, labels.unsqueeze(2), torch.full_like(delta[..., :1], -1.0))
    pairs = []
    for index in range(len(layers) - 1, -1, -1):
        pairs.append((activations[index], delta))
        if index > 0:
            delta = _relu_backward(torch.bmm(delta, views[index][0]), activations[index], 0)
    return pairs[::-1]


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


def _has_convolution(model: FlatModel) -> bool:
    convolutions = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return any(isinstance(module, convolutions) for module in model.module.modules())


def _has_dropout(model: FlatModel) -> bool:
    drops = (nn.Dropout, nn.Dropout2d)
    return any(isinstance(m, drops) and m.p > 0 for m in model.module.modules())


BATCHED_CHUNK = 1 << 30
"""`batched` trains this many clients' grouped convolutions at once."""


def _rho_column(rho: torch.Tensor | float, count: int, dtype: torch.dtype) -> torch.Tensor:
    values = torch.as_tensor(rho, dtype=dtype).reshape(-1, 1)
    if len(values) not in (1, count):
        raise ValueError(
            f"rho has {len(values)} values for {count} clients; "
            "give a float or one value per client"
        )
    return values.expand(count, 1)


GATHER_ELEMENTS = 4 * 2**20
"""`train` gathers a chunk's samples of all K steps at once when they hold at most this many
values (16 MiB of float32), else step by step."""


def _gather(
    flat_features: torch.Tensor,
    data: ClientData,
    positions: torch.Tensor,
    buffer: torch.Tensor | None = None,
) -> torch.Tensor:
    """The samples at `positions` (into `data.sample_index`), shaped `[*positions, C, H, W]`;
    written into `buffer` (resized as needed) when one is given."""
    index = data.sample_index[positions.flatten()]
    if buffer is None:
        rows = torch.index_select(flat_features, 0, index)
    else:
        buffer.resize_(len(index), flat_features.shape[1])
        rows = torch.index_select(flat_features, 0, index, out=buffer)
    return rows.view(*positions.shape, *data.features.shape[1:])


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
    center_scale: float = 1.0,
    rho: torch.Tensor | float = 0.0,
    linear: torch.Tensor | None = None,
    mode: Mode = "auto",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    velocity: torch.Tensor | None = None,
) -> torch.Tensor:
    """K SGD steps for each client in `clients` from `start` `[m, d]`; returns the new `[m, d]`.

    Objective of row k: cross-entropy on client k's data + <linear_k, x> + (rho_k / 2)
    ||x - v_k||^2, where `rho` is a float or a `[m]` tensor, the prox centre v = `center_scale *
    center` with `center` `[m, d]` (ignored where rho is 0; scaled chunk by chunk) and `linear`
    `[m, d]` (a fixed gradient offset, SCAFFOLD's correction c - c_k; None for none). Each step
    is x <- x - lr (grad f(x) + linear + rho (x - v)) = x + lr rho (v - x) - lr linear
    - lr grad f(x).

    With `momentum` mu or `weight_decay` lambda the step is `torch.optim.SGD`'s (dampening 0, no
    Nesterov) on the whole objective: g = grad f(x) + linear + rho (x - v) + lambda x,
    u <- mu u + g, x <- x - lr u. `velocity` `[m, d]` is the buffer u of each row (zeros for a
    fresh one: its first step is then u = g, as in PyTorch), updated in place; it is required
    when `momentum` is not 0.
    A client with no samples (the Byzantine clients of `data.byzantine_data = false`) has
    f = 0: its steps follow the rest of its objective alone (`without_data`).
    `mode` picks the execution path (see the module docstring); all give the same result up to
    float rounding.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not a training path; choose one of {', '.join(MODES)}")
    layers = linear_relu_layers(model) if mode in ("auto", "fused") else None
    if mode == "fused" and layers is None:
        raise ValueError(
            "mode='fused' needs a Linear/ReLU model (logreg, mlp); use 'vmap' or 'loop'"
        )
    drops = _has_dropout(model)
    if drops and mode not in ("auto", "batched"):
        raise ValueError(f"mode={mode!r} cannot apply dropout; use 'batched' (or 'auto')")
    stack = None
    if mode == "batched" or (mode == "auto" and layers is None and _has_convolution(model)):
        stack = batched.stack_layers(model)
        if stack is None and mode == "batched":
            raise ValueError("mode='batched' needs a stack of Conv2d/ReLU/MaxPool2d/Linear layers")
        if stack is not None:
            mode = "batched"
    count = start.shape[0]
    heavy_ball = momentum != 0 or weight_decay != 0
    if momentum != 0 and (velocity is None or velocity.shape != start.shape):
        raise ValueError(
            f"momentum={momentum} needs a velocity buffer shaped like start {tuple(start.shape)}"
        )
    if heavy_ball and velocity is None:
        velocity = torch.zeros_like(start, memory_format=torch.contiguous_format)
    empty = data.sizes.index_select(0, clients.to(data.sizes.device)).to(start.device) == 0
    if bool(empty.any()):  # every row of the result is written below
        params = torch.empty_like(start, memory_format=torch.contiguous_format)
        rho_column = _rho_column(rho, count, params.dtype)
        options = dict(steps=steps, lr=lr, momentum=momentum, weight_decay=weight_decay)
        for rows, has_data in (
            (empty.nonzero().flatten(), False),
            ((~empty).nonzero().flatten(), True),
        ):
            if len(rows) == 0:
                continue
            buffer = None if velocity is None else velocity[rows]
            part = dict(
                center=None if center is None else center[rows],
                center_scale=center_scale,
                rho=rho_column[rows].flatten(),
                linear=None if linear is None else linear[rows],
                velocity=buffer,
                **options,
            )
            if has_data:
                params[rows] = train(
                    model,
                    start[rows],
                    data,
                    clients[rows],
                    round_index,
                    batch_size=batch_size,
                    seed=seed,
                    mode=mode,
                    **part,
                )
            else:
                params[rows] = without_data(start[rows], **part)
            if buffer is not None:
                velocity[rows] = buffer
        return params
    params = start.clone(memory_format=torch.contiguous_format)
    positions = batch_positions(data, clients, round_index, steps, batch_size, seed)
    rho_column = _rho_column(rho, count, params.dtype)
    use_prox = center is not None and bool((rho_column != 0).any())
    if mode == "auto" and layers is None:
        mode = "loop" if _has_convolution(model) else "vmap"
    if layers is not None:
        chunk_bytes = FUSED_CHUNK_BYTES * torch.get_num_threads() ** 2
        chunk = max(1, chunk_bytes // (params.shape[1] * params.element_size()))
    elif mode == "batched":
        chunk = BATCHED_CHUNK
    else:
        chunk = 1 if mode == "loop" else count
    dropout = None
    if drops:
        dropout = batched.DropoutMasks(
            clients.tolist(), seed, round_index, params.device, mode=model.dropout_masks
        )
    loss_grad = grad(_loss_of_views(model))
    batched_grad = vmap(loss_grad)
    flat_features = data.features.reshape(len(data.features), -1)
    gather_buffer = flat_features.new_empty(0)
    for first in range(0, count, chunk):
        rows = params[first : first + chunk]
        buffer = None if velocity is None else velocity[first : first + chunk]
        if use_prox:
            pull = lr * rho_column[first : first + chunk]
            if bool((pull == pull[0]).all()):
                pull = float(pull[0])
            anchor = center[first : first + chunk]
            if center_scale != 1:
                anchor = anchor * center_scale
        views = [layer.views(rows) for layer in layers] if layers is not None else None
        chunk_positions = positions[first : first + chunk]  # [c, K, B]
        chunk_labels = data.labels[chunk_positions]
        whole = chunk_positions.numel() * flat_features.shape[1] <= GATHER_ELEMENTS
        if whole:  # every step's samples in one gather, into one buffer for all chunks
            gathered = _gather(flat_features, data, chunk_positions, gather_buffer)
        for step in range(steps):
            if whole:
                batch_inputs = gathered[:, step]
            else:
                batch_inputs = _gather(flat_features, data, chunk_positions[:, step])
            inputs = batch_inputs.to(params.dtype)
            labels = chunk_labels[:, step]
            flat_grad = None
            if views is not None:
                pairs = fused_gradients(layers, rows, inputs, labels, views)
            elif mode == "batched":
                masks = None if dropout is None else dropout.rows(first, len(rows))
                flat_grad = batched.gradients(stack, rows, inputs, labels, masks)
            elif mode == "loop":
                singles = loss_grad(model.unflatten(rows[0]), inputs[0], labels[0])
                grads = {name: value.unsqueeze(0) for name, value in singles.items()}
            else:
                grads = batched_grad(_views(model, rows), inputs, labels)
            if buffer is not None:
                prox = (rho_column[first : first + chunk], anchor) if use_prox else None
                shift = None if linear is None else linear[first : first + chunk]
                if views is not None:
                    gradient = fused_into(layers, buffer, pairs, momentum, batch_size)
                elif flat_grad is not None:
                    gradient = buffer.mul_(momentum).add_(flat_grad)
                else:
                    gradient = grads_into(model, buffer, grads, momentum)
                heavy_ball_step(rows, gradient, lr, weight_decay, prox, shift)
                continue
            if use_prox:  # x <- x + lr rho (v - x) = (1 - lr rho) x + lr rho v
                rows.lerp_(anchor, pull)
            if linear is not None:
                rows.sub_(linear[first : first + chunk], alpha=lr)
            if views is not None:
                for (weight, bias), (activation, delta) in zip(views, pairs, strict=True):
                    weight.baddbmm_(delta.transpose(1, 2), activation, alpha=-lr / batch_size)
                    bias.add_(delta.sum(dim=1), alpha=-lr / batch_size)
            elif flat_grad is not None:
                rows.sub_(flat_grad, alpha=lr)
            else:
                for name, view in _views(model, rows).items():
                    view.sub_(grads[name], alpha=lr)
    return params


def without_data(
    start: torch.Tensor,
    *,
    steps: int,
    lr: float,
    center: torch.Tensor | None,
    center_scale: float,
    rho: torch.Tensor,
    linear: torch.Tensor | None,
    momentum: float,
    weight_decay: float,
    velocity: torch.Tensor | None,
) -> torch.Tensor:
    """`train`'s steps for clients with no samples (f = 0): the gradient is that of the rest of
    the objective, linear + rho (x - v) + weight_decay x (PDMM's x-update then moves towards
    its prox centre, SCAFFOLD's corrected steps follow c - c_k alone). `velocity`: updated in
    place."""
    params = start.clone(memory_format=torch.contiguous_format)
    buffer = torch.zeros_like(params) if velocity is None else velocity
    rho_column = rho.reshape(-1, 1).to(params.dtype)
    use_prox = center is not None and bool((rho_column != 0).any())
    prox = (rho_column, center * center_scale) if use_prox else None
    for _ in range(steps):
        buffer.mul_(momentum)
        heavy_ball_step(params, buffer, lr, weight_decay, prox, linear)
    return params


def fused_into(
    layers: tuple[LinearLayer, ...],
    buffer: torch.Tensor,
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    momentum: float,
    batch_size: int,
) -> torch.Tensor:
    """`buffer` `[m, d]` <- momentum * buffer + grad f, the gradient accumulated in place from
    the fused backward's (activation, delta) pairs; returns `buffer`."""
    buffer.mul_(momentum)
    for layer, (activation, delta) in zip(layers, pairs, strict=True):
        weight, bias = layer.views(buffer)
        weight.baddbmm_(delta.transpose(1, 2), activation, alpha=1.0 / batch_size)
        bias.add_(delta.sum(dim=1), alpha=1.0 / batch_size)
    return buffer


def grads_into(
    model: FlatModel, buffer: torch.Tensor, grads: dict[str, torch.Tensor], momentum: float
) -> torch.Tensor:
    """`buffer` `[m, d]` <- momentum * buffer + grad f (named gradients `[m, *shape]`)."""
    buffer.mul_(momentum)
    for name, view in _views(model, buffer).items():
        view.add_(grads[name])
    return buffer


def heavy_ball_step(
    rows: torch.Tensor,
    buffer: torch.Tensor,
    lr: float,
    weight_decay: float,
    prox: tuple[torch.Tensor | float, torch.Tensor] | None,
    linear: torch.Tensor | None,
) -> None:
    """The rest of `torch.optim.SGD`'s step, in place, once `buffer` holds mu u + grad f(x):
    u += linear + rho (x - v) + weight_decay x (all at the same x), then x <- x - lr u.
    `prox`: (rho `[m, 1]` or a float, v `[m, d]`)."""
    if prox is not None:
        rho, anchor = prox
        buffer.add_((rows - anchor).mul_(rho))
    if linear is not None:
        buffer.add_(linear)
    if weight_decay != 0:
        buffer.add_(rows, alpha=weight_decay)
    rows.sub_(buffer, alpha=lr)


def fused_logits(
    layers: tuple[LinearLayer, ...], rows: torch.Tensor, inputs: torch.Tensor
) -> torch.Tensor:
    """Logits `[m, N, classes]` of the Linear/ReLU stack `layers` for every model of `rows`
    `[m, d]` on the shared inputs `[N, ...]`.

    The first layer is one matrix product of the inputs with all m weight matrices side by side
    (`[N, in] x [in, m * out]`), so the inputs are read once for every model; the other layers
    are batched products per model.
    """
    activation = inputs.reshape(len(inputs), -1)
    first = layers[0]
    weight, bias = first.views(rows)
    out_features = first.shape[0]
    stacked = weight.reshape(-1, weight.shape[-1])  # [m * out, in]
    hidden = torch.addmm(bias.reshape(1, -1), activation, stacked.t())
    activation = hidden.view(len(inputs), len(rows), out_features).transpose(0, 1)
    for layer in layers[1:]:
        activation = activation.relu()
        weight, bias = layer.views(rows)
        activation = torch.baddbmm(bias.unsqueeze(1), activation, weight.transpose(1, 2))
    return activation


def _shared_input_logits(stack, rows: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """`fedpdmm.batched.logits` of every model of `rows` on the same inputs `[N, ...]`."""
    return batched.logits(stack, rows, inputs.expand(len(rows), *inputs.shape))


def _all_rows_equal(rows: torch.Tensor) -> bool:
    """True when every row of `rows` `[m, d]` equals the first (bitwise, NaN-free)."""
    if not torch.equal(rows[1], rows[0]):
        return False
    return torch.equal(rows, rows[:1].expand_as(rows))


CNN_EVAL_CHUNK = 64
"""`evaluate` scores a CNN on this many samples at a time: their activations stay in cache
(measured, one thread, the bucketing paper's MNIST network: 1,550 samples/s at 64 against
1,040 at 512)."""

EVAL_CHUNK_BYTES = 32 * 2**20
"""`evaluate` scores at once as many (model, sample) pairs as fit activations of this size."""


def evaluate(
    model: FlatModel,
    params: torch.Tensor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk: int | None = None,
    models_per_chunk: int | None = None,
    mode: Literal["auto", "fused", "vmap"] = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean cross-entropy `[m]` of each row of `params` `[m, d]` on one labelled set.

    Rows with non-finite parameters get NaN for both; rows that are all equal (every node at its
    initial model) are scored once. `auto` takes the fused forward of `fused_logits` for
    Linear/ReLU models, the per-model convolutions of `fedpdmm.batched` for CNNs (one model on
    `CNN_EVAL_CHUNK` samples at a time by default) and `torch.func.vmap` of the model
    otherwise; all give the same numbers up to float rounding. They score `models_per_chunk`
    rows on `chunk` samples at a time (by default, 2,048 samples and as many rows as fit about
    `EVAL_CHUNK_BYTES` of activations when fused; 4,096 samples and 16 rows with vmap).
    """
    layers = linear_relu_layers(model) if mode in ("auto", "fused") else None
    if mode == "fused" and layers is None:
        raise ValueError("mode='fused' needs a Linear/ReLU model (logreg, mlp); use 'vmap'")
    if len(params) > 1 and _all_rows_equal(params):  # e.g. every node at its initial model
        accuracy, loss = evaluate(
            model,
            params[:1],
            inputs,
            labels,
            chunk=chunk,
            models_per_chunk=models_per_chunk,
            mode=mode,
        )
        return accuracy.expand(len(params)).clone(), loss.expand(len(params)).clone()
    count = params.shape[0]
    correct = torch.zeros(count, dtype=torch.float64, device=params.device)
    total_loss = torch.zeros(count, dtype=torch.float64, device=params.device)
    if layers is not None:
        width = max(layer.shape[0] for layer in layers)
        chunk = chunk or max(1, min(len(labels), 2048))
        fit = EVAL_CHUNK_BYTES // (params.element_size() * width * chunk)
        models_per_chunk = models_per_chunk or max(1, fit)
        logits_of = partial(fused_logits, layers)
    elif _has_convolution(model) and (stack := batched.stack_layers(model)) is not None:
        chunk, models_per_chunk = chunk or CNN_EVAL_CHUNK, models_per_chunk or 1
        logits_of = partial(_shared_input_logits, stack)
    else:
        chunk, models_per_chunk = chunk or 4096, models_per_chunk or 16
        logits_of = vmap(model.logits, in_dims=(0, None))
    with torch.no_grad():
        for first in range(0, count, models_per_chunk):
            rows = params[first : first + models_per_chunk]
            for begin in range(0, len(labels), chunk):
                x, y = inputs[begin : begin + chunk], labels[begin : begin + chunk]
                logits = logits_of(rows, x.to(rows.dtype))
                correct[first : first + len(rows)] += (logits.argmax(-1) == y).sum(-1).double()
                log_probabilities = torch.log_softmax(logits, dim=-1)
                picked = log_probabilities.gather(-1, y.expand(len(rows), -1).unsqueeze(-1))
                total_loss[first : first + len(rows)] -= picked.squeeze(-1).double().sum(-1)
    accuracy = correct / len(labels)
    loss = total_loss / len(labels)
    finite = finite_rows(params)
    accuracy[~finite] = float("nan")
    loss[~finite] = float("nan")
    return accuracy, loss
