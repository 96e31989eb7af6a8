"""Tensor arithmetic for statistics, streamed in chunks: running moments of one tensor, and how
two tensors differ.

Numbers are computed in float32 over chunks of CHUNK elements (integers in float64, exactly);
sums, means and variances are carried across chunks in float64 (Chan's pairwise update), so
memory stays about one tensor plus one chunk. NaN and Inf are counted, and every other
statistic is taken over the finite values only; `std` is the population standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# Chunks small enough to stay in the CPU cache between the passes over them (measured: 64K-256K
# float32 values run 2-4x faster than 1M and more).
CHUNK = 1 << 17
# Sums of squares are float32 dot products (relative error ~1e-7); when a chunk's variance is
# under this fraction of its mean square, subtracting the mean's share would cancel too many
# digits, so the squares are summed again around the mean.
RECENTRE = 0.1
@dataclass
class Moments:
    """Running count, mean, sum of squared deviations, extremes and special counts."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    zeros: int = 0
    nans: int = 0
    infs: int = 0
    total: int = 0

    def add(self, chunk: torch.Tensor, values: np.ndarray | None = None) -> None:
        """Fold one chunk (float32 or float64, 1-D) into the running figures; `values`, its
        numpy view, where the caller keeps one (numpy's min, max and == 0 count run several
        times faster than torch's)."""
        if chunk.numel() == 0:
            return
        if values is None:
            values = chunk.numpy()
        self.total += values.size
        self.zeros += int(np.count_nonzero(values == 0))
        lo, hi = float(values.min()), float(values.max())  # NaN if any value is NaN
        if not (math.isfinite(lo) and math.isfinite(hi)):
            finite = np.isfinite(values)
            nans = int(np.count_nonzero(np.isnan(values)))
            self.nans += nans
            self.infs += values.size - int(np.count_nonzero(finite)) - nans
            chunk = chunk[torch.from_numpy(finite)]
            if chunk.numel() == 0:
                return
            lo, hi = float(chunk.min()), float(chunk.max())
        n = chunk.numel()
        total = chunk.sum().item()
        mean = total / n
        squares = torch.dot(chunk, chunk).item()
        m2 = squares - total * mean
        if m2 < RECENTRE * squares:  # the mean dominates: sum the squares around it instead
            centred = chunk - mean
            m2 = torch.dot(centred, centred).item()
        delta = mean - self.mean
        count = self.n + n
        self.mean += delta * n / count
        self.m2 += m2 + delta * delta * self.n * n / count
        self.n = count
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)

    def result(self) -> dict[str, float]:
        """The statistics columns (NaN where no finite value was seen)."""
        nan = math.nan
        finite = self.n > 0
        return {
            "mean": self.mean if finite else nan,
            "std": math.sqrt(max(self.m2, 0.0) / self.n) if finite else nan,
            "min": self.lo if finite else nan,
            "max": self.hi if finite else nan,
            "abs_max": max(abs(self.lo), abs(self.hi)) if finite else nan,
            "l2_norm": math.sqrt(max(self.m2, 0.0) + self.n * self.mean ** 2) if finite else nan,
            "zero_fraction": self.zeros / self.total if self.total else nan,
            "nan_count": self.nans,
            "inf_count": self.infs,
        }


def _work_dtype(t: torch.Tensor) -> torch.dtype | None:
    """float32 for floats, float64 for integers and bools (exact), None where stats do not apply."""
    if t.is_complex():
        return None
    return torch.float32 if t.is_floating_point() else torch.float64


def work_chunks(parts: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """1-D parts in their working dtype: float32, or float64 (exact) for integers and bools;
    nothing for complex values."""
    for part in parts:
        dtype = _work_dtype(part)
        if dtype is None:
            return
        yield part.reshape(-1).to(dtype)


def chunks(t: torch.Tensor, size: int | None = None) -> Iterator[torch.Tensor]:
    """A tensor's values as 1-D chunks of `size` (default CHUNK) in their working dtype."""
    return work_chunks(t.reshape(-1).split(size or CHUNK))


def _reused_chunks(parts: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """work_chunks with their numpy views, converted into one reused buffer (each chunk valid
    until the next): a fresh tensor per chunk costs page faults that take as long as the
    conversion itself, and a fresh view or slice per chunk costs as much as a reduction."""
    out: torch.Tensor | None = None
    values = np.empty(0)
    for part in parts:
        dtype = _work_dtype(part)
        if dtype is None:
            return
        flat = part.reshape(-1)
        if flat.dtype == dtype:
            yield flat, flat.numpy()
            continue
        n = flat.numel()
        if out is None or out.dtype != dtype or out.numel() < n:
            out = torch.empty(n, dtype=dtype)
            values = out.numpy()
        if out.numel() == n:
            yield out.copy_(flat), values
        else:
            yield out[:n].copy_(flat), values[:n]


def describe_parts(parts: Iterable[torch.Tensor]) -> dict[str, float]:
    """The statistics of the values of consecutive parts of one tensor (see `describe`)."""
    moments = Moments()
    for chunk, values in _reused_chunks(parts):
        moments.add(chunk, values)
    return moments.result()


def describe(t: torch.Tensor) -> dict[str, float]:
    """The statistics columns of one tensor: mean, std, min, max, abs_max, l2_norm,
    zero_fraction (of all values), nan_count, inf_count; all but the counts over finite values."""
    return describe_parts(t.reshape(-1).split(CHUNK))


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block, restoring the setting after: on cache-sized
    chunks torch's thread pool costs more than it gives (5-10x on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tolerance(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(rtol, atol) of the coarser float dtype of the two: one rounding step of it."""
    floats = [t.dtype for t in (a, b) if t.is_floating_point()]
    if not floats:
        return 0.0, 0.0
    info = max((torch.finfo(d) for d in floats), key=lambda i: i.eps)
    return info.eps, info.tiny * info.eps


def difference(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """How b differs from a (same shape): max_abs_diff, rel_diff (||a-b|| / ||a||), cosine,
    l2_a, l2_diff and status ("equal", "close": within one rounding step of the coarser dtype,
    "different"). NaN in the same places count as equal."""
    rtol, atol = _tolerance(a, b)
    max_abs, aa, bb, ab, dd = 0.0, 0.0, 0.0, 0.0, 0.0
    equal = close = True
    for ca, cb in zip(chunks(a), chunks(b), strict=True):
        common = torch.promote_types(ca.dtype, cb.dtype)
        ca, cb = ca.to(common), cb.to(common)
        both_nan = ca.isnan() & cb.isnan()
        diff = torch.where(both_nan, 0.0, ca - cb).abs()
        equal = equal and bool(((ca == cb) | both_nan).all())
        close = close and bool((diff <= atol + rtol * ca.abs()).all())
        max_abs = max(max_abs, float(diff.nan_to_num(nan=math.inf).max()) if diff.numel() else 0.0)
        fa, fb, fd = (t.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0) for t in (ca, cb, diff))
        aa += torch.dot(fa, fa).item()
        bb += torch.dot(fb, fb).item()
        ab += torch.dot(fa, fb).item()
        dd += torch.dot(fd, fd).item()
    l2_a, l2_diff = math.sqrt(aa), math.sqrt(dd)
    return {"max_abs_diff": max_abs,
            "rel_diff": l2_diff / l2_a if l2_a else (0.0 if l2_diff == 0 else math.inf),
            "cosine": ab / math.sqrt(aa * bb) if aa and bb else math.nan,
            "l2_a": l2_a, "l2_diff": l2_diff,
            "status": "equal" if equal else "close" if close else "different"}
