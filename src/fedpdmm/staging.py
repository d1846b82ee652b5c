"""Run directories appear whole or not at all: staging beside the output, then one rename.

A run directory is written under a temporary sibling name `.NAME.partial-XXXXXXXX` and renamed
into place only when every file is complete, so a directory with the final name is always a
finished run. A staging folder records its writer; those of killed writers are removed later.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fedpdmm.errors import FedpdmmError

OWNER_FILE = ".fedpdmm-owner"
"""Inside a staging folder: "PID HOST" of the process writing it (removed before the rename)."""
STALE_AFTER_S = 3600.0
"""A staging folder without an owner file is stale once untouched for this long."""
_STAGING_SUFFIX = len(".partial-") + 8  # tempfile.mkdtemp adds 8 random characters


def check_output_dir(out: Path) -> None:
    """Refuse an `out` that cannot become a new run directory, before any work is done.

    Refused: a path without a name (empty, `.`, `..`), an existing file or non-empty directory,
    a path inside a file, a folder the user cannot write in, a name too long for the filesystem.
    """
    if out.name in ("", ".", ".."):
        raise FedpdmmError(
            f"output path {str(out)!r} names no new directory (an empty --out, '.' or '..'); "
            "give a folder name, e.g. --out runs/first"
        )
    try:
        if out.is_symlink() or out.exists():
            if not out.is_dir():
                raise FedpdmmError(
                    f"output path {out} exists and is not a directory; "
                    "choose another --out or remove it"
                )
            if any(out.iterdir()):
                raise FedpdmmError(
                    f"output directory {out} already exists and is not empty; "
                    "choose another --out or remove it"
                )
        ancestor = out.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise FedpdmmError(
                f"cannot create output directory {out}: {ancestor} is a file, not a directory; "
                "choose another --out"
            )
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise FedpdmmError(
                f"cannot create output directory {out}: no permission to write in {ancestor}; "
                "choose another --out"
            )
        name_max = os.pathconf(ancestor, "PC_NAME_MAX")
    except OSError as error:
        raise FedpdmmError(
            f"cannot use output directory {out}: {error.strerror}; choose another --out"
        ) from None
    if len(os.fsencode(out.name)) + 1 + _STAGING_SUFFIX > name_max:
        raise FedpdmmError(
            f"output directory name {out.name[:40]!r}... is too long for this filesystem "
            f"(at most {name_max - 1 - _STAGING_SUFFIX} bytes); choose a shorter --out"
        )


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the staging folders `.NAME.partial-*` beside `out` that nobody writes; return them.

    A folder is stale when its `OWNER_FILE` names a process of this host that is gone, or, with
    no readable owner, when it has been untouched for `STALE_AFTER_S`. Anything else is kept.
    """
    parent = out.absolute().parent
    if not out.name or not parent.is_dir():
        return []
    try:
        candidates = list(parent.glob(f"{glob.escape('.' + out.name)}.partial-*"))
    except OSError:
        return []
    removed = []
    for path in candidates:
        if path.is_symlink() or not path.is_dir() or not _is_stale(path):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def _is_stale(staging: Path) -> bool:
    try:
        pid_text, host = (staging / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        pid, host = 0, ""
    if pid > 0:
        return host == socket.gethostname() and not _alive(pid)
    try:
        return time.time() - staging.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """Yield a temporary directory beside `out`; on success rename it to `out`, else remove it.

    The temporary directory holds `OWNER_FILE` while it is written; stale ones of earlier,
    killed writers of `out` are removed first (`remove_stale_partials`).
    """
    check_output_dir(out)
    parent = out.absolute().parent
    staging = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
        (staging / OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    except OSError as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise FedpdmmError(f"cannot create output directory {out}: {error.strerror}") from None
    try:
        yield staging
        (staging / OWNER_FILE).unlink(missing_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise FedpdmmError(f"cannot write results to {out}: {error.strerror}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
