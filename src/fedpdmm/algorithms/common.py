"""The contract every centralized algorithm follows (see the package docstring)."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch


class LocalProblem(NamedTuple):
    """min_x f_i(x) + (rho_i / 2) ||x - center_i||^2, solved by SGD from `start` (all `[m, d]`)."""

    start: torch.Tensor
    center: torch.Tensor | None
    rho: torch.Tensor | float


class Algorithm(Protocol):
    name: str

    def init(self, x0: torch.Tensor) -> tuple[Any, Any]: ...

    def downlink(self, server: Any) -> torch.Tensor: ...

    def receive(self, clients: Any, received: torch.Tensor) -> tuple[Any, LocalProblem]: ...

    def finish(self, clients: Any, trained: torch.Tensor) -> Any: ...

    def encode(self, clients: Any, models: torch.Tensor) -> torch.Tensor: ...

    def update(self, server: Any, messages: torch.Tensor, accepted: torch.Tensor) -> Any: ...

    def global_model(self, server: Any) -> torch.Tensor: ...

    def client_models(self, clients: Any) -> torch.Tensor: ...


def finite_rows(messages: torch.Tensor) -> torch.Tensor:
    """`[n]` mask of the rows of `messages` `[n, d]` whose entries are all finite.

    One sum over everything settles the common all-finite case in a single read; otherwise a
    row's max and min are finite exactly when all its entries are (max and min propagate NaN).
    Neither builds the `[n, d]` boolean temporary of `isfinite`, 8x slower on large stacks.
    """
    if messages.numel() == 0 or bool(torch.isfinite(messages.sum())):
        # NaN and Inf make the sum non-finite; a finite sum means every entry is finite (an
        # overflowing sum of finite entries falls through to the exact check below)
        return torch.ones(messages.shape[0], dtype=torch.bool)
    return torch.isfinite(messages.amax(dim=1)) & torch.isfinite(messages.amin(dim=1))
