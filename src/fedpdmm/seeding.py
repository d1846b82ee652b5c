"""One seed fans out into independent, named torch generators.

Every source of randomness (data split, Byzantine choice, batch sampling, attack noise, graph,
model initialisation) draws from its own generator, so that adding randomness in one place never
shifts the numbers of another. Nothing here reads or seeds torch's global generator.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: str | int) -> int:
    """A 63-bit seed that depends only on `seed` and the stream `names`."""
    text = "/".join([str(seed), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *names: str | int) -> torch.Generator:
    """A fresh CPU `torch.Generator` for the stream `names` under `seed`."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, *names))
    return gen
