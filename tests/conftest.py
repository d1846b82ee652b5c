"""Shared fixtures: the real datasets, an isolated data environment, tiny dataset files."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch

from fedpdmm.data import files, locate


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread: the suite's models are small, and two threads on a busy 2-core machine
    spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """Root of the real dataset folders: $FEDPDMM_DATA, else ../shared/datasets beside the repo."""
    candidates = [Path(os.environ["FEDPDMM_DATA"])] if os.environ.get("FEDPDMM_DATA") else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "datasets")
    for root in candidates:
        if root.is_dir():
            return root
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide the real datasets: none in {', '.join(map(str, candidates))}")
    pytest.skip(f"real datasets not found in {', '.join(map(str, candidates))}; set FEDPDMM_DATA")


@pytest.fixture
def isolated_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """HOME, XDG_CACHE_HOME and the system root inside tmp_path; FEDPDMM_DATA unset; the mirror
    points at a closed local port, so nothing reaches the network or the real user cache."""
    env = SimpleNamespace(
        home=tmp_path / "home",
        cache=tmp_path / "xdg-cache" / "fedpdmm",
        system=tmp_path / "system",
    )
    monkeypatch.setenv("HOME", str(env.home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(env.cache.parent))
    monkeypatch.delenv("FEDPDMM_DATA", raising=False)
    monkeypatch.setenv("FEDPDMM_MIRROR", "http://127.0.0.1:9")
    monkeypatch.setattr(locate, "SYSTEM_DATA_ROOT", env.system)
    monkeypatch.setattr(locate, "DOWNLOAD_TIMEOUT_S", 5.0)
    return env


def tiny_idx_arrays(n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 images [n, 28, 28] and labels `arange(n) % 10`, keyed by IDX file name."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }


def tiny_faces(people: int = 3, seed: int = 0) -> np.ndarray:
    """A `faces` matrix [4096, 10 * people] uint8, like olivettifaces.mat."""
    return np.random.default_rng(seed).integers(0, 256, (4096, 10 * people), dtype=np.uint8)


@pytest.fixture
def write_tiny_dataset(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, bytes]]:
    """Write tiny files of `name` under `root/<folder>/` and swap their hashes into the checksum
    table; returns the decompressed bytes of each file, keyed by file name."""

    def write(
        root: Path, name: str = "mnist", *, gz: bool = True, register: bool = True, **sizes: int
    ) -> dict[str, bytes]:
        fileset = files.FILE_SETS[name]
        folder = root / fileset.folder
        folder.mkdir(parents=True, exist_ok=True)
        if name == "olivetti":
            path = folder / "olivettifaces.mat"
            scipy.io.savemat(path, {"faces": tiny_faces(**sizes)})
            contents = {"olivettifaces.mat": path.read_bytes()}
        else:
            contents = {k: files.encode_idx(v) for k, v in tiny_idx_arrays(**sizes).items()}
            for file_name, data in contents.items():
                if gz:
                    (folder / f"{file_name}.gz").write_bytes(gzip.compress(data))
                else:
                    (folder / file_name).write_bytes(data)
        if register:
            for file_name, data in contents.items():
                digest = hashlib.sha256(data).hexdigest()
                monkeypatch.setitem(files.CHECKSUMS, f"{fileset.folder}/{file_name}", digest)
        return contents

    return write
