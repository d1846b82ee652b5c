"""Loaders: real files, tiny generated files, corrupt files, options, seeded splits."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
import scipy.io
import torch
from conftest import tiny_faces, tiny_idx_arrays

from fedpdmm.data import DATASETS, Dataset, load_dataset
from fedpdmm.data import files as data_files
from fedpdmm.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_data_env")


def assert_valid(ds: Dataset, shape: tuple[int, int, int], num_classes: int) -> None:
    assert ds.input_shape == shape
    assert ds.num_classes == num_classes
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(y), *shape)
        assert int(y.min()) >= 0 and int(y.max()) < num_classes


# ---- real files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "first_train_labels", "test_counts"),
    [
        ("mnist", [5, 0, 4, 1, 9], [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]),
        ("fashion_mnist", [9, 0, 0, 3, 0], [1000] * 10),
    ],
)
def test_real_idx_dataset(real_data_dir, name, first_train_labels, test_counts):
    ds = load_dataset(name, data_dir=real_data_dir, download=False)
    assert_valid(ds, (1, 28, 28), 10)
    assert (len(ds.y_train), len(ds.y_test)) == (60000, 10000)
    assert ds.y_train[:5].tolist() == first_train_labels
    assert torch.bincount(ds.y_test).tolist() == test_counts
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    pixels = ds.x_test[:100] * 255
    assert torch.equal(pixels, pixels.round())  # exactly k / 255


def naive_olivetti(path) -> np.ndarray:
    """Image k = column k of `faces` as 64x64 column-major, one at a time, float64 / 255."""
    faces = scipy.io.loadmat(path)["faces"]
    return np.stack([faces[:, k].reshape(64, 64).T / 255.0 for k in range(faces.shape[1])])


def assert_olivetti_split(ds: Dataset, images: np.ndarray, test_per_person: int) -> None:
    """Every image appears once, with label k // 10, and each person has the asked split."""
    index = {image.astype(np.float32).tobytes(): k for k, image in enumerate(images)}
    assert len(index) == len(images)  # distinct images, so each sample identifies its k
    seen = []
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        k = [index[image.numpy().tobytes()] for image in x[:, 0]]
        assert y.tolist() == [i // 10 for i in k]
        seen += k
    assert sorted(seen) == list(range(len(images)))
    people = len(images) // 10
    assert torch.bincount(ds.y_test, minlength=people).tolist() == [test_per_person] * people
    assert torch.bincount(ds.y_train, minlength=people).tolist() == [10 - test_per_person] * people


def test_real_olivetti(real_data_dir):
    ds = load_dataset("olivetti", data_dir=real_data_dir, download=False)
    assert_valid(ds, (1, 64, 64), 40)
    assert (len(ds.y_train), len(ds.y_test)) == (320, 80)
    assert float(ds.x_train.min()) >= 0.0 and float(ds.x_train.max()) <= 1.0
    assert_olivetti_split(ds, naive_olivetti(real_data_dir / "olivetti" / "olivettifaces.mat"), 2)


def test_olivetti_split_is_seeded(real_data_dir):
    def load(seed):
        return load_dataset("olivetti", data_dir=real_data_dir, seed=seed, download=False)

    a, b, c = load(0), load(0), load(1)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_test, c.x_test)


# ---- digits and synthetic --------------------------------------------------------------------


def test_digits_stratified_split():
    ds = load_dataset("digits", seed=3)
    assert_valid(ds, (1, 8, 8), 10)
    assert len(ds.y_train) + len(ds.y_test) == 1797
    totals = torch.bincount(ds.y_train, minlength=10) + torch.bincount(ds.y_test, minlength=10)
    expected = [round(0.2 * n) for n in totals.tolist()]
    assert torch.bincount(ds.y_test, minlength=10).tolist() == expected
    assert float(ds.x_train.max()) == 1.0 and float(ds.x_train.min()) == 0.0
    half = load_dataset("digits", seed=3, test_fraction=0.5)
    assert abs(len(half.y_test) - 1797 / 2) < 10
    again, other = load_dataset("digits", seed=3), load_dataset("digits", seed=4)
    assert torch.equal(again.x_test, ds.x_test)
    assert not torch.equal(other.x_test, ds.x_test)


def test_synthetic_shapes_balance_and_seed():
    opts = {"num_classes": 4, "dim": 7, "num_train": 101, "num_test": 40}
    ds = load_dataset("synthetic", seed=5, **opts)
    assert_valid(ds, (1, 1, 7), 4)
    assert (len(ds.y_train), len(ds.y_test)) == (101, 40)
    assert torch.bincount(ds.y_train).tolist() == [26, 25, 25, 25]
    assert torch.equal(load_dataset("synthetic", seed=5, **opts).x_train, ds.x_train)
    assert not torch.equal(load_dataset("synthetic", seed=6, **opts).x_train, ds.x_train)


