"""Checkpoint merging as AUTOMATIC1111's checkpoint merger does it, streamed and recorded.

weighted: `A*(1-X) + B*X` (as torch.lerp, `A + X*(B-A)`, one pass over the tensors);
add_difference: `A + (B-C)*X` (on float32 copies). X is the share of B (A1111's
"multiplier M"; ComfyUI's ModelMergeSimple ratio is the share of the *first* model, the
opposite). X may differ per SD block (labkit.surgery.blockweights). The maths runs in float32
and is written in A's dtype; the output has A's keys, shapes and dtypes, written tensor by
tensor, so memory holds a few tensors, never a model. What happens to each key is one row of
the report, its action one of ACTIONS. Each tensor is computed and written in pieces of PIECE
elements, from the sources' mapped pages (no copy of them). The maths runs on one thread: on a
busy machine torch's thread pool waits for a core at each of a thousand tensors (2-3 s for the
two 2 GB files under load 2-3 against 0.6 s on one thread; 0.35 s on two idle cores).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import torch

from labkit.errors import IncompatibleModelError, LabkitError
from labkit.identify.blocks import block_labels
from labkit.identify.layouts import EMA_PREFIX
from labkit.stats.moments import one_thread
from labkit.surgery import recipe
from labkit.surgery.blockweights import model_blocks, parse_blocks
from labkit.surgery.tensorio import (
    Buffer,
    Reader,
    StreamWriter,
    check_output,
    readers,
    stream_writer,
)
from labkit.tensors import DTYPES, TensorInfo, dtype_name

Formula = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor]
Fused = Callable[[torch.Tensor, torch.Tensor, float, torch.Tensor], torch.Tensor]
# mode -> (how many models it takes, the formula on float32 copies a, b, c (which it overwrites:
# in place, with the roundings of a*(1-x) + b*x and a + (b-c)*x, as addition commutes exactly)
# and alpha x, and a one-pass kernel for inputs of one dtype: torch.lerp is a + x*(b - a) with
# float32 arithmetic on fp16/bf16 too, written straight into `out`; None: the formula). Every
# operation is elementwise, so the pieces a tensor is computed in do not change a bit of it.
FORMULAS: dict[str, tuple[int, Formula, Fused | None]] = {
    "weighted": (2, lambda a, b, c, x: a.mul_(1 - x).add_(b.mul_(x)),
                 lambda a, b, x, out: torch.lerp(a, b, x, out=out)),
    "add_difference": (3, lambda a, b, c, x: b.sub_(c).mul_(x).add_(a), None),
}
# Elements per piece: a piece (2-4 MB, and its float32 copies) stays in cache from the maths to
# the write; a multiple of every vector width, so the same elements meet the same code path.
PIECE = 1 << 20
ROLES = ("A", "B", "C")
# What merge does with a key: action -> what the report says of it.
ACTIONS = {
    "merged": "the formula, in float32, written in A's dtype",
    "partial": "A has more input channels (an inpainting UNet): the shared channels merged, "
               "the extra ones kept from A",
    "integer": "an integer tensor (position_ids): copied from A, never interpolated",
    "only_in_a": "not in every other model: copied from A",
    "only_in_b": "not in A: left out (the output has A's keys)",
    "shape_mismatch": "shapes differ and no channel rule covers it: copied from A",
    "ema_dropped": "an EMA copy (model_ema.): dropped; ema='keep' merges it as any weight",
}
EMA_CHOICES = ("drop", "keep")
WRITTEN = ("merged", "partial", "integer", "only_in_a", "shape_mismatch")
COLUMNS = ["name", "block", "alpha", "action", "shape", "dtype"]


def _is_float(info: TensorInfo) -> bool:
    dtype = DTYPES[info.dtype][0]
    return dtype is not None and dtype.is_floating_point


def _partial(a: TensorInfo, other: TensorInfo) -> bool:
    """Whether `other` is A's shape with fewer input channels (dim 1), as a normal UNet's conv_in
    is beside an inpainting one's (4 against 9)."""
    return (len(a.shape) == len(other.shape) >= 2 and a.shape[0] == other.shape[0]
            and a.shape[2:] == other.shape[2:] and a.shape[1] > other.shape[1])


