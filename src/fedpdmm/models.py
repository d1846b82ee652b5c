"""Models as flat parameter vectors: logistic regression, MLP and a small LeNet-style CNN.

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


def _lenet(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """LeNet-5 style: two 5x5 convolutions (6 and 16 channels) with 2x2 max pooling, then 120-84.

    Padding 2 on the first convolution keeps small inputs usable: 8x8 digits give 2x2 feature maps,
    28x28 gives 7x7 (after the second convolution, also padded), 64x64 gives 16x16.
    """
    channels, height, width = input_shape
    if min(height, width) < 4:
        raise ConfigError(
            f"model.name='cnn' needs images of at least 4x4 pixels, got {height}x{width}; "
            "use 'mlp' or 'logreg' for this dataset"
        )
    features = nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    flat = 16 * (height // 4) * (width // 4)
    return nn.Sequential(
        features,
        nn.Flatten(),
        nn.Linear(flat, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def build_module(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    hidden: Sequence[int] = (200,),
) -> nn.Module:
    """The `nn.Module` for `name`, built on the meta device (its parameters hold no data)."""
    inputs = math.prod(input_shape)
    with torch.device("meta"):
        if name == "logreg":
            return nn.Sequential(nn.Flatten(), nn.Linear(inputs, num_classes))
        if name == "mlp":
            layers: list[nn.Module] = [nn.Flatten()]
            width = inputs
            for size in hidden:
                layers += [nn.Linear(width, size), nn.ReLU()]
                width = size
            layers.append(nn.Linear(width, num_classes))
            return nn.Sequential(*layers)
        if name == "cnn":
            return _lenet(input_shape, num_classes)
    raise ConfigError(f"unknown model.name {name!r}; choose one of {', '.join(MODELS)}")


@dataclass(frozen=True)
class FlatModel:
    """A module whose parameters are read from one flat vector (see the module docstring)."""

    module: nn.Module
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    dim: int

    @classmethod
    def build(
        cls,
        name: str,
        input_shape: tuple[int, int, int],
        num_classes: int,
        hidden: Sequence[int] = (200,),
    ) -> FlatModel:
        module = build_module(name, input_shape, num_classes, hidden)
        names, shapes, offsets = [], [], []
        offset = 0
        for param_name, param in module.named_parameters():
            names.append(param_name)
            shapes.append(param.shape)
            offsets.append(offset)
            offset += param.numel()
        return cls(module, tuple(names), tuple(shapes), tuple(offsets), offset)

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
