"""Datasets as tensors: scikit-learn digits, MNIST, Fashion-MNIST, Olivetti faces, synthetic.

Every dataset is images `[N, C, H, W]` float32 in [0, 1] (synthetic: `[N, 1, 1, dim]`) with int64
labels in `[0, num_classes)`. Splits that the source does not fix (digits, Olivetti) and the
synthetic data are drawn from `fedpdmm.seeding.generator(seed, "data", name)`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fedpdmm.data.files import (
    FILE_SETS,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    find_file,
    read_idx,
    read_olivetti_faces,
)
from fedpdmm.data.locate import resolve_data_dir
from fedpdmm.errors import ConfigError, DataError
from fedpdmm.seeding import generator

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "olivetti", "synthetic")

SYNTHETIC_SEPARATION = 3.0
"""Default norm of the synthetic class means (unit-variance noise). With 10 classes in 20
dimensions, logistic regression reaches about 88 % test accuracy (2.0: 65 %, 4.0: 97 %), so the
task is learnable but not trivial."""

OPTION_DEFAULTS: dict[str, dict[str, int | float]] = {
    "digits": {"test_fraction": 0.2},
    "mnist": {},
    "fashion_mnist": {},
    "olivetti": {"test_per_person": 2},
    "synthetic": {
        "num_classes": 10,
        "dim": 20,
        "num_train": 5000,
        "num_test": 1000,
        "separation": SYNTHETIC_SEPARATION,
    },
}


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test pair: `x_*` float32 [N, C, H, W] (images in [0, 1]), `y_*` int64 [N]."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        splits = (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test))
        for split, x, y in splits:
            if x.dtype != torch.float32 or x.ndim != 4 or y.dtype != torch.int64 or y.ndim != 1:
                raise ValueError(
                    f"{self.name} {split}: expected x float32 [N, C, H, W] and y int64 [N], "
                    f"got x {x.dtype} {tuple(x.shape)} and y {y.dtype} {tuple(y.shape)}"
                )
            if len(x) != len(y):
                raise ValueError(f"{self.name} {split}: {len(x)} inputs but {len(y)} labels")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"{self.name}: train inputs {tuple(self.x_train.shape[1:])} and test inputs "
                f"{tuple(self.x_test.shape[1:])} differ in shape"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input."""
        channels, height, width = self.x_train.shape[1:]
        return (channels, height, width)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