def key_action(name: str, a: TensorInfo, others: list[TensorInfo | None], ema: str) -> str:
    """What merge does with one of A's keys, given its info in the other models."""
    if name.startswith(EMA_PREFIX) and ema == "drop":
        return "ema_dropped"
    if any(o is None for o in others):
        return "only_in_a"
    if not _is_float(a):
        return "integer"
    shapes = {o.shape for o in others}
    if shapes == {a.shape}:
        return "merged"
    return "partial" if len(shapes) == 1 and _partial(a, others[0]) else "shape_mismatch"


def _refuse_inpainting_b(readers_: list[Reader], actions: dict[str, str]) -> None:
    """A1111's rule: an inpainting model merges with a normal one only as A (its extra input
    channels have no counterpart in B)."""
    a, others = readers_[0], readers_[1:]
    for name, action in actions.items():
        if action != "shape_mismatch":
            continue
        if any(_partial(o.table[name], a.table[name]) for o in others):
            raise IncompatibleModelError(
                f"has fewer input channels than {others[0].path} at {name} "
                f"({list(a.table[name].shape)} against {list(others[0].table[name].shape)}): "
                "an inpainting model merges with a normal one only as model A.", a.path,
                "Swap A and B (and use alpha 1-X for the same mix).")


class Scratch:
    """Memory merged_pieces reuses from piece to piece and tensor to tensor: the piece in A's
    dtype and the float32 copies of the inputs (fresh memory costs a page fault a page)."""

    def __init__(self) -> None:
        self._out, self._floats = Buffer(), [Buffer() for _ in ROLES]

    def piece(self, dtype: torch.dtype, n: int) -> torch.Tensor:
        """An uninitialised flat tensor of n elements of `dtype`, valid until the next call."""
        return self._out.tensor(TensorInfo((n,), dtype_name(dtype)))

    def float32(self, k: int, t: torch.Tensor) -> torch.Tensor:
        """The k-th input's piece `t` converted to float32 (exactly, as t.float() does)."""
        return self._floats[k].tensor(TensorInfo((t.numel(),), "F32")).copy_(t)


def merged_pieces(tensors: list[torch.Tensor], mode: str, x: float,
                  scratch: Scratch | None = None) -> Iterator[torch.Tensor]:
    """The merged tensor (A's dtype, float32 arithmetic whatever the inputs' dtype) as
    consecutive flat pieces of PIECE elements, each valid until the next is asked for."""
    _, formula, fused = FORMULAS[mode]
    scratch = scratch or Scratch()
    flat = [t.reshape(-1) for t in tensors]
    one_pass = fused is not None and all(t.dtype == flat[0].dtype for t in flat)
    for i in range(0, flat[0].numel(), PIECE):
        parts = [t[i:i + PIECE] for t in flat]
        out = scratch.piece(flat[0].dtype, parts[0].numel())
        if one_pass:
            fused(*parts, x, out)
        else:
            f = [scratch.float32(k, p) for k, p in enumerate(parts)]
            out.copy_(formula(f[0], f[1], f[2] if len(f) > 2 else None, x))
        yield out


def merged_tensor(action: str, tensors: list[torch.Tensor], mode: str, x: float) -> torch.Tensor:
    """One output tensor (a new one) in A's dtype, with float32 arithmetic whatever the inputs'
    dtype."""
    a = tensors[0]
    if action == "partial":  # the shared input channels merged, the extra ones A's
        merged = a.clone()
        n = tensors[1].shape[1]
        merged[:, :n] = merged_tensor("merged", [a[:, :n].contiguous(), *tensors[1:]], mode, x)
        return merged
    if action != "merged":
        return a
    out = torch.empty_like(a)
    flat, i = out.reshape(-1), 0
    for piece in merged_pieces(tensors, mode, x):
        flat[i:i + piece.numel()] = piece
        i += piece.numel()
    return out


def _write_row(writer: StreamWriter, row: tuple, opened: list[Reader], mode: str,
               scratch: Scratch) -> None:
    """Read, merge and write one row of the plan (its mapped tensors unmapped on return)."""
    tensors = [r.tensor(row.name) for r in (opened if row.action in ("merged", "partial")
                                             else opened[:1])]
    if row.action == "merged":  # piece by piece, each written from cache
        info = opened[0].table[row.name]
        writer.write_parts(row.name, info, merged_pieces(tensors, mode, row.alpha, scratch))
    else:
        writer.write(row.name, merged_tensor(row.action, tensors, mode, row.alpha))


