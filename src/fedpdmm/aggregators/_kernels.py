"""Tensor kernels shared by the rules: per-coordinate order statistics and distances.

Per-coordinate kernels run on column blocks: `x[:, block]` is transposed to a contiguous
`[b, n]` array (one row per coordinate) of about 2^15 elements, whose rows are sorted
(`sort_rows`). That keeps each block in cache, keeps temporary memory at a few blocks instead
of more `[n, d]` tensors, and keeps every op on a block under torch's parallel grain size, so
it runs on the calling thread. Blocks are shared out to `torch.get_num_threads()` Python
threads (torch and numpy release the GIL inside ops) instead of opening one OpenMP parallel
region per op: such regions stall whenever another process holds one of the cores. Distances
between rows use the Gram identity `||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b` on rows centred at
one of them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

_BLOCK_ELEMENTS = 1 << 15  # torch's grain size: smaller ops do not fork threads
_NUMPY_SORTED = (torch.float32, torch.float64)
_GRAM_BLOCK_BYTES = 1 << 24


def map_column_blocks(
    x: Tensor,
    kernel: Callable[..., Tensor],
    *args: object,
    rows: Tensor | None = None,
    workers: int | None = None,
) -> Tensor:
    """`[d]` from a kernel over coordinates: `out[j] = kernel(column j of x)`.

    `kernel(c, *args)` maps a contiguous `[b, n]` block (row k = coordinate k of the block, a
    copy the kernel may overwrite) to `[b]`. `rows` (int indices) restricts x to those rows
    without copying all of them. `workers` threads share the blocks (default
    `torch.get_num_threads()`); the result does not depend on it.
    """
    n = x.shape[0] if rows is None else rows.numel()
    d = x.shape[1]
    width = max(64, _BLOCK_ELEMENTS // max(1, n))
    out = x.new_empty(d)
    starts = range(0, d, width)
    workers = min(workers or torch.get_num_threads(), len(starts))

    def run(share: range) -> None:
        for start in share:
            block = x[:, start : start + width] if rows is None else x[rows, start : start + width]
            # a copy even where the transpose is already contiguous (d = 1): kernels sort it
            columns = block.T.clone(memory_format=torch.contiguous_format)
            out[start : start + width] = kernel(columns, *args)

    if workers <= 1:
        run(starts)
        return out
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, [starts[k::workers] for k in range(workers)]))
    return out


def sort_rows(c: Tensor) -> Tensor:
    """The values of each row of `[b, n]` in increasing order, sorted in place if possible.

    Contiguous CPU float32/float64 blocks go through numpy's sort, which numpy >= 2 runs on
    AVX-512/AVX2 sorting networks: about 20x faster than `torch.sort` on rows of ~100 values
    (which also builds an index tensor). Other tensors use `torch.sort`.
    """
    if c.device.type == "cpu" and c.dtype in _NUMPY_SORTED and c.is_contiguous():
        c.numpy().sort(axis=1)  # `c` is a copy made by `map_column_blocks`, never the input
        return c
    return c.sort(dim=1).values


def median_rows(c: Tensor) -> Tensor:
    """Median of each row of `[b, n]`; for even n the mean of the two middle values."""
    n = c.shape[1]
    s = sort_rows(c)
    return s[:, n // 2] if n % 2 else (s[:, n // 2 - 1] + s[:, n // 2]) / 2


def trimmed_mean_rows(c: Tensor, f: int) -> Tensor:
    """Mean of each row of `[b, n]` without its f largest and f smallest values."""
    n = c.shape[1]
    return sort_rows(c)[:, f : n - f].mean(dim=1)


def mean_closest_to_median_rows(c: Tensor, keep: int) -> Tensor:
    """Mean of the `keep` values of each row of `[b, n]` closest to the row's median.

    Of two values equally far from the median the smaller is kept. With s the sorted row, the
    kept values are the window s[a : a + keep]: sliding it right from a = 0 trades s[t] for
    s[t + keep], worth it iff s[t + keep] is strictly closer to the median, a condition that
    holds for t < a and fails after (both distances are monotone in t).
    """
    n = c.shape[1]
    s = sort_rows(c)
    middle = s[:, n // 2] if n % 2 else (s[:, n // 2 - 1] + s[:, n // 2]) / 2
    median = middle[:, None]
    shifted = (s[:, keep:] - median) < (median - s[:, : n - keep])
    start = shifted.sum(dim=1, keepdim=True)
    return s.gather(1, start + torch.arange(keep)).mean(dim=1)


def pairwise_sq_distances(x: Tensor) -> Tensor:
    """`[n, n]` float64 squared Euclidean distances between the rows of `[n, d]`.

    Rows are first centred at the row of median norm (distances are translation invariant, and
    this keeps rounding relative to the spread of the rows, not to their distance from the
    origin). Each block's Gram matrix is computed in x's dtype and accumulated in float64.
    Exactly symmetric, clamped at 0, with an exact 0 diagonal.
    """
    n, d = x.shape
    norms = torch.linalg.vector_norm(x, dim=1)
    anchor = x[norms.argsort(stable=True)[(n - 1) // 2]]
    width = max(256, _GRAM_BLOCK_BYTES // (n * x.element_size()))
    gram = torch.zeros(n, n, dtype=torch.float64)
    for start in range(0, d, width):
        block = x[:, start : start + width] - anchor[start : start + width]
        gram += (block @ block.T).double()
    sq = gram.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2 * gram).clamp_(min=0)
    dist = (dist + dist.T) / 2
    return dist.fill_diagonal_(0)


def distances_to(x: Tensor, point: Tensor) -> Tensor:
    """`[n]` Euclidean distances `||x_i - point||`, computed directly (no Gram cancellation)."""
    return torch.cdist(x, point[None, :], compute_mode="donot_use_mm_for_euclid_dist")[:, 0]


def weighted_rows_sum(weights: Tensor, x: Tensor) -> Tensor:
    """`sum_i weights_i x_i`: `[n] @ [n, d] -> [d]` in x's dtype."""
    return weights.to(x.dtype) @ x


