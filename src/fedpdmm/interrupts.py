"""Stopping cleanly: SIGTERM handled like Ctrl-C, and worker processes that die with their parent.

A process killed by SIGTERM with Python's default handling runs no `finally` block, so the
processes it started (sweep workers, a Flower federation) would be left running. Under
`sigterm_as_interrupt` SIGTERM raises KeyboardInterrupt instead, and the code that started them
stops them on the way out. `die_with_parent` covers what no handler can: a parent killed by
SIGKILL (Linux only; elsewhere it does nothing).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (`PR_SET_PDEATHSIG`).

    A parent that died before this call (while a spawned worker was still importing) is caught
    by comparing the current parent with the one that spawned this process: the worker exits."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    spawner = multiprocessing.parent_process()
    if spawner is not None and os.getppid() != spawner.pid:
        os._exit(1)
