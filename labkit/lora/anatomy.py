"""The weight change one LoRA-like module makes, and the spectrum of that change.

LoRA / LoCon: delta = (alpha / rank) * up @ down (conv kernels flattened; an optional `mid`
core for kohya's conv decomposition). LoHa: (alpha / rank) * (w1a @ w1b) * (w2a @ w2b),
elementwise. LoKr: kron(w1, w2), each factor whole or a low-rank product, scaled by alpha / rank
when one is low-rank (LyCORIS' rule). Full: the stored diff. DoRA: its LoRA part; the weight it
makes, `m * (W + delta) / ||W + delta||` (`decompose`), needs the patched weight W too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import torch

Tensors = Mapping[str, torch.Tensor]

# A singular value counts towards the rank when it is above this share of the largest one.
REL_THRESHOLD = 1e-2
# DoRA magnitude keys that always hold one norm per output row: PEFT's, (out,) for a linear
# layer, (1, out, 1, 1) for a conv. LyCORIS' `dora_scale` tells its axis by its shape instead.
PER_OUTPUT_ROW = (".lora_magnitude_vector", ".lora_magnitude_vector.weight")
# The role that shows what a DoRA module wraps (else a LoRA: down and up).
DORA_WRAPS = (("hada_w1_a", "loha"), ("lokr_w1", "lokr"), ("lokr_w1_a", "lokr"))
# Added to DoRA's norms, as LyCORIS and ComfyUI do (PEFT adds none): float32's, as computed here.
NORM_EPS = torch.finfo(torch.float32).eps


class Scale(NamedTuple):
    """Rank, alpha and scale = alpha / rank of a module (rank None: a full diff, scale 1; a LoKr
    of two whole factors: the rank of their kron, scale 1)."""

    rank: int | None
    alpha: float | None
    scale: float


def _alpha(t: Tensors, rank: int) -> float:
    return float(t["alpha"].float()) if "alpha" in t else float(rank)


def _low_rank(t: Tensors, a: str, b: str) -> int | None:
    """The rank of the low-rank pair (a, b) when the module holds it."""
    return int(t[b].shape[0]) if a in t and b in t else None


def _whole_rank(w: torch.Tensor) -> int:
    """The largest rank a whole factor can have (a conv kernel flattened to out x in*k*k)."""
    return min(int(w.shape[0]), math.prod(int(n) for n in w.shape[1:]))


def part_kind(kind: str, t: Tensors) -> str:
    """The kind whose rule gives a module's weight change: a DoRA's is that of the LoRA, LoHa or
    LoKr it wraps (LyCORIS writes `dora_scale` beside any of them)."""
    if kind != "dora":
        return kind
    return next((wrapped for role, wrapped in DORA_WRAPS if role in t), "lora")


def scale_of(kind: str, t: Tensors) -> Scale:
    """Rank, alpha and scale of one module's tensors (roles as keys: down, up, alpha, ...)."""
    kind = part_kind(kind, t)
    if kind in ("lora", "locon"):
        rank = int(t["down"].shape[0])
    elif kind == "loha":
        rank = int(t["hada_w1_b"].shape[0])
    elif kind == "lokr":
        rank = _low_rank(t, "lokr_w1_a", "lokr_w1_b") or _low_rank(t, "lokr_w2_a", "lokr_w2_b")
        if rank is None:  # both factors whole: LyCORIS ignores alpha; kron multiplies ranks
            whole = (_whole_rank(t["lokr_w1"]) * _whole_rank(t["lokr_w2"])
                     if "lokr_w1" in t and "lokr_w2" in t else None)
            return Scale(whole, float(t["alpha"]) if "alpha" in t else None, 1.0)
    else:
        return Scale(None, None, 1.0)
    alpha = _alpha(t, rank)
    return Scale(rank, alpha, alpha / rank)