def compare_rows(a: Tensor, b: Tensor) -> int:
    """-1, 0 or 1 as row a is lexicographically below, equal to or above row b."""
    differ = (a != b).nonzero()
    if differ.numel() == 0:
        return 0
    first = int(differ[0, 0])
    return -1 if bool(a[first] < b[first]) else 1


def rank_rows(scores: Tensor, x: Tensor) -> list[int]:
    """Row indices of `[n, d]` by increasing `scores` `[n]`; equal finite scores are ordered by
    the rows' values (`compare_rows`), infinite ones by index.

    Breaking ties by value, not position, keeps selections permutation invariant (e.g. two
    mutual nearest neighbours have equal 1-neighbour Krum scores).
    """
    order = scores.sort(stable=True).indices.tolist()
    values = scores[order].tolist()
    by_row = functools.cmp_to_key(lambda i, j: compare_rows(x[i], x[j]))
    ranked: list[int] = []
    start = 0
    for stop in range(1, len(order) + 1):
        if stop == len(order) or values[stop] != values[start]:
            group = order[start:stop]
            if len(group) > 1 and math.isfinite(values[start]):
                group = sorted(group, key=by_row)
            ranked += group
            start = stop
    return ranked


def lowest_row(scores: Tensor, x: Tensor) -> int:
    """Index of the lowest score, ties broken as in `rank_rows`."""
    tied = (scores == scores.min()).nonzero()[:, 0].tolist()
    by_row = functools.cmp_to_key(lambda i, j: compare_rows(x[i], x[j]))
    return tied[0] if len(tied) == 1 else min(tied, key=by_row)


def finite_rows(x: Tensor) -> Tensor:
    """`[n]` bool: True where row i of `[n, d]` has no NaN or Inf.

    One sum over everything settles the common all-finite case in a single read (NaN and Inf make
    it non-finite); otherwise row sums clear most rows, and only rows whose sum is not finite
    (possibly an overflow of finite values) are checked entry-wise. No `[n, d]` boolean
    temporary is built unless a row is suspect.
    """
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    finite = torch.isfinite(x.sum(dim=1))
    suspects = (~finite).nonzero()[:, 0]
    if suspects.numel():
        finite[suspects] = torch.isfinite(x[suspects]).all(dim=1)
    return finite


def small_eigh(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """`torch.linalg.eigh` of a small `[n, n]` matrix on one thread.

    Threads gain nothing at this size, and a multi-threaded LAPACK call stalls for hundreds of
    milliseconds when another process holds a core; the thread count is restored after.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(matrix)
    finally:
        torch.set_num_threads(threads)