def test_synthetic_default_is_learnable_but_not_trivial():
    ds = load_dataset("synthetic", seed=0)
    x, y = ds.x_train.flatten(1), ds.y_train
    means = torch.stack([x[y == c].mean(dim=0) for c in range(ds.num_classes)])
    predicted = torch.cdist(ds.x_test.flatten(1), means).argmin(dim=1)
    accuracy = (predicted == ds.y_test).float().mean().item()
    assert 0.7 < accuracy < 0.98


# ---- options ---------------------------------------------------------------------------------


def test_unknown_dataset_names_choices():
    with pytest.raises(
        ConfigError, match=r"unknown data\.name='cifar'; choose one of digits, mnist"
    ):
        load_dataset("cifar")


@pytest.mark.parametrize(
    ("name", "option", "valid"),
    [
        ("digits", "test_frac", "test_fraction"),
        ("mnist", "test_fraction", "none"),
        ("olivetti", "test_fraction", "test_per_person"),
        ("synthetic", "classes", "num_classes, dim, num_train, num_test, separation"),
    ],
)
def test_unknown_option_names_valid_ones(name, option, valid):
    with pytest.raises(
        ConfigError,
        match=rf"unknown data\.options key '{option}' for dataset {name}; valid keys: {valid}",
    ):
        load_dataset(name, **{option: 1})


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("digits", {"test_fraction": 1.0}),
        ("digits", {"test_fraction": True}),
        ("olivetti", {"test_per_person": 10}),
        ("olivetti", {"test_per_person": 1.5}),
        ("synthetic", {"num_classes": 1}),
        ("synthetic", {"separation": 0}),
        ("synthetic", {"num_train": "5"}),
    ],
)
def test_bad_option_value(name, options):
    ((key, value),) = options.items()
    with pytest.raises(
        ConfigError, match=rf"data\.options\.{key}={value!r} for dataset {name} must be"
    ):
        load_dataset(name, **options)


def test_every_dataset_has_option_defaults():
    from fedpdmm.data.datasets import OPTION_DEFAULTS

    assert set(OPTION_DEFAULTS) == set(DATASETS)


# ---- tiny generated files --------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_tiny_idx_files_load_exactly(tmp_path, write_tiny_dataset, gz):
    write_tiny_dataset(tmp_path, "mnist", gz=gz)
    ds = load_dataset("mnist", data_dir=tmp_path, download=False)
    arrays = tiny_idx_arrays()
    assert_valid(ds, (1, 28, 28), 10)
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"]).double() / 255
    assert torch.allclose(ds.x_train[:, 0].double(), expected, atol=1e-7, rtol=0)
    assert ds.y_test.tolist() == (np.arange(10) % 10).tolist()


def test_idx_header_layout():
    data = data_files.encode_idx(np.zeros((2, 3, 4), dtype=np.uint8))
    assert data[:16] == bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 4)
    assert len(data) == 16 + 24
    floats = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(data_files.parse_idx(data_files.encode_idx(floats), "x"), floats)


def test_tiny_olivetti_matches_column_major_layout(tmp_path, write_tiny_dataset):
    write_tiny_dataset(tmp_path, "olivetti", people=3)
    ds = load_dataset("olivetti", data_dir=tmp_path, download=False, test_per_person=3)
    assert (len(ds.y_train), len(ds.y_test), ds.num_classes) == (21, 9, 3)
    images = np.stack([c.reshape(64, 64).T / 255.0 for c in tiny_faces(people=3).T])
    assert_olivetti_split(ds, images, 3)


def test_olivetti_float_faces_in_unit_range_are_kept(tmp_path, monkeypatch):
    faces = tiny_faces(people=1).astype(np.float64) / 255.0
    (tmp_path / "olivetti").mkdir()
    scipy.io.savemat(tmp_path / "olivetti" / "olivettifaces.mat", {"faces": faces})
    monkeypatch.delitem(data_files.CHECKSUMS, "olivetti/olivettifaces.mat")
    ds = load_dataset("olivetti", data_dir=tmp_path, download=False)
    images = np.stack([c.reshape(64, 64).T for c in faces.T])
    assert_olivetti_split(ds, images, 2)


# ---- corrupt files ---------------------------------------------------------------------------


