"""Models as flat parameter vectors: logistic regression, MLP and configurable CNNs (LeNet-5 by
default).

Everything outside this module (and `local.py`) sees a model as a flat float32 tensor `[d]` and many
models as `[n, d]`. `FlatModel` is the boundary: it lays the module's parameters out in one vector,
initialises that vector from a seeded generator, and evaluates the module functionally
(`torch.func.functional_call`) on any flat vector, so `torch.func.vmap` can run many models at once.
The module itself lives on the meta device and is never trained in place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fedpdmm.errors import ConfigError

MODELS = ("logreg", "mlp", "cnn")


@dataclass(frozen=True)
class ConvSpec:
    """The convolutional part of `cnn`: `channels` conv widths with `kernel` x `kernel` filters
    and `padding` (None: kernel // 2, which keeps the size for odd kernels), each followed by a
    ReLU; a 2x2 max-pool after every convolution (`pool = "each"`) or after the last one
    (`"last"`). `dropout`: the drop probability after the convolutions, then after each hidden
    linear layer (one value for all places, or one per place; the last value repeats).
    `last_relu` False: no ReLU between the last convolution and its pooling (the MNIST network
    in the bucketing paper's sibling repository and a fork of its own, conv-ReLU-conv-pool,
    against PyTorch's example, conv-ReLU-conv-ReLU-pool). `dropout_masks`: how clients draw
    their dropout masks (`fedpdmm.batched.DropoutMasks`: each its own, one shared per step, or
    one fixed for the run). `channel_dropout`: the dropout after the convolutions drops whole
    channels (`nn.Dropout2d`, as the sibling repository and PyTorch's MNIST example of 2020)
    instead of single activations.

    The default is LeNet-5: channels (6, 16), 5x5 with padding 2, pooling after each, hidden
    (120, 84). PyTorch's MNIST example, on which Karimireddy, He and Jaggi's network is built,
    is channels (32, 64), kernel 3, padding 0, pool "last", hidden (128,), dropout (0.25, 0.5).
    """

    channels: tuple[int, ...] = (6, 16)
    kernel: int = 5
    padding: int | None = None
    pool: str = "each"
    dropout: tuple[float, ...] = (0.0,)
    last_relu: bool = True
    dropout_masks: str = "client"
    channel_dropout: bool = False

    def dropout_at(self, place: int) -> float:
        return self.dropout[min(place, len(self.dropout) - 1)] if self.dropout else 0.0

    @property
    def has_dropout(self) -> bool:
        return any(p > 0 for p in self.dropout)


DEFAULT_HIDDEN = {"mlp": (200,), "cnn": (120, 84)}


def _conv_net(
    input_shape: tuple[int, int, int], num_classes: int, hidden: Sequence[int], conv: ConvSpec
) -> nn.Module:
    """`conv`'s convolutions and pooling, then the hidden linear layers (ReLU), then the output
    layer; `nn.Dropout` (`nn.Dropout2d` for channel dropout) where `conv.dropout` puts one
    (identity unless trained by the batched path, which draws the masks from seeded
    generators)."""
    channels, height, width = input_shape
    padding = conv.kernel // 2 if conv.padding is None else conv.padding
    layers: list[nn.Module] = []
    size = (height, width)
    count = len(conv.channels)
    for index, out_channels in enumerate(conv.channels):
        layers.append(nn.Conv2d(channels, out_channels, conv.kernel, padding=padding))
        if conv.last_relu or index < count - 1:
            layers.append(nn.ReLU())
        size = tuple(s + 2 * padding - conv.kernel + 1 for s in size)
        if conv.pool == "each" or index == count - 1:
            layers.append(nn.MaxPool2d(2))
            size = tuple(s // 2 for s in size)
        if min(size) < 1:
            raise ConfigError(
                f"model.name='cnn' with channels {list(conv.channels)}, kernel {conv.kernel}, "
                f"padding {padding} and pool {conv.pool!r} shrinks {height}x{width} images to "
                "nothing; use fewer convolutions, padding, pool='last', or 'mlp'"
            )
        channels = out_channels
    if conv.dropout_at(0) > 0:
        drop = nn.Dropout2d if conv.channel_dropout else nn.Dropout
        layers.append(drop(conv.dropout_at(0)))
    layers.append(nn.Flatten())
    width_in = channels * size[0] * size[1]
    for place, units in enumerate(hidden, start=1):
        layers += [nn.Linear(width_in, units), nn.ReLU()]
        if conv.dropout_at(place) > 0:
            layers.append(nn.Dropout(conv.dropout_at(place)))
        width_in = units
    layers.append(nn.Linear(width_in, num_classes))
    return nn.Sequential(*layers)


def build_module(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    hidden: Sequence[int] | None = None,
    conv: ConvSpec | None = None,
) -> nn.Module:
    """The `nn.Module` for `name`, built on the meta device (its parameters hold no data), in
    eval mode (its dropout layers are the identity when evaluated). `hidden` None: the model's
    default widths (`DEFAULT_HIDDEN`)."""
    inputs = math.prod(input_shape)
    if hidden is None:
        hidden = DEFAULT_HIDDEN.get(name, ())
    with torch.device("meta"):
        if name == "logreg":
            return nn.Sequential(nn.Flatten(), nn.Linear(inputs, num_classes)).eval()
        if name == "mlp":
            layers: list[nn.Module] = [nn.Flatten()]
            width = inputs
            for size in hidden:
                layers += [nn.Linear(width, size), nn.ReLU()]
                width = size
            layers.append(nn.Linear(width, num_classes))
            return nn.Sequential(*layers).eval()
        if name == "cnn":
            return _conv_net(input_shape, num_classes, hidden, conv or ConvSpec()).eval()
    raise ConfigError(f"unknown model.name {name!r}; choose one of {', '.join(MODELS)}")


@dataclass(frozen=True)
class FlatModel:
    """A module whose parameters are read from one flat vector (see the module docstring)."""

    module: nn.Module
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    dim: int
    dropout_masks: str = "client"  # how clients draw dropout masks (`ConvSpec`)

    @classmethod
    def build(
        cls,
        name: str,
        input_shape: tuple[int, int, int],
        num_classes: int,
        hidden: Sequence[int] | None = None,
        conv: ConvSpec | None = None,
    ) -> FlatModel:
        module = build_module(name, input_shape, num_classes, hidden, conv)
        names, shapes, offsets = [], [], []
        offset = 0
        for param_name, param in module.named_parameters():
            names.append(param_name)
            shapes.append(param.shape)
            offsets.append(offset)
            offset += param.numel()
        masks = conv.dropout_masks if name == "cnn" and conv is not None else "client"
        return cls(module, tuple(names), tuple(shapes), tuple(offsets), offset, masks)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of `flat` `[d]` as the module's named parameters."""
        return {
            name: flat[offset : offset + shape.numel()].view(shape)
            for name, shape, offset in zip(self.names, self.shapes, self.offsets, strict=True)
        }

    def init(self, generator: torch.Generator) -> torch.Tensor:
        """A float32 `[d]` initial vector: weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

        This is PyTorch's default scale for `nn.Linear` and `nn.Conv2d`, drawn from `generator`.
        """
        flat = torch.empty(self.dim)
        fan_in = 1
        for name, shape, offset in zip(self.names, self.shapes, self.offsets, strict=True):
            if name.endswith("weight"):
                fan_in = math.prod(shape[1:])
            bound = 1.0 / math.sqrt(fan_in)
            values = torch.rand(shape.numel(), generator=generator) * (2 * bound) - bound
            flat[offset : offset + shape.numel()] = values
        return flat

    def logits(self, flat: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Logits `[B, classes]` of the model `flat` `[d]` on `inputs` `[B, C, H, W]`."""
        return functional_call(self.module, self.unflatten(flat), (inputs,))

    def loss(self, flat: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the model `flat` on a batch."""
        return F.cross_entropy(self.logits(flat, inputs), labels)