def _tucker(core: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LyCORIS' Tucker rebuild: core [r, r, k, k] with a [r, out] and b [r, in] -> [out, in, k, k]."""
    # einsum hands back a permuted view; torch.kron (LoKr) refuses such strides, so make it dense.
    return torch.einsum("i j k l, j r, i p -> p r k l", core, b, a).contiguous()


def _product(t: Tensors, whole: str | None, a: str, b: str, core: str | None = None) -> torch.Tensor:
    """A factor: stored whole, rebuilt from a Tucker core, or the product a @ b."""
    if whole is not None and whole in t:
        return t[whole]
    if core is not None and core in t:
        return _tucker(t[core], t[a], t[b])
    return t[a] @ t[b]


def _lora(t: Tensors) -> torch.Tensor:
    up, down = t["up"].flatten(1), t["down"].flatten(1)
    if "mid" in t:
        return torch.einsum("o r, r s k l, s i -> o i k l", up, t["mid"], down)
    return (up @ down).reshape(up.shape[0], *t["down"].shape[1:])


def _loha(t: Tensors) -> torch.Tensor:
    w1 = _product(t, None, "hada_w1_a", "hada_w1_b", "hada_t1")
    w2 = _product(t, None, "hada_w2_a", "hada_w2_b", "hada_t2")
    return w1 * w2


def _lokr_factors(t: Tensors) -> tuple[torch.Tensor, torch.Tensor]:
    w1 = _product(t, "lokr_w1", "lokr_w1_a", "lokr_w1_b")
    w2 = _product(t, "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
    if w2.ndim == 4 and w1.ndim == 2:
        w1 = w1[:, :, None, None]
    return w1, w2


def _lokr(t: Tensors) -> torch.Tensor:
    return torch.kron(*_lokr_factors(t))


DELTAS = {"lora": _lora, "locon": _lora, "loha": _loha, "lokr": _lokr,
          "full": lambda t: t["diff"]}


def as_float(t: Tensors) -> dict[str, torch.Tensor]:
    """The tensors in float32 (half-precision matmuls are slow on CPU and lose digits)."""
    return {k: v.float() for k, v in t.items()}


def delta(kind: str, t: Tensors) -> torch.Tensor:
    """The scaled weight change of one module at strength 1 (LoHa/LoKr conv kernels may come
    flattened to [out, in*k*k]: reshape to the patched weight's shape)."""
    t = as_float(t)
    return scale_of(kind, t).scale * DELTAS[part_kind(kind, t)](t)


def magnitude_axis(key: str, magnitude: tuple[int, ...], weight: tuple[int, ...]) -> int:
    """The axis of the patched weight a DoRA magnitude holds one norm per: 0, each output row
    (PEFT's keys; a LyCORIS `dora_scale` of shape (out, 1, ...)), or 1, each input column
    (`dora_scale` (1, in, ...); ComfyUI's rule: the output axis when its first size is out).
    Raises ValueError when the magnitude has not one value per row or column of that axis."""
    axis = 0 if key.endswith(PER_OUTPUT_ROW) or magnitude[:1] == weight[:1] else 1
    if math.prod(magnitude) != weight[axis]:
        raise ValueError(f"a DoRA magnitude of shape {list(magnitude)} does not hold one norm per "
                         f"{('output row', 'input column')[axis]} of a weight of shape {list(weight)}")
    return axis


def decompose(weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor,
              axis: int) -> torch.Tensor:
    """DoRA's patched weight at strength 1: `m * (W + delta) / (||W + delta|| + eps)`, the norm
    of each output row (axis 0) or input column (axis 1) of W + delta (PEFT, LyCORIS)."""
    merged = weight + delta.reshape(weight.shape)
    norm = torch.linalg.vector_norm(merged, dim=[d for d in range(merged.ndim) if d != axis],
                                    keepdim=True)
    shape = [1] * merged.ndim
    shape[axis] = -1
    return merged * (magnitude.reshape(shape) / (norm + NORM_EPS))


def _low_rank_values(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Singular values of up @ down from two small QR factors (never the full product)."""
    ru = torch.linalg.qr(up, mode="r").R
    rd = torch.linalg.qr(down.T, mode="r").R
    return torch.linalg.svdvals(ru @ rd.T)


def singular_values(kind: str, t: Tensors) -> torch.Tensor:
    """Singular values (descending) of the scaled delta, conv kernels flattened to 2-D."""
    t = as_float(t)
    scale = scale_of(kind, t).scale
    kind = part_kind(kind, t)
    if kind in ("lora", "locon") and "mid" not in t:
        s = _low_rank_values(t["up"].flatten(1), t["down"].flatten(1))
    elif kind == "lokr":
        a, b = (w.flatten(1) for w in _lokr_factors(t))
        s = torch.outer(torch.linalg.svdvals(a), torch.linalg.svdvals(b)).flatten()
        n = min(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1])
        s = torch.cat([s, s.new_zeros(n - len(s))])  # kron's rank is the product of ranks
    else:
        s = torch.linalg.svdvals(DELTAS[kind](t).flatten(1))
    return (scale * s).sort(descending=True).values


def threshold_rank(s: torch.Tensor, rel: float = REL_THRESHOLD) -> int:
    """How many singular values are above `rel` times the largest."""
    return int((s > rel * s.max()).sum()) if len(s) and float(s.max()) > 0 else 0


def entropy_rank(s: torch.Tensor) -> float:
    """Roy and Vetterli's effective rank: exp of the entropy of the normalised singular values."""
    total = float(s.sum())
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(float(-(p * p.log()).sum()))
