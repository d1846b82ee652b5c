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


TARGETS: tuple[str, ...] = tuple(target.value for target in Target if target is not Target.NONE)
"""The targets a config may choose (`attack.target`)."""