def plan(readers_: list[Reader], alphas: dict[str, float], ema: str) -> pd.DataFrame:
    """The report before any tensor is read: one row per key of A (and per key only in B)."""
    a, others = readers_[0], readers_[1:]
    names = list(a.table)
    rows = []
    for name, block in zip(names, block_labels(names), strict=True):
        action = key_action(name, a.table[name], [o.table.get(name) for o in others], ema)
        info = a.table[name]
        rows.append({"name": name, "block": block, "alpha": alphas.get(block, alphas[""]),
                     "action": action, "shape": info.shape, "dtype": info.dtype})
    extra = [n for n in others[0].table if n not in a.table]
    rows += [{"name": n, "block": "", "alpha": float("nan"), "action": "only_in_b",
              "shape": others[0].table[n].shape, "dtype": others[0].table[n].dtype}
             for n in extra]
    return pd.DataFrame(rows, columns=COLUMNS)


def merge(a: str | os.PathLike, b: str | os.PathLike, c: str | os.PathLike | None = None, *,
          out: str | os.PathLike, mode: str = "weighted", alpha: float = 0.5,
          blocks: str | None = None, ema: str = "drop", overwrite: bool = False,
          progress: bool = True, hashes: bool = True) -> pd.DataFrame:
    """Merge checkpoints A and B (and C for add_difference) into `out` (.safetensors), one tensor
    at a time; returns the per-key report (attrs: output, mode, counts, metadata). `hashes`:
    record the sources' SHA256 (one read of each file the first time, then cached).

    Raises LabkitError (bad mode, alpha, block spec or output), IncompatibleModelError (models
    of different families, a LoRA given as a model, an inpainting B), NotAModelError,
    CorruptFileError, UnsafeFileError (from reading the sources)."""
    from tqdm.auto import tqdm

    if mode not in FORMULAS:
        raise LabkitError(f"unknown merge mode {mode!r}; choose one of {', '.join(FORMULAS)}.")
    if ema not in EMA_CHOICES:
        raise LabkitError(f"unknown EMA choice {ema!r}; choose one of {', '.join(EMA_CHOICES)}.")
    n = FORMULAS[mode][0]
    paths = [a, b, c][:n]
    if len(paths) != n or any(p is None for p in paths):
        raise LabkitError(f"mode {mode} takes {n} models ({', '.join(ROLES[:n])}).",
                          hint="add_difference needs C, the model B was tuned from.")
    if c is not None and n == 2:
        raise LabkitError("model C is used only by mode add_difference.", c,
                          hint="Pass --mode add_difference, or leave C out.")
    dst = check_output(out, [Path(p) for p in paths], overwrite)
    with readers(*paths, mapped=True) as opened, one_thread():
        models = [r.model for r in opened]
        recipe.require_same_family(models, ROLES[:n])
        alphas = parse_blocks(blocks, model_blocks(opened[0].table), float(alpha))
        report = plan(opened, alphas, ema)
        actions = dict(zip(report["name"], report["action"], strict=True))
        _refuse_inpainting_b(opened, actions)
        kept = report[report["action"].isin(WRITTEN)]
        table = {name: opened[0].table[name] for name in kept["name"]}
        params = {"mode": mode, "alpha": float(alpha), "blocks": blocks, "ema": ema,
                  "formula": "A*(1-X) + B*X" if mode == "weighted" else "A + (B-C)*X"}
        metadata = recipe.recipe_metadata("merge", params, list(zip(models, ROLES, strict=False)),
                                          title=dst.stem, hashed=hashes)
        scratch = Scratch()
        with stream_writer(dst, table, metadata) as writer:
            rows = tqdm(list(kept.itertuples(index=False)), desc=f"merge {dst.name}",
                        unit="tensor", disable=not progress)
            for row in rows:
                _write_row(writer, row, opened, mode, scratch)
    report.attrs.update(output=str(dst), mode=mode, alpha=float(alpha), metadata=metadata,
                        counts=report["action"].value_counts().to_dict())
    return report


def summary(report: pd.DataFrame) -> dict[str, object]:
    """The facts of a merge report as one flat record (for the CLI's --json)."""
    return {"output": report.attrs["output"], "mode": report.attrs["mode"],
            "alpha": report.attrs["alpha"], "n_written": int(report["action"].isin(WRITTEN).sum()),
            "actions": {k: int(v) for k, v in report.attrs["counts"].items()}}
