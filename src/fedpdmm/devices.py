"""Where a run's tensors live: `device = "cpu"` (the default), `"cuda"` or `"cuda:N"`.

The placement rule:
- the setup is built on the CPU and then moved whole (`place`): the dataset, each client's
  features, labels and sample indices, the evaluation indices, the network's tensors and the
  initial model, so every algorithm state (built from the initial model) is on the device;
- on a device other than the CPU the rounds run under it as the default device, so tensors an
  algorithm, rule or attack creates without naming a device are created there too;
- random numbers are drawn by the CPU generators of `fedpdmm.seeding` and moved to the device,
  so a run draws the same batches, splits, Byzantine sets and noise on every device, and its
  numbers differ from the CPU run's by float rounding only.

Sizes and offsets that are read as Python numbers (`ClientData.sizes`, `.offsets`), the data
split (`FederatedData.parts`) and the label histogram stay on the CPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import torch

from fedpdmm.errors import ConfigError

DEVICE_PATTERN = re.compile(r"cpu|cuda(:[0-9]+)?")
CPU_FIELDS = frozenset({"sizes", "offsets", "parts", "histogram"})
"""Fields of the setup's dataclasses that stay on the CPU (read as numbers, or bookkeeping)."""


def check_name(name: str) -> str:
    """`name` if it names a device this module can place runs on, else a ValueError."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise ValueError("not a device name; use 'cpu', 'cuda' or 'cuda:N'")
    return name


def resolve(name: str) -> torch.device:
    """The torch device `name` names; a ConfigError when this machine has no such device."""
    device = torch.device(check_name(name))
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device = {name!r}, but this torch build sees no CUDA device "
            "(torch.cuda.is_available() is False); use device = 'cpu' or a machine with a GPU"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"device = {name!r}, but this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1}); pick one of them"
        )
    return device


def to_device(value: Any, device: torch.device) -> Any:
    """`value` with every tensor moved to `device`: tensors, and the tensors inside frozen
    dataclasses, named tuples, tuples and lists, recursively (fields named in `CPU_FIELDS` stay
    put; anything else, such as a networkx graph or an `nn.Module`, is left as it is)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, torch.nn.Module):
        return copy.deepcopy(value).to(device)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: to_device(getattr(value, field.name), device)
            for field in dataclasses.fields(value)
            if field.name not in CPU_FIELDS
        }
        return dataclasses.replace(value, **changes)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return value._replace(
            **{
                name: to_device(item, device)
                for name, item in value._asdict().items()
                if name not in CPU_FIELDS
            }
        )
    if isinstance(value, tuple):
        return tuple(to_device(item, device) for item in value)
    if isinstance(value, list):
        return [to_device(item, device) for item in value]
    return value


def tensors(value: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted path, tensor) for every tensor `to_device` would move, to check a placement."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            if field.name not in CPU_FIELDS:
                yield from tensors(getattr(value, field.name), f"{path}.{field.name}".lstrip("."))
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        for name, item in value._asdict().items():
            if name not in CPU_FIELDS:
                yield from tensors(item, f"{path}.{name}".lstrip("."))
    elif isinstance(value, (tuple, list)):
        for position, item in enumerate(value):
            yield from tensors(item, f"{path}[{position}]")


def place(setup: Any, device: torch.device) -> Any:
    """`setup` (`fedpdmm.setup.Setup`) with its tensors on `device` (unchanged on the CPU)."""
    if device.type == "cpu":
        return setup
    return to_device(setup, device)


@contextlib.contextmanager
def default_device(device: torch.device) -> Iterator[None]:
    """Make `device` the default for tensors created without one (nothing on the CPU, where a
    default-device mode would only add a dispatch to every operation)."""
    if device.type == "cpu":
        yield
        return
    with device:
        yield
