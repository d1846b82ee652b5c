"""Tensor kernels shared by the rules: per-coordinate order statistics and distances.

Per-coordinate kernels run on column blocks: `x[:, block]` is transposed to a contiguous
`[b, n]` array (one row per coordinate) of about 16 MiB, so that the temporary memory is a few
blocks, not more `[n, d]` tensors, and a call makes few parallel regions (many small ones stall
when the cores are shared). Distances between rows use the Gram identity
`||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b` on rows centred at one of them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

_BLOCK_BYTES = 1 << 24
_GRAM_BLOCK_BYTES = 1 << 24


def _block_width(n: int, itemsize: int, budget: int) -> int:
    return max(256, budget // max(1, n * itemsize))


def map_column_blocks(
    x: Tensor, kernel: Callable[..., Tensor], *args: object, rows: Tensor | None = None
) -> Tensor:
    """`[d]` from a kernel over coordinates: `out[j] = kernel(column j of x)`.

    `kernel(c, *args)` maps a contiguous `[b, n]` block (row k = coordinate k of the block) to
    `[b]`. `rows` (int indices) restricts x to those rows without copying all of them.
    """
    n = x.shape[0] if rows is None else rows.numel()
    d = x.shape[1]
    width = _block_width(n, x.element_size(), _BLOCK_BYTES)
    out = x.new_empty(d)
    for start in range(0, d, width):
        block = x[:, start : start + width] if rows is None else x[rows, start : start + width]
        out[start : start + width] = kernel(block.T.contiguous(), *args)
    return out


def median_rows(c: Tensor) -> Tensor:
    """Median of each row of `[b, n]`; for even n the mean of the two middle values."""
    n = c.shape[1]
    lower = c.kthvalue((n + 1) // 2, dim=1, keepdim=True).values
    if n % 2 == 1:
        return lower[:, 0]
    # upper middle value: the smallest value above `lower`, or `lower` if it fills both places
    above = torch.where(c > lower, c, math.inf).amin(dim=1)
    doubled = (c <= lower).sum(dim=1) > n // 2
    return (lower[:, 0] + torch.where(doubled, lower[:, 0], above)) / 2


def trimmed_mean_rows(c: Tensor, f: int) -> Tensor:
    """Mean of each row of `[b, n]` without its f largest and f smallest values."""
    n = c.shape[1]
    return c.sort(dim=1).values[:, f : n - f].mean(dim=1)


def mean_closest_to_median_rows(c: Tensor, keep: int) -> Tensor:
    """Mean of the `keep` values of each row of `[b, n]` closest to the row's median.

    Of two values equally far from the median the smaller is kept. With s the sorted row, the
    kept values are the window s[a : a + keep]: sliding it right from a = 0 trades s[t] for
    s[t + keep], worth it iff s[t + keep] is strictly closer to the median, a condition that
    holds for t < a and fails after (both distances are monotone in t).
    """
    n = c.shape[1]
    s = c.sort(dim=1).values
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
    width = _block_width(n, x.element_size(), _GRAM_BLOCK_BYTES)
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
    """`[n]` bool: True where row i of `[n, d]` has no NaN or Inf (one min/max pass, no copy)."""
    low, high = torch.aminmax(x, dim=1)
    return torch.isfinite(low) & torch.isfinite(high)
