"""Keep freed memory in the process, so that a round's `[n, d]` temporaries cost no page faults.

glibc's malloc serves blocks above its mmap threshold (at most 32 MiB) with fresh `mmap` pages
and hands them back to the kernel on `free`; every such tensor is then faulted in page by page
when first written. A round with a server allocates several `[n, d]` tensors (64 MB at 100 MNIST
MLP clients), and measured on one thread an out-of-place `torch.add` of that size took 61 ms
against 14 ms when the freed block is reused (`benchmarks/whole_run.py` shows the whole-run
effect). `keep_freed_memory` turns off mmap-served blocks and heap trimming, so freed blocks
return to malloc's free lists and are reused. The peak memory is unchanged; the resident size no
longer shrinks after a peak. It is a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Configure glibc's malloc as described above (once per process); True if it applied."""
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
