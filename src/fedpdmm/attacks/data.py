"""Data attacks: Byzantine clients follow the protocol honestly but train on corrupted data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from fedpdmm.attacks.base import Attack, check_int
from fedpdmm.errors import DataError


@dataclass(frozen=True)
class LabelFlip(Attack):
    """Label flipping: Byzantine clients train on labels y -> C - 1 - y (C classes).

    As in Karimireddy, He, Jaggi, "Learning from history for Byzantine robust optimization",
    ICML 2021 (and Allen-Zhu et al., ICLR 2021). The engine calls `flip_labels` on the Byzantine
    clients' training labels; as a message attack it is the identity (returns a copy).
    `num_classes=None` takes C from the `flip_labels` call.

    Knows: its own data. Keeps: nothing beyond the protocol's own state. Controls only its
    training labels: it sends every receiver the messages the protocol computes from that training.
    """

    num_classes: int | None = None
    name: ClassVar[str] = "label_flip"
    data_attack: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_int(self, "num_classes", low=2, optional=True)

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        return messages[byzantine]

    def flip_labels(self, labels: Tensor, num_classes: int | None = None) -> Tensor:
        """Integer labels `[m]` in [0, C) -> C - 1 - labels (a new tensor, same dtype)."""
        classes = self.num_classes if num_classes is None else num_classes
        if classes is None:
            raise self.fail("the number of classes is unknown; pass num_classes")
        if self.num_classes is not None and classes != self.num_classes:
            raise self.fail(
                f"flip_labels got num_classes={classes} but the attack was built with "
                f"num_classes={self.num_classes}; make them agree"
            )
        if not isinstance(classes, int) or isinstance(classes, bool) or classes < 2:
            raise self.fail(f"num_classes must be an integer >= 2, got {classes!r}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise DataError(
                f"label_flip: labels must be an integer tensor, got dtype {labels.dtype}"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise DataError(
                f"label_flip: labels must lie in [0, {classes}), got range "
                f"[{int(labels.min())}, {int(labels.max())}]; check num_classes"
            )
        return (classes - 1) - labels
