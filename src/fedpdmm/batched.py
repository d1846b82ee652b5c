"""Many models of one layer stack at once: the `batched` training path of `fedpdmm.local`.

A stack is a `Sequential` of `Conv2d` (stride 1, one group, with bias), `ReLU`, 2x2 `MaxPool2d`,
`Dropout`, `Dropout2d` (whole channels), `Flatten` and `Linear` (with bias): every `cnn` of
`fedpdmm.models`, the MLPs and logistic regression, with every convolution and pooling before the
first `Flatten` or `Linear`. For m models (the rows of `[m, d]`) on their own batches
`[m, B, C, H, W]`, each model takes its batch through the convolutional layers in its own calls
(measured 1.5 to 3 times faster on the CPU than one grouped convolution over all models, and
1.5 times faster than one stacked tensor per layer), and the linear layers are batched matrix
products over all models. One autograd pass gives the gradient of the sum of the models' mean
losses, whose row k is model k's gradient (the models share no parameter); its leaves are the
layers' weights and biases, so the backward writes each gradient once.

Dropout is applied with masks drawn from one seeded generator per client and round
(`(seed, "dropout", client, round)`), so a client draws the same masks alone on a Flower node as
among all clients here; or, with `model.dropout_masks`, one mask per step for all clients
(`shared`) or one for the whole run (`fixed`; see `DropoutMasks`). Evaluation never drops (the
modules are in eval mode).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedpdmm.models import FlatModel
from fedpdmm.seeding import generator

__all__ = ["DROPOUT_MASKS", "DropoutMasks", "Layer", "gradients", "logits", "stack_layers"]


@dataclass(frozen=True)
class Layer:
    """One layer of a stack: `kind` in conv, linear, relu, pool, dropout, flatten; where its
    weight and bias lie in the flat vector, its weight shape, padding, drop probability and
    whether dropout drops whole channels (`nn.Dropout2d`)."""

    kind: str
    weight: int = 0
    bias: int = 0
    shape: tuple[int, ...] = ()
    padding: int = 0
    p: float = 0.0
    channel: bool = False

    def mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one model's dropout mask for an activation of `shape` `[B, C, ...]`:
        `shape` itself, or `[B, C, 1, ...]` for channel dropout."""
        return shape[:2] + (1,) * (len(shape) - 2) if self.channel else shape

    def weights(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights `[m, *shape]` and biases `[m, out]` of this layer inside `rows`."""
        size = 1
        for extent in self.shape:
            size *= extent
        weight = rows[:, self.weight : self.weight + size].reshape(-1, *self.shape)
        return weight, rows[:, self.bias : self.bias + self.shape[0]]


def stack_layers(model: FlatModel) -> tuple[Layer, ...] | None:
    """The layers of `model` if it is a stack this module can batch (see the module docstring),
    else None."""
    offsets = dict(zip(model.names, model.offsets, strict=True))
    layers = []
    for name, module in model.module.named_modules():
        if list(module.children()):
            continue
        kind = type(module)
        if kind is nn.Conv2d:
            plain = (
                module.stride == (1, 1)
                and module.dilation == (1, 1)
                and module.groups == 1
                and module.bias is not None
                and isinstance(module.padding, tuple)
                and module.padding[0] == module.padding[1]
                and module.padding_mode == "zeros"
            )
            if not plain:
                return None
            shape = tuple(module.weight.shape)
            layers.append(
                Layer(
                    "conv",
                    offsets[f"{name}.weight"],
                    offsets[f"{name}.bias"],
                    shape,
                    module.padding[0],
                )
            )
        elif kind is nn.Linear:
            if module.bias is None:
                return None
            shape = (module.out_features, module.in_features)
            layers.append(
                Layer("linear", offsets[f"{name}.weight"], offsets[f"{name}.bias"], shape)
            )
        elif kind is nn.ReLU:
            layers.append(Layer("relu"))
        elif kind is nn.MaxPool2d:
            if module.kernel_size not in (2, (2, 2)) or module.stride not in (2, (2, 2)):
                return None
            if module.padding not in (0, (0, 0)) or module.ceil_mode:
                return None
            layers.append(Layer("pool"))
        elif kind is nn.Dropout or kind is nn.Dropout2d:
            layers.append(Layer("dropout", p=float(module.p), channel=kind is nn.Dropout2d))
        elif kind is nn.Flatten:
            layers.append(Layer("flatten"))
        else:
            return None
    if any(layer.kind in ("conv", "pool") for layer in layers[_dense_start(layers) :]):
        return None  # convolutions run before the dense layers (`_forward`)
    covered = sum(math.prod(layer.shape) + layer.shape[0] for layer in layers if layer.shape)
    if covered != model.dim:
        return None  # `gradients` writes every entry of its result from the layers' weights
    return tuple(layers)


MaskSource = Callable[[int, Layer, tuple[int, ...]], torch.Tensor]
"""`masks(position, layer, shape)` -> `[m, *shape]`: the scaled keep-masks of dropout layer
`layer` (the `position`-th layer of the stack) for every model, `shape` one model's activation."""


def _dense_start(layers: tuple[Layer, ...] | list[Layer]) -> int:
    """The position of the first flatten or linear layer (the number of layers if none)."""
    return next(
        (k for k, layer in enumerate(layers) if layer.kind in ("flatten", "linear")), len(layers)
    )


def logits(
    layers: tuple[Layer, ...],
    rows: torch.Tensor,
    inputs: torch.Tensor,
    masks: MaskSource | None = None,
) -> torch.Tensor:
    """Logits `[m, B, classes]` of the m models `rows` `[m, d]` on their inputs
    `[m, B, C, H, W]`; dropout only where `masks` gives masks (None: evaluation)."""
    return _forward(layers, _parameters(layers, rows), inputs, masks)


def _parameters(layers: tuple[Layer, ...], rows: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Each layer's weights `[m, *shape]` and biases `[m, out]` inside `rows` (views; empty
    tensors for layers without parameters)."""
    return [layer.weights(rows) if layer.kind in _WEIGHTED else (_NONE, _NONE) for layer in layers]


_WEIGHTED = ("conv", "linear")
_NONE = torch.empty(0)


def _forward(
    layers: tuple[Layer, ...],
    parameters: list[tuple[torch.Tensor, ...]],
    inputs: torch.Tensor,
    masks: MaskSource | None,
) -> torch.Tensor:
    """`logits` with each layer's weights `[m, *shape]` and biases `[m, out]` given apart
    (empty for layers without parameters).

    The layers before the first flatten or linear one run model by model, each model's batch
    through all of them while its activations are in cache (one stacked `[m, B, C, H, W]`
    tensor per layer ran 1.5 times slower and copied every convolution's output); the
    features are then stacked once and the linear layers are batched products."""
    count, batch = inputs.shape[0], inputs.shape[1]
    split = _dense_start(layers)  # `stack_layers` puts no convolution or pooling after it
    x = inputs
    if split:
        # unbind, not weight[k]: the backward of m selections would write m full-size zero
        # tensors, the backward of one unbind stacks the m gradients once
        unbound = [
            (weight.unbind(0), bias.unbind(0)) if layer.kind == "conv" else None
            for layer, (weight, bias) in zip(layers[:split], parameters[:split], strict=True)
        ]
        drawn: dict[int, torch.Tensor] = {}
        features = []
        for model, x_k in enumerate(inputs.unbind(0)):
            for position, layer in enumerate(layers[:split]):
                if layer.kind == "conv":
                    weights, biases = unbound[position]
                    x_k = F.conv2d(x_k, weights[model], biases[model], padding=layer.padding)
                elif layer.kind == "relu":
                    x_k = F.relu(x_k)
                elif layer.kind == "pool":
                    x_k = F.max_pool2d(x_k, 2)
                elif layer.kind == "dropout" and masks is not None and layer.p > 0:
                    if position not in drawn:  # drawn once per layer, in order of use
                        drawn[position] = masks(position, layer, tuple(x_k.shape))
                    x_k = x_k * drawn[position][model]
            features.append(x_k)
        x = torch.stack(features)
    dense = zip(layers[split:], parameters[split:], strict=True)
    for position, (layer, (weight, bias)) in enumerate(dense, start=split):
        if layer.kind == "relu":
            x = F.relu(x)
        elif layer.kind == "flatten":
            x = x.reshape(count, batch, -1)
        elif layer.kind == "dropout":
            if masks is not None and layer.p > 0:
                x = x * masks(position, layer, tuple(x.shape[1:]))
        elif layer.kind == "linear":
            if x.dim() > 3:
                x = x.reshape(count, batch, -1)
            # weight x^T, transposed, rather than x weight^T: the weight's gradient comes out
            # as [m, out, in], the parameters' layout, not as a transpose to be copied back
            x = torch.baddbmm(bias.unsqueeze(2), weight, x.transpose(1, 2)).transpose(1, 2)
    return x


def gradients(
    layers: tuple[Layer, ...],
    rows: torch.Tensor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    masks: MaskSource | None = None,
) -> torch.Tensor:
    """`[m, d]`: row k is the gradient of model k's mean cross-entropy on its batch
    (`inputs` `[m, B, ...]`, `labels` `[m, B]`)."""
    # one leaf per weight and bias: the gradients of slices of one [m, d] leaf would each
    # be written into a zero [m, d] tensor and summed
    parameters = [
        tuple(part.detach().requires_grad_(layer.kind in _WEIGHTED) for part in pair)
        for layer, pair in zip(layers, _parameters(layers, rows), strict=True)
    ]
    leaves = [part for part in itertools.chain(*parameters) if part.requires_grad]
    with torch.enable_grad():
        out = _forward(layers, parameters, inputs, masks)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), labels.reshape(-1), reduction="sum")
        parts = iter(torch.autograd.grad(loss / inputs.shape[1], leaves))
    grad = torch.empty_like(rows, memory_format=torch.contiguous_format)  # every entry below
    for layer in layers:
        if layer.kind in _WEIGHTED:
            for offset in (layer.weight, layer.bias):
                part = next(parts)
                grad[:, offset : offset + part[0].numel()] = part.reshape(len(rows), -1)
    return grad


DROPOUT_MASKS = ("client", "shared", "fixed")
"""How clients draw dropout masks (`model.dropout_masks`; see `DropoutMasks`)."""


class DropoutMasks:
    """The dropout masks of some clients in one round, by `mode`:

    - `client` (default): client k's masks come, in order of use, from
      `generator(seed, "dropout", k, round)`, whatever the other clients;
    - `shared`: every client gets the same mask at the same step and layer, drawn in order of
      use (step by step, layer by layer) from `generator(seed, "dropout", "shared", round)`;
    - `fixed`: one mask per dropout layer for every client, step and round, the first draws of
      `generator(seed, "dropout", "fixed")`. This is what Karimireddy, He and Jaggi's simulator
      does: `ParallelTrainer.parallel_get` saves the global random state before each worker
      and restores it after, and nothing else draws from it between steps, so every worker
      draws the same masks at every step of the run.

    A client alone draws the same masks as among all, in every mode.
    """

    def __init__(
        self,
        clients: list[int],
        seed: int,
        round_index: int,
        device=None,
        *,
        mode: str = "client",
    ) -> None:
        if mode not in DROPOUT_MASKS:
            raise ValueError(f"dropout masks {mode!r}: choose one of {', '.join(DROPOUT_MASKS)}")
        self.device = device
        self.mode = mode
        if mode == "client":
            self.generators = [generator(seed, "dropout", c, round_index) for c in clients]
        elif mode == "shared":
            self.generators = [generator(seed, "dropout", "shared", round_index)]
        else:
            self.generators = [generator(seed, "dropout", "fixed")]
        self.drawn: list[dict[int, torch.Tensor]] = []  # step (0 if fixed) -> position -> mask
        self.steps_taken: dict[int, int] = {}  # shared: chunk's first row -> steps so far

    def rows(self, first: int, count: int) -> MaskSource:
        """The mask source of the clients `first .. first + count - 1` (a chunk) for its next
        step: call it once per step."""
        if self.mode != "client":
            return self._common_rows(first, count)

        def source(position: int, layer: Layer, shape: tuple[int, ...]) -> torch.Tensor:
            masks = [
                _keep_mask(layer, shape, gen) for gen in self.generators[first : first + count]
            ]
            return torch.stack(masks).to(self.device)

        return source

    def _common_rows(self, first: int, count: int) -> MaskSource:
        """`shared` and `fixed`: one mask for all clients (per step, or for the whole run)."""
        step = 0
        if self.mode == "shared":
            step = self.steps_taken.get(first, 0)
            self.steps_taken[first] = step + 1
        while len(self.drawn) <= step:
            self.drawn.append({})
        masks = self.drawn[step]
        (gen,) = self.generators

        def source(position: int, layer: Layer, shape: tuple[int, ...]) -> torch.Tensor:
            if position not in masks:
                masks[position] = _keep_mask(layer, shape, gen).to(self.device)
            return masks[position].expand(count, *masks[position].shape)

        return source


def _keep_mask(layer: Layer, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """One model's scaled keep-mask (`Layer.mask_shape`) for dropout `layer`, drawn from `gen`."""
    keep = 1.0 - layer.p
    draws = torch.rand(layer.mask_shape(shape), generator=gen, device=gen.device)
    return (draws < keep).float() / keep
