"""Large tensors on transparent huge pages, so that a round's `[n, d]` temporaries cost few page
faults.

Every tensor above glibc's mmap threshold gets fresh pages from the kernel and returns them on
free, so each new `[n, d]` tensor (64 MB at 100 MNIST MLP clients, 636 MB at 1,000) is faulted
in 4 KiB page by page when first written: measured on one thread, an out-of-place `torch.add`
of 64 MB took 61 ms against 14 ms into a reused block. PyTorch's CPU allocator backs large
allocations with 2 MiB transparent huge pages when `THP_MEM_ALLOC_ENABLE=1` (it aligns them and
calls `madvise(MADV_HUGEPAGE)`); then the same `torch.add` took 20 ms, and freed memory still
goes back to the kernel (no fragmentation: keeping freed blocks in malloc instead cost 0.7 GiB
of extra peak memory at 1,000 clients). `use_huge_pages` sets the variable unless the user
has (`THP_MEM_ALLOC_ENABLE=0` turns it off); PyTorch reads it at its first large allocation,
so `fedpdmm.setup.build_setup` calls it before loading data. It has no effect where the kernel
has no transparent huge pages (`/sys/kernel/mm/transparent_hugepage/enabled` is `never`).
"""

from __future__ import annotations

import os

VARIABLE = "THP_MEM_ALLOC_ENABLE"


def use_huge_pages() -> bool:
    """Ask PyTorch to put large CPU tensors on huge pages; True unless the user turned it off."""
    return os.environ.setdefault(VARIABLE, "1") == "1"
