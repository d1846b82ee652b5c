"""Attacks that rewrite each Byzantine row on its own: none, sign flip, noise, zero, inf, mimic,
hardware bit flips. All but `mimic` need only the attacker's own message, so they run on a real
distributed deployment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from fedpdmm.attacks.base import (
    Attack,
    StrikeContext,
    check_choice,
    check_int,
    check_real,
    random_normal,
    random_uniform,
    set_param,
)

_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass(frozen=True)
class NoAttack(Attack):
    """No attack: Byzantine nodes send their honest messages.

    Knows: its own row. Keeps: nothing. Sends each receiver the honest message of that edge.
    """

    name: ClassVar[str] = "none"

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        return messages[byzantine]


@dataclass(frozen=True)
class SignFlip(Attack):
    """Sign flip ("bit-flipping" in the Byzantine FL literature): row -> -scale * row.

    Also registered as `bit_flip`. Scale 1 is the "bit-flipping" attack of Karimireddy, He, Jaggi,
    "Learning from history for Byzantine robust optimization", ICML 2021, and of Xia, Yu, Li,
    arXiv 2503.10792. See `float_bit_flip` for flips of the IEEE-754 bits themselves.

    Knows: only its own row. Keeps: nothing. Sends each receiver its own row of that edge (on a
    graph, per directed edge), times -scale.
    """

    scale: float = 1.0
    name: ClassVar[str] = "sign_flip"

    def __post_init__(self) -> None:
        set_param(self, "scale", check_real(self, "scale"))

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        return messages[byzantine] * -self.scale


@dataclass(frozen=True)
class GaussianNoise(Attack):
    """Gaussian noise: mode "add": row + N(0, sigma^2 I); mode "replace": N(0, sigma^2 I).

    Default sigma = 0.1 and mode "add": the Olivetti "Gaussian noise injection" setting measured
    in the project notes (PAPER.md); the paper (Xia, Yu, Li, arXiv 2503.10792) does not publish
    its sigma. Noise is drawn from the attack's generator, one draw per Byzantine entry.

    Knows: only its own row. Keeps: nothing (the noise comes from the seeded stream of each row,
    so on a graph each directed edge gets its own draw).
    """

    sigma: float = 0.1
    mode: str = "add"
    name: ClassVar[str] = "gaussian"

    @classmethod
    def config_defaults(cls, section: Any) -> dict[str, Any]:
        """`attack.sigma` and `attack.mode` of the config's `[attack]` section."""
        return {"sigma": section.sigma, "mode": section.mode}

    def __post_init__(self) -> None:
        set_param(self, "sigma", check_real(self, "sigma", low=0.0))
        check_choice(self, "mode", ("add", "replace"))

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        rows = messages[byzantine]
        noise = random_normal(tuple(rows.shape), rows, generator) * self.sigma
        return rows + noise if self.mode == "add" else noise


@dataclass(frozen=True)
class ZeroMessage(Attack):
    """A silent node: every Byzantine row is the zero vector.

    Knows: nothing. Keeps: nothing. Sends every receiver zero at the target (the zero message,
    model or update).
    """

    name: ClassVar[str] = "zero"

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        return torch.zeros_like(messages[0])


@dataclass(frozen=True)
class ConstantValue(Attack):
    """Every Byzantine entry set to `value` (default +inf, as ByzFL's `Inf` attack).

    The default exercises the non-finite path of aggregators (NaN/Inf handling); pass a large
    finite value (e.g. 1e20) for an attack that stays finite. NaN is accepted too.

    Knows: nothing. Keeps: nothing. Sends every receiver the same constant row at the target.
    """

    value: float = float("inf")
    name: ClassVar[str] = "inf"

    def __post_init__(self) -> None:
        set_param(self, "value", check_real(self, "value", finite=False))

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        return torch.full_like(messages[0], self.value)