def standardized(dataset: Dataset) -> Dataset:
    """`dataset` with every input channel standardised by the training set's statistics:
    x <- (x - mean_c) / std_c over all training pixels of channel c (torchvision's `Normalize`
    with the dataset's own constants, e.g. 0.1307 and 0.3081 for MNIST), applied to the training
    and the test inputs alike. A constant channel is only centred."""
    axes = (0, 2, 3)
    mean = dataset.x_train.mean(dim=axes, keepdim=True, dtype=torch.float64)
    square = dataset.x_train.square().mean(dim=axes, keepdim=True, dtype=torch.float64)
    std = (square - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))

    def scale(x: torch.Tensor) -> torch.Tensor:
        return (x - mean.float()) / std.float()

    return replace(dataset, x_train=scale(dataset.x_train), x_test=scale(dataset.x_test))


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    download: bool = True,
    **options: int | float,
) -> Dataset:
    """Load dataset `name` (one of `DATASETS`) with its `options` (see `OPTION_DEFAULTS`).

    Files are located by `resolve_data_dir` (data_dir, $FEDPDMM_DATA, user cache, system,
    download) and checked against their SHA-256; `seed` draws the split (digits, olivetti) or the
    data (synthetic).
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown data.name={name!r}; choose one of {', '.join(DATASETS)}")
    defaults = OPTION_DEFAULTS[name]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise ConfigError(
            f"unknown data.options key {unknown[0]!r} for dataset {name}; valid keys: {valid}"
        )
    opts = {**defaults, **options}
    gen = generator(seed, "data", name)
    if name == "digits":
        test_fraction = _float_option(name, "test_fraction", opts["test_fraction"], 0.0, 1.0)
        return load_digits(test_fraction, gen)
    if name == "synthetic":
        return make_synthetic(
            num_classes=_int_option(name, "num_classes", opts["num_classes"], 2),
            dim=_int_option(name, "dim", opts["dim"], 1),
            num_train=_int_option(name, "num_train", opts["num_train"], 1),
            num_test=_int_option(name, "num_test", opts["num_test"], 1),
            separation=_float_option(name, "separation", opts["separation"], 0.0, float("inf")),
            generator=gen,
        )
    test_per_person = 0
    if name == "olivetti":
        test_per_person = _int_option(name, "test_per_person", opts["test_per_person"], 1, 9)
    folder = resolve_data_dir(name, data_dir=data_dir, download=download)
    if name == "olivetti":
        return load_olivetti(folder, test_per_person, gen)
    return load_idx_dataset(name, folder)


def _int_option(name: str, key: str, value: object, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ConfigError(f"data.options.{key}={value!r} for dataset {name} must be {bounds}")
    return value


def _float_option(name: str, key: str, value: object, low: float, high: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not low < float(value) < high:  # type: ignore[arg-type]
        raise ConfigError(
            f"data.options.{key}={value!r} for dataset {name} must be a number in ({low}, {high})"
        )
    return float(value)  # type: ignore[arg-type]


def stratified_split(
    labels: torch.Tensor, test_counts: list[int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, test) index tensors; a random `test_counts[c]` samples of class c are test."""
    train, test = [], []
    for c, count in enumerate(test_counts):
        members = torch.nonzero(labels == c).squeeze(1)
        shuffled = members[torch.randperm(len(members), generator=generator)]
        test.append(shuffled[:count])
        train.append(shuffled[count:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def _split(
    name: str, x: torch.Tensor, y: torch.Tensor, test_counts: list[int], gen: torch.Generator
) -> Dataset:
    train, test = stratified_split(y, test_counts, gen)
    return Dataset(name, x[train], y[train], x[test], y[test], len(test_counts))


def load_digits(test_fraction: float, generator: torch.Generator) -> Dataset:
    """scikit-learn's 8x8 digits [1797, 1, 8, 8] / 16, split per class.

    Class c of size n_c puts round(test_fraction * n_c) samples, clamped to [1, n_c - 1], in test.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    sizes = torch.bincount(y, minlength=10).tolist()
    counts = [min(max(round(test_fraction * n), 1), n - 1) for n in sizes]
    return _split("digits", x, y, counts, generator)


def load_olivetti(folder: Path, test_per_person: int, generator: torch.Generator) -> Dataset:
    """Olivetti faces [N, 1, 64, 64] / 255, `test_per_person` of each person's 10 images in test.

    `faces[:, k]` reshaped to 64x64 and transposed is image k (column-major storage); image k
    belongs to person k // 10.
    """
    files = FILE_SETS["olivetti"]
    path = _located(folder, files.names[0])
    faces = read_olivetti_faces(path, f"{files.folder}/{files.names[0]}")
    count = faces.shape[1]
    images = faces.T.reshape(count, 64, 64).transpose(0, 2, 1)
    x = torch.from_numpy(_unit_range(images, path)).unsqueeze(1)
    y = torch.arange(count, dtype=torch.int64) // 10
    return _split("olivetti", x, y, [test_per_person] * (count // 10), generator)


def _unit_range(values: np.ndarray, path: Path) -> np.ndarray:
    """float32 copy in [0, 1]: uint8 divided by 255, floats already in [0, 1] kept."""
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(255)
    if np.issubdtype(values.dtype, np.floating) and values.min() >= 0 and values.max() <= 1:
        return values.astype(np.float32)
    raise DataError(
        f"{path}: values of dtype {values.dtype} in [{values.min()}, {values.max()}], "
        f"expected uint8 or floats in [0, 1]"
    )


def _located(folder: Path, name: str) -> Path:
    path = find_file(folder, name)
    if path is None:
        raise DataError(f"{folder / name}[.gz] disappeared after it was located; check {folder}")
    return path


def load_idx_dataset(name: str, folder: Path) -> Dataset:
    """MNIST-style IDX files in `folder`: images [N, 1, 28, 28] / 255, labels in [0, 10)."""
    files = FILE_SETS[name]
    splits = []
    for prefix in ("train", "t10k"):
        image_name, label_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        image_path, label_path = _located(folder, image_name), _located(folder, label_name)
        images = read_idx(image_path, f"{files.folder}/{image_name}", IDX_IMAGES_MAGIC)
        labels = read_idx(label_path, f"{files.folder}/{label_name}", IDX_LABELS_MAGIC)
        if images.shape[1:] != (28, 28):
            raise DataError(f"{image_path} holds images of shape {images.shape[1:]}, not 28x28")
        if len(images) != len(labels):
            raise DataError(
                f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels; "
                f"the files do not belong together"
            )
        if len(labels) and labels.max() >= 10:
            raise DataError(f"{label_path} has label {labels.max()}, expected labels 0 to 9")
        x = torch.from_numpy(images.copy()).to(torch.float32).div_(255).unsqueeze(1)
        splits += [x, torch.from_numpy(labels.astype(np.int64))]
    return Dataset(name, *splits, num_classes=10)


def make_synthetic(
    *,
    num_classes: int,
    dim: int,
    num_train: int,
    num_test: int,
    separation: float,
    generator: torch.Generator,
) -> Dataset:
    """Gaussian mixture: x = mu_y + e, e ~ N(0, I_dim), y balanced; shapes [N, 1, 1, dim].

    The means mu_c are random directions scaled to norm `separation`, so two means lie about
    `separation * sqrt(2)` apart. Train and test share the means.
    """
    directions = torch.randn(num_classes, dim, generator=generator, dtype=torch.float64)
    means = separation * directions / directions.norm(dim=1, keepdim=True)

    def sample(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=generator)]
        noise = torch.randn(count, dim, generator=generator, dtype=torch.float64)
        return (means[labels] + noise).float().reshape(count, 1, 1, dim), labels

    x_train, y_train = sample(num_train)
    x_test, y_test = sample(num_test)
    return Dataset("synthetic", x_train, y_train, x_test, y_test, num_classes)
