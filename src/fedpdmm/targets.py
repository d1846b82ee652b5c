"""Where an attack strikes, and the name of the unattacked run: defined once, importable anywhere
(no torch), so writers and readers of results agree on them."""

from __future__ import annotations

from enum import StrEnum

NO_ATTACK = "none"
"""The attack name of unattacked runs; they run once, at `Target.NONE`."""


class Target(StrEnum):
    """What a Byzantine node's attack rewrites (see `fedpdmm.rounds`)."""

    NONE = "none"  # the pseudo-target of unattacked runs: nothing is perturbed
    MODEL = "model"
    UPDATE = "update"
    MESSAGE = "message"
    DATA = "data"  # data attacks (label_flip) corrupt training data; messages are sent honestly


TARGETS: tuple[str, ...] = ("model", "update", "message")
"""The targets a config may choose (`attack.target`); data attacks run once, at `Target.DATA`."""