def corrupt(tmp_path, monkeypatch, write_tiny_dataset, file_name, change):
    """Write tiny uncompressed MNIST, replace `file_name` by change(bytes), register its hash
    (so that only the structural checks can fail)."""
    contents = write_tiny_dataset(tmp_path, "mnist", gz=False)
    path = tmp_path / "mnist" / file_name
    path.write_bytes(change(contents[file_name]))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(data_files.CHECKSUMS, f"mnist/{file_name}", digest)
    return path


@pytest.mark.parametrize(
    ("file_name", "change", "message"),
    [
        (
            "train-images-idx3-ubyte",
            lambda b: b"\x00\x00\x08\x01" + b[4:],
            "magic number 0x00000801",
        ),
        ("t10k-labels-idx1-ubyte", lambda b: b"PK\x03\x04" + b[4:], "magic number"),
        ("train-images-idx3-ubyte", lambda b: b[:-100], "truncated"),
        ("train-labels-idx1-ubyte", lambda b: b[:6], "truncated"),
        ("t10k-images-idx3-ubyte", lambda b: b + b"\x00", "1 bytes after the data"),
        (
            "train-labels-idx1-ubyte",
            lambda b: data_files.encode_idx(np.zeros(29, dtype=np.uint8)),
            "has 30 images but .* has 29 labels",
        ),
        (
            "train-labels-idx1-ubyte",
            lambda b: data_files.encode_idx(np.full(30, 10, dtype=np.uint8)),
            "label 10",
        ),
        (
            "t10k-images-idx3-ubyte",
            lambda b: data_files.encode_idx(np.zeros((10, 28, 27), dtype=np.uint8)),
            r"shape \(28, 27\)",
        ),
    ],
)
def test_corrupt_idx_raises_data_error_naming_file(
    tmp_path, monkeypatch, write_tiny_dataset, file_name, change, message
):
    path = corrupt(tmp_path, monkeypatch, write_tiny_dataset, file_name, change)
    with pytest.raises(DataError, match=message) as info:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert "mnist" in str(info.value) and "\n" not in str(info.value)
    assert str(path.parent) in str(info.value)


def test_checksum_mismatch(tmp_path, write_tiny_dataset):
    contents = write_tiny_dataset(tmp_path, "mnist", gz=False)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    data = bytearray(contents["t10k-images-idx3-ubyte"])
    data[-1] ^= 1  # same size, valid header: only the checksum can tell
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{path} fails its SHA-256 check"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_canonical_checksums_apply_to_local_files(tmp_path, write_tiny_dataset):
    write_tiny_dataset(tmp_path, "fashion_mnist", register=False)
    with pytest.raises(DataError, match=r"c59f468a.*not the canonical fashion-mnist/train-images"):
        load_dataset("fashion_mnist", data_dir=tmp_path, download=False)


@pytest.mark.parametrize(
    "change",
    [lambda gz: gz[: len(gz) // 2], lambda gz: b"\x1f\x8b garbage", lambda gz: b"not gzip at all"],
)
def test_bad_gzip(tmp_path, write_tiny_dataset, change):
    write_tiny_dataset(tmp_path, "mnist", gz=True)
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(DataError, match=rf"{path} is not a valid gzip file"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_gzip_of_truncated_idx_is_truncated(tmp_path, write_tiny_dataset):
    contents = write_tiny_dataset(tmp_path, "mnist", gz=True)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(contents["t10k-images-idx3-ubyte"][:-1]))
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(b"MATLAB 5.0 MAT-file, garbage" * 10), "not a readable MATLAB"),
        (lambda p: scipy.io.savemat(p, {"other": np.zeros(3)}), "no variable 'faces'"),
        (lambda p: scipy.io.savemat(p, {"faces": np.zeros((4096, 15), np.uint8)}), "shape"),
        (lambda p: scipy.io.savemat(p, {"faces": np.full((4096, 10), 2.0)}), r"in \[2.0, 2.0\]"),
    ],
)
def test_corrupt_olivetti(tmp_path, monkeypatch, write, message):
    path = tmp_path / "olivetti" / "olivettifaces.mat"
    path.parent.mkdir()
    write(path)
    monkeypatch.delitem(data_files.CHECKSUMS, "olivetti/olivettifaces.mat")
    with pytest.raises(DataError, match=message):
        load_dataset("olivetti", data_dir=tmp_path, download=False)


def test_olivetti_checksum_mismatch(tmp_path, write_tiny_dataset):
    write_tiny_dataset(tmp_path, "olivetti", register=False)
    with pytest.raises(DataError, match=r"fails its SHA-256 check.*olivetti/olivettifaces\.mat"):
        load_dataset("olivetti", data_dir=tmp_path, download=False)
