"""Finished combinations shared by the runs of a sweep or a reproduction.

The runs of a grid often repeat a computation. The unattacked combination does not depend on
`attack.state` or `attack.target`. An algorithm whose receivers keep no echo of a sender's
messages (`Algorithm.has_echo` False: FedAvg, FedProx, SCAFFOLD, gossip) gives the same numbers
under both attacker states. And a reproduction's experiments share some grid points (its c sweep
holds the preset's c, its consensus experiment the unattacked runs of the claims).

A combination's key is a hash of everything that decides its numbers: the fedpdmm version and a
hash of its source files (`code_fingerprint`), the data folder given, and the config reduced to
this one (algorithm, attack, target), with `attack.state` left out where it cannot matter.
Nothing else is left out, so two keys are equal only when the configs agree on every other key.
A run looks each of its combinations up in a folder of finished ones and stores the ones it
computes. A reused combination has the stored rows: the same numbers as computing it again
(tested), and the `wall_time` and `eval_time` of the run that computed it.

Runs in flight at the same time claim a combination before computing it (`claim`, a lock on
`<key>.lock` that the system releases if the process dies): a run that finds a combination
claimed computes its other combinations first and then waits for that one, so no combination
is computed twice and no worker waits while it has other work.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedpdmm import __version__
from fedpdmm import config as config_module
from fedpdmm.algorithms import ALGORITHMS, parse_algorithm
from fedpdmm.config import Config
from fedpdmm.data.locate import DATA_ENV
from fedpdmm.targets import NO_ATTACK

SUFFIX = ".pickle"
"""A stored combination: its metric rows exactly as computed (nested values and their types
included), pickled; the folder is the sweep's own."""


def state_matters(algorithm: str, attack: str, setting: str) -> bool:
    """Whether `attack.state` can change the numbers of `algorithm` under `attack`."""
    if attack == NO_ATTACK:
        return False
    base, _ = parse_algorithm(algorithm)
    implementation = ALGORITHMS.lookup(base).implementation(setting)
    return implementation is None or bool(implementation.has_echo)


def combination_key(
    config: Config, combination: tuple[str, str, str], setting: str, data_dir: str | None
) -> str:
    """The hash naming `combination` (algorithm, attack, target) of `config` in `setting`."""
    algorithm, attack, target = combination
    raw = config_module.to_dict(config)
    raw["algorithms"] = [algorithm]
    raw["attacks"] = [attack]
    section = dict(raw.get("attack", {}))
    section["target"] = target
    if not state_matters(algorithm, attack, setting):
        section.pop("state", None)
    raw["attack"] = section
    folder = data_dir if data_dir is not None else os.environ.get(DATA_ENV, "")
    payload = {
        "fedpdmm": __version__,
        "code": code_fingerprint(),
        "data_dir": str(folder),
        "config": raw,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@functools.cache
def code_fingerprint() -> str:
    """A hash of the installed package's Python sources: a stored combination computed by other
    code (an edit without a version bump, another checkout) is never reused."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load(folder: Path, key: str) -> tuple[list[dict[str, Any]], str] | None:
    """The rows and status stored under `key`, or None (absent or unreadable: compute again)."""
    path = folder / f"{key}{SUFFIX}"
    try:
        with path.open("rb") as handle:
            stored = pickle.load(handle)
        return list(stored["rows"]), str(stored["status"])
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError):
        return None


def store(folder: Path, key: str, rows: list[dict[str, Any]], status: str) -> None:
    """Write the rows and status of a finished combination under `key`, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    data = pickle.dumps({"status": status, "rows": rows}, protocol=pickle.HIGHEST_PROTOCOL)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, folder / f"{key}{SUFFIX}")
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def claim(folder: Path, key: str, wait: bool = False) -> Iterator[bool]:
    """Hold the claim on `key` while the block runs: yields True when this process holds it,
    False when another process does (only without `wait`; with it, block until it is free)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{key}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
