"""Where dataset files are found, and their download into the user cache.

Search order, first folder holding every file of the dataset wins:

1. `data_dir` (the CLI's `--data-dir`, or the config), a root holding the dataset folders;
2. the root in the environment variable `FEDPDMM_DATA`;
3. the user cache, `$XDG_CACHE_HOME/fedpdmm` or `~/.cache/fedpdmm`;
4. `/usr/share/datasets` (Debian's `dataset-fashion-mnist` installs there);
5. a download into the user cache, from the canonical mirrors or from `$FEDPDMM_MIRROR/<folder>/`.

Files found locally are not trusted more than downloaded ones: the loaders checksum both.
"""

from __future__ import annotations

import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from fedpdmm.data.files import CHECKSUMS, FILE_SETS, FileSet, find_file, sha256_of_file
from fedpdmm.errors import ConfigError, DataError

DATA_ENV = "FEDPDMM_DATA"
MIRROR_ENV = "FEDPDMM_MIRROR"
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")
DOWNLOAD_TIMEOUT_S = 30.0
DOWNLOAD_CHUNK_BYTES = 1 << 20


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/fedpdmm` if that variable is an absolute path, else `~/.cache/fedpdmm`."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "fedpdmm"


def search_roots(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """The data roots searched, in order, each with the setting it comes from."""
    roots: list[tuple[str, Path]] = []
    if data_dir is not None:
        roots.append(("--data-dir", Path(data_dir).expanduser()))
    from_env = os.environ.get(DATA_ENV, "")
    if from_env:
        roots.append((DATA_ENV, Path(from_env).expanduser()))
    roots.append(("user cache", user_cache_dir()))
    roots.append(("system", SYSTEM_DATA_ROOT))
    return roots


def missing_files(folder: Path, files: FileSet) -> list[str]:
    """Names of `files` found in `folder` neither as is nor gzipped."""
    return [name for name in files.names if find_file(folder, name) is None]


def resolve_data_dir(
    name: str, *, data_dir: str | Path | None = None, download: bool = True
) -> Path:
    """The folder holding every file of dataset `name`, downloading into the cache if needed.

    Raises DataError naming every place searched (and the download tried) when none has the files.
    """
    files = FILE_SETS.get(name)
    if files is None:
        raise ConfigError(
            f"dataset {name!r} has no files to locate; datasets with files: {', '.join(FILE_SETS)}"
        )
    searched = []
    for origin, root in search_roots(data_dir):
        folder = root / files.folder
        missing = missing_files(folder, files)
        if not missing:
            return folder
        why = "no such folder" if not folder.is_dir() else f"missing {', '.join(missing)}"
        searched.append(f"{origin} {folder} ({why})")
    cache = user_cache_dir() / files.folder
    if not download:
        searched.append("download disabled")
    else:
        failure = download_missing(name, files, cache)
        if failure is None:
            return cache
        searched.append(failure)
    raise DataError(_not_found_message(name, files, searched))


def _not_found_message(name: str, files: FileSet, searched: list[str]) -> str:
    names = ", ".join(f"{n}[.gz]" for n in files.names)
    apt = " or `apt install dataset-fashion-mnist`," if name == "fashion_mnist" else ""
    return (
        f"dataset {name} not found; searched: {'; '.join(searched)}. To provide it, put {names} "
        f"in DIR/{files.folder}/ and pass --data-dir DIR or set {DATA_ENV}=DIR,{apt} or run once "
        f"with internet access (or {MIRROR_ENV}=URL) to download into {user_cache_dir()}"
    )


def download_urls(files: FileSet) -> tuple[str, ...]:
    """Download address of each file: `$FEDPDMM_MIRROR/<folder>/<remote name>` or canonical."""
    mirror = os.environ.get(MIRROR_ENV, "")
    if not mirror:
        return files.urls
    return tuple(f"{mirror.rstrip('/')}/{files.folder}/{r}" for r in files.remote_names)


def download_missing(name: str, files: FileSet, folder: Path) -> str | None:
    """Download the files missing from `folder`; None on success, else why the download failed.

    A network failure is returned (it belongs in the not-found message); a corrupt download
    raises DataError at once.
    """
    sources = zip(files.names, files.remote_names, download_urls(files), strict=True)
    todo = [(file, remote, url) for file, remote, url in sources if not find_file(folder, file)]
    print(f"fedpdmm: downloading {name} into {folder}", file=sys.stderr)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"download impossible: cannot create {folder} ({err.strerror or err})"
    for local_name, remote, url in todo:
        try:
            download_file(url, folder / remote, f"{files.folder}/{local_name}")
        except (OSError, http.client.HTTPException, ValueError) as err:
            return f"download {url} failed ({_reason(err)})"
    return None


def _reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def download_file(url: str, dest: Path, key: str, timeout: float | None = None) -> None:
    """Fetch `url` to `dest`, checking the decompressed SHA-256 against `CHECKSUMS[key]`.

    The bytes go to a hidden temporary file beside `dest`, renamed only once verified, so a failed,
    interrupted or corrupt download never leaves a file that looks valid. Network errors propagate
    (OSError, http.client.HTTPException); a corrupt file raises DataError.
    """
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=timeout or DOWNLOAD_TIMEOUT_S) as response:
                announced = response.headers.get("Content-Length")
                shutil.copyfileobj(response, out, DOWNLOAD_CHUNK_BYTES)
            size = out.tell()
        if announced is not None and announced.isdigit() and size != int(announced):
            raise ConnectionError(f"connection closed after {size} of {announced} bytes")
        gunzip = dest.suffix == ".gz"
        try:
            actual = sha256_of_file(tmp, gunzip=gunzip)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"the file downloaded from {url} is not valid gzip ({err})") from err
        expected = CHECKSUMS.get(key)
        if expected is not None and actual != expected:
            raise DataError(
                f"the file downloaded from {url} fails its SHA-256 check (expected {expected}, "
                f"got {actual}); the mirror serves a corrupt or different file, nothing was kept"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
