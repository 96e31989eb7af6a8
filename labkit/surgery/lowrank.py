"""A weight change as a LoRA: truncated SVD, the rank rules of kohya's resize_lora.py, and how
much of the change a rank keeps.

A change D (conv kernels flattened to [out, in*k*k]) is U S V^T; its best rank-r approximation
(Eckart-Young) keeps the r largest singular values: up = U_r S_r, down = V_r^T, alpha = r (so
the scale alpha/rank is 1 and up @ down is the approximation itself). The energy kept is
sum(s_i^2, i<r) / sum(s_i^2): the share of |D|_F^2 the rank holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from labkit.errors import LabkitError


def _ratio(s: torch.Tensor, target: float) -> int:
    """sv_ratio: keep the singular values above the largest divided by `target`."""
    return int((s > s[0] / target).sum())


def _fro(s: torch.Tensor, target: float) -> int:
    """sv_fro: the smallest rank whose Frobenius norm is `target` of the whole change's."""
    kept = torch.cumsum(s.square(), 0) / s.square().sum()
    return int(torch.searchsorted(kept, torch.tensor(target**2) - 1e-7)) + 1


def _cumulative(s: torch.Tensor, target: float) -> int:
    """sv_cumulative: the smallest rank whose singular values sum to `target` of their total."""
    kept = torch.cumsum(s, 0) / s.sum()
    return int(torch.searchsorted(kept, torch.tensor(target) - 1e-7)) + 1


# kohya resize_lora.py's dynamic methods: name -> (rank from the singular values, valid targets).
DYNAMIC: dict[str, tuple[Callable[[torch.Tensor, float], int], str]] = {
    "sv_ratio": (_ratio, "a ratio >= 1 (largest / smallest kept singular value)"),
    "sv_fro": (_fro, "a share in (0, 1] of the Frobenius norm"),
    "sv_cumulative": (_cumulative, "a share in (0, 1] of the sum of singular values"),
}


class Factors(NamedTuple):
    """A rank-r LoRA of one change: up [out, r(,1,1)], down [r, in(,k,k)], its singular values
    (all of them, for spectra) and the energy kept."""

    up: torch.Tensor
    down: torch.Tensor
    singular_values: torch.Tensor
    energy: float

    @property
    def rank(self) -> int:
        """The rank kept."""
        return int(self.down.shape[0])


def check_rule(dynamic: str | None, ratio: float | None) -> None:
    """Raise LabkitError for an unknown dynamic method or a ratio it cannot use."""
    if dynamic is None:
        return
    if dynamic not in DYNAMIC:
        raise LabkitError(f"unknown dynamic method {dynamic!r}; choose one of "
                          f"{', '.join(DYNAMIC)}.")
    ok = ratio is not None and (ratio >= 1 if dynamic == "sv_ratio" else 0 < ratio <= 1)
    if not ok:
        raise LabkitError(f"{dynamic} needs {DYNAMIC[dynamic][1]}; got {ratio}.",
                          hint="Pass --ratio, e.g. --ratio 0.9 (sv_ratio: --ratio 4).")


def choose_rank(s: torch.Tensor, rank: int | None, dynamic: str | None = None,
                ratio: float | None = None) -> int:
    """The rank to keep: `rank`, or the dynamic method's, capped by `rank` when both are given;
    at least 1 and at most the number of singular values."""
    if dynamic is not None and len(s) and float(s[0]) > 0:
        chosen = DYNAMIC[dynamic][0](s, float(ratio))
        chosen = min(chosen, rank) if rank else chosen
    else:
        chosen = rank if rank else len(s)
    return max(1, min(chosen, len(s)))


def energy_kept(s: torch.Tensor, rank: int) -> float:
    """The share of the change's squared Frobenius norm its first `rank` singular values hold."""
    total = float(s.square().sum())
    return 1.0 if total == 0 else float(s[:rank].square().sum()) / total


def factor(delta: torch.Tensor, rank: int | None, dynamic: str | None = None,
           ratio: float | None = None) -> Factors:
    """The truncated SVD of one change (float32) as LoRA factors."""
    flat = delta.float().flatten(1)
    u, s, vh = torch.linalg.svd(flat, full_matrices=False)
    r = choose_rank(s, rank, dynamic, ratio)
    up, down = u[:, :r] * s[:r], vh[:r]
    if delta.ndim == 4:
        up = up.reshape(*up.shape, 1, 1)
        down = down.reshape(r, *delta.shape[1:])
    return Factors(up.contiguous(), down.contiguous(), s, energy_kept(s, r))


def rebuild(factors: Factors) -> torch.Tensor:
    """up @ down in the change's shape (the inverse of factor, up to the truncation)."""
    up, down = factors.up.flatten(1), factors.down.flatten(1)
    return (up @ down).reshape(factors.up.shape[0], *factors.down.shape[1:])