@dataclass(frozen=True)
class Mimic(Attack):
    """Mimic: every Byzantine row is a copy of honest node `target`'s row.

    Karimireddy, He, Jaggi, "Byzantine-robust learning on heterogeneous datasets via bucketing",
    ICLR 2022. `target=None` copies the first honest row; a Byzantine target is an error.
    Omniscient: it reads another node's message.

    Knows: the rows its receiver combines and who sent them (computed per receiver). Keeps:
    nothing, or with `warmup` its choice of target. `target` is a node id: with a server the
    client whose row is copied; on a graph, receivers that do not hear from `target` get a copy
    of their first honest neighbour's row (never their own model back).

    `warmup = W > 0` is the paper's variant (its code's `MimicVariantAttacker`, W = 1 there):
    during the first W rounds the attacker of each receiver keeps running averages of the honest
    rows' mean mu and of the direction z of their largest variance (one power-iteration step
    per round, z <- sum_i <h_i - mu, z> (h_i - mu), normalised, from a Gaussian z drawn from
    `pattern_seed`), and targets the honest sender with the largest <h_i, z>; after round W the
    target is fixed and every Byzantine row copies that sender's row (or, in a round it does
    not send, the first honest row). `warmup` replaces `target`.
    """

    target: int | None = None
    warmup: int = 0
    pattern_seed: int = 0
    context: StrikeContext | None = dataclasses.field(default=None, repr=False, compare=False)
    name: ClassVar[str] = "mimic"
    omniscient: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_int(self, "target", low=0, optional=True)
        check_int(self, "warmup", low=0)
        check_int(self, "pattern_seed", low=0)
        if self.warmup and self.target is not None:
            raise self.fail("give target or warmup, not both (warmup chooses the target)")

    def bind(self, context: StrikeContext) -> Mimic:
        return dataclasses.replace(self, context=context)

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        n = messages.shape[0]
        context = self.context
        if self.warmup:
            return messages[self.variance_target(messages, byzantine)]
        if context is not None and context.senders is not None:
            return messages[self.source_row(context.senders, byzantine, context.own_row)]
        if self.target is None:
            honest = torch.nonzero(~byzantine).flatten()
            if honest.numel() == 0:
                raise self.fail("needs at least one honest node to copy, got none")
            return messages[int(honest[0])]
        if self.target >= n:
            raise self.fail(f"target={self.target} is out of range for n={n} nodes")
        if bool(byzantine[self.target]):
            raise self.fail(
                f"target={self.target} is Byzantine; choose the index of an honest node"
            )
        return messages[self.target]

    def variance_target(self, messages: Tensor, byzantine: Tensor) -> int:
        """The row of the sender chosen by the warm-up (see the class docstring); the memory
        of the receiver's attacker (`StrikeContext.memory`) carries mu, z, the rounds seen and,
        after the warm-up, the target."""
        context = self.context
        if context is None or context.memory is None:
            raise self.fail("with warmup it needs the attacker's memory (it runs in a strike)")
        memory = context.memory
        rows = [r for r in (~byzantine).nonzero().flatten().tolist() if r or not context.own_row]
        if not rows:
            raise self.fail("needs at least one honest node to copy, got none")
        senders = context.senders
        if senders is None:
            senders = torch.arange(messages.shape[0])
        if "target" not in memory:
            honest = messages[rows].double()
            seen = memory.get("rounds", 0) + 1
            mean = honest.mean(0)
            if "z" not in memory:
                gen = torch.Generator().manual_seed(self.pattern_seed)
                memory["z"] = torch.randn(messages.shape[1], generator=gen, dtype=torch.float64)
                memory["mu"] = torch.zeros_like(mean)
            centred = honest - mean
            step = centred.T @ (centred @ memory["z"].to(centred))
            step = step / step.norm().clamp_min(1e-30)
            memory["mu"] = memory["mu"] + (mean - memory["mu"]) / seen
            memory["z"] = memory["z"] + (step - memory["z"]) / seen
            scores = honest @ memory["z"]
            chosen = int(senders[rows[int(scores.argmax())]])
            memory["rounds"] = seen
            memory["choice"] = chosen
            if seen >= self.warmup:
                memory["target"] = chosen
        wanted = memory.get("target", memory["choice"])
        matching = [r for r in rows if int(senders[r]) == wanted]
        return (matching or rows)[0]

    def source_row(self, senders: Tensor, byzantine: Tensor, own_row: bool) -> int:
        """The row to copy: `target`'s if the receiver hears from it, else the first honest
        message (never the receiver's own model, row 0 when `own_row`)."""
        honest = [row for row in (~byzantine).nonzero().flatten().tolist() if row or not own_row]
        if not honest:
            raise self.fail("needs at least one honest node to copy, got none")
        chosen = [row for row in honest if int(senders[row]) == self.target]
        return (chosen or honest)[0]


@dataclass(frozen=True)
class FloatBitFlip(Attack):
    """Hardware bit flips: each bit of each Byzantine entry's IEEE-754 word flips with prob. `rate`.

    row -> bits(row) XOR M, M_b ~ Bernoulli(rate) i.i.d. per bit (the entry viewed as a signed
    integer of the same width). Rate 0 is the identity, rate 1 the bitwise complement. Flips of
    exponent bits can create huge values, Inf or NaN (the soft-error fault model of, e.g.,
    Reagen et al., "Ares: a framework for quantifying the resilience of deep neural networks",
    DAC 2018).

    Knows: only its own row. Keeps: nothing (flips come from the seeded stream of each row, per
    directed edge on a graph). Sends each receiver its own row with those bits flipped.
    """

    rate: float
    name: ClassVar[str] = "float_bit_flip"

    def __post_init__(self) -> None:
        set_param(self, "rate", check_real(self, "rate", low=0.0, high=1.0))

    def byzantine_rows(
        self, messages: Tensor, byzantine: Tensor, generator: torch.Generator
    ) -> Tensor:
        rows = messages[byzantine].contiguous()
        word = _INT_VIEW[rows.element_size()]
        bits = rows.view(word)
        flips = torch.zeros_like(bits)
        for bit in range(8 * rows.element_size()):
            hit = random_uniform(tuple(rows.shape), rows, generator) < self.rate
            flips |= hit.to(word) << bit
        return (bits ^ flips).view(rows.dtype)
