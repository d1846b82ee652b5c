"""Dataset files: the canonical file table, SHA-256 checksums, IDX and MATLAB .mat decoding.

IDX format (LeCun, Cortes, Burges; the MNIST distribution format): a 4-byte magic number
`0x00 0x00 <type code> <ndim>`, then `ndim` big-endian uint32 sizes, then the values in C order.
MNIST and Fashion-MNIST use type 0x08 (uint8): images have magic 0x00000803 ([N, 28, 28]),
labels 0x00000801 ([N]).

Every file may be stored as is or gzip-compressed (`<name>.gz`); checksums are of the decompressed
bytes, because the `.gz` bytes differ between mirrors.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpdmm.errors import DataError

CHECKSUMS: dict[str, str] = {
    "mnist/train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "mnist/train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "mnist/t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "mnist/t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
    "fashion-mnist/train-images-idx3-ubyte": (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
    ),
    "fashion-mnist/train-labels-idx1-ubyte": (
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
    ),
    "fashion-mnist/t10k-images-idx3-ubyte": (
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
    ),
    "fashion-mnist/t10k-labels-idx1-ubyte": (
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
    ),
    "olivetti/olivettifaces.mat": (
        "b1988d02c72fe5b8ee82b5ef3bb7982eafc74f1e1ff0ae0ade35061ad0af534d"
    ),
}
"""SHA-256 of the decompressed canonical files, keyed by `<folder>/<file name>`.

A key missing from the table is not checked (tests swap in the hashes of small generated files).
"""

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
OLIVETTI_URL = "https://ndownloader.figshare.com/files/5976027"


@dataclass(frozen=True)
class FileSet:
    """The files of one dataset.

    folder: folder name under a data root; names: file names without `.gz` (checksum keys are
    `folder/name`); remote_names: names as served by a mirror (`<mirror>/<folder>/<remote name>`);
    urls: the canonical download address of each file.
    """

    folder: str
    names: tuple[str, ...]
    remote_names: tuple[str, ...]
    urls: tuple[str, ...]


FILE_SETS: dict[str, FileSet] = {
    "mnist": FileSet(
        "mnist",
        IDX_NAMES,
        tuple(f"{n}.gz" for n in IDX_NAMES),
        tuple(f"{MNIST_URL}{n}.gz" for n in IDX_NAMES),
    ),
    "fashion_mnist": FileSet(
        "fashion-mnist",
        IDX_NAMES,
        tuple(f"{n}.gz" for n in IDX_NAMES),
        tuple(f"{FASHION_MNIST_URL}{n}.gz" for n in IDX_NAMES),
    ),
    "olivetti": FileSet(
        "olivetti", ("olivettifaces.mat",), ("olivettifaces.mat",), (OLIVETTI_URL,)
    ),
}


def find_file(folder: Path, name: str) -> Path | None:
    """`folder/name` if it is a file, else `folder/name.gz` if that is, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_decompressed(path: Path) -> bytes:
    """The bytes of `path`, gunzipped when its name ends in `.gz`."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from err
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path} is not a valid gzip file ({err}); delete it and fetch it again"
        ) from err


def sha256_of_file(path: Path, *, gunzip: bool) -> str:
    """SHA-256 hex digest of the (optionally gunzipped) content of `path`, read in chunks."""
    digest = hashlib.sha256()
    with gzip.open(path, "rb") if gunzip else path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(data: bytes, key: str, source: Path | str) -> None:
    """Raise DataError unless sha256(data) matches `CHECKSUMS[key]` (no check if key absent)."""
    expected = CHECKSUMS.get(key)
    if expected is None:
        return
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DataError(
            f"{source} fails its SHA-256 check (expected {expected}, got {actual}): it is corrupt "
            f"or not the canonical {key}; delete it and fetch it again"
        )


def parse_idx(data: bytes, source: Path | str) -> np.ndarray:
    """Decode IDX bytes into an array of shape `dims` (native byte order)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{source} is not an IDX file: bad magic number 0x{data[:4].hex()}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source} is truncated: {len(data)} bytes, shorter than its header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[data[2]])
    count = math.prod(dims)
    expected = header + count * dtype.itemsize
    if len(data) < expected:
        raise DataError(
            f"{source} is truncated: its header says shape {dims} ({expected} bytes) "
            f"but it has {len(data)} bytes"
        )
    if len(data) > expected:
        raise DataError(
            f"{source} has {len(data) - expected} bytes after the data its header announces "
            f"(shape {dims}); the file is corrupt"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes of `array` (inverse of `parse_idx`); dtype must be one of `IDX_DTYPES`."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use uint8, int8/16/32, float32/64")
    big_endian = array.astype(np.dtype(IDX_DTYPES[code]), copy=False)
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(big_endian).tobytes()


def read_idx(path: Path, key: str, magic: int) -> np.ndarray:
    """Read, decode and checksum the IDX file `path`, which must carry the magic number `magic`."""
    data = read_decompressed(path)
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path} has IDX magic number {found:#010x}, expected {magic:#010x}; "
            f"it is corrupt or not {key}"
        )
    array = parse_idx(data, path)
    verify_checksum(data, key, path)
    return array


def read_olivetti_faces(path: Path, key: str) -> np.ndarray:
    """The `faces` matrix [4096, N] of an `olivettifaces.mat` file, checksummed.

    Column k is image k, a 64x64 image stored column-major; N must be a multiple of 10
    (10 images per person).
    """
    import scipy.io

    data = read_decompressed(path)
    try:
        mat = scipy.io.loadmat(io.BytesIO(data), variable_names=["faces"])
    except Exception as err:  # scipy raises many types on corrupt input
        raise DataError(f"{path} is not a readable MATLAB .mat file ({err})") from err
    verify_checksum(data, key, path)
    faces = mat.get("faces")
    if not isinstance(faces, np.ndarray):
        raise DataError(f"{path} has no variable 'faces'; it is not the Olivetti faces file")
    if faces.ndim != 2 or faces.shape[0] != 64 * 64 or faces.shape[1] == 0 or faces.shape[1] % 10:
        raise DataError(
            f"{path}: 'faces' has shape {faces.shape}, expected (4096, 10 * number of people)"
        )
    return faces
