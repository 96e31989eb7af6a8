"""A LoRA (LoHa, LoKr, full diff, DoRA) baked into a checkpoint's weights, streamed and recorded.

Each patched module's weight W becomes `W + S * delta`, where delta is labkit.lora.anatomy's
weight change at strength 1 (LoRA: `(alpha/rank) * up @ down`, conv layers included). The
strength scales the change once: the weights move by S, not S*|S| (kohya's merge_lora.py scales
up and down separately when it merges LoRAs into one). A DoRA module makes
`W' = m * (W + delta) / ||W + delta||` (the norm of each output row or input column, as its
magnitude m says: labkit.lora.anatomy.decompose) and W becomes `W + S * (W' - W)`, the way
ComfyUI and A1111 apply a DoRA's strength: S = 0 leaves W, S = 1 gives W' (diffusers and PEFT put
S inside the norm instead, `m * (W + S*delta) / ||W + S*delta||`; the two agree at S = 1 only).
All of it in float32, written in the tensor's own dtype. The LoRA's modules are matched as
labkit.lora.reading matches them, whatever its key style; the checkpoint is an original single
file, so each diffusers module is found under its original key (labkit.surgery.loras.place).
Every other tensor is copied as it is.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from labkit.errors import IncompatibleModelError
from labkit.files.opener import open_model
from labkit.lora import anatomy
from labkit.lora.reading import Adapter, open_adapter
from labkit.stats.canonical import layout_of
from labkit.surgery import recipe
from labkit.surgery.loras import Place, place, rows_of
from labkit.surgery.tensorio import check_output, readers, stream_writer

BAKEABLE = ("lora", "locon", "loha", "lokr", "full", "dora")
# Per module: delta_norm is the norm of what the weight moved by (a DoRA's S * (W' - W)),
# weight_norm that of the weight before.
COLUMNS = ["module", "component", "block", "kind", "key", "rank", "alpha", "scale", "strength",
           "delta_norm", "weight_norm", "relative_change"]
FORMULAS = {"sum": "W + S * (alpha/rank) * up @ down",
            "dora": "W + S * (m * (W + D) / ||W + D|| - W), D its LoRA part (alpha/rank) * up @ down"}


def _adapter_for(lora: Path, model: Any) -> Adapter:
    """The LoRA matched to the checkpoint's family; IncompatibleModelError naming both files
    when it was made for another base, patches nothing there or holds modules of no known kind."""
    adapter = open_adapter(lora, model.identity.base)
    recipe.require_adapter_fits(adapter.base, adapter.path, model)
    if adapter.unmatched or not adapter.matched:
        raise IncompatibleModelError(
            f"does not fit {model.path} (base {model.identity.base}): {len(adapter.unmatched)} "
            f"of its keys patch nothing there. {adapter.note}", adapter.path,
            "Use a LoRA trained for that checkpoint's family.")
    kinds = {m.kind for m, _ in adapter.matched} - set(BAKEABLE)
    if kinds:
        raise IncompatibleModelError(f"holds {', '.join(sorted(kinds))} modules, whose weight "
                                     "change the lab does not know how to compute.", adapter.path,
                                     "Bake a LoRA, LoCon, LoHa, LoKr, full-diff or DoRA file.")
    return adapter


def _patches(adapter: Adapter, model: Any) -> dict[str, list[tuple[Any, Any, Place]]]:
    """Single-file key -> the LoRA modules that change it (with where in the tensor)."""
    layout = layout_of(model)
    if layout is None:
        raise IncompatibleModelError("is not a single checkpoint file in the original layout "
                                     "(a diffusers folder, or a file of no known family).",
                                     model.path, "Convert it to one file first: "
                                     "`python -m labkit convert FOLDER --out X.safetensors`.")
    found: dict[str, list[tuple[Any, Any, Place]]] = defaultdict(list)
    for module, target in adapter.matched:
        where = place(target.component, target.module, layout)
        if where.key not in model.table:
            raise IncompatibleModelError(
                f"has no weight {where.key} for the LoRA's module {module.prefix} "
                f"({adapter.path.name}).", model.path,
                "Bake into a full checkpoint (UNet and text encoders) of the LoRA's family.")
        if module.kind == "dora":
            _check_magnitude(adapter, module, where, model)
        found[where.key].append((module, target, where))
    return dict(found)


def _check_magnitude(adapter: Adapter, module: Any, where: Place, model: Any) -> None:
    """Raise IncompatibleModelError when a DoRA magnitude fits neither axis of its weight."""
    shape = tuple(model.table[where.key].shape)
    if where.third is not None:
        shape = (shape[0] // 3, *shape[1:])
    key = module.keys["dora_scale"]
    try:
        anatomy.magnitude_axis(key, tuple(adapter.table[key].shape), shape)
    except ValueError as e:
        raise IncompatibleModelError(f"{key}: {e} ({where.key} of {model.path.name}).",
                                     adapter.path, "Bake a DoRA made for this checkpoint.") from e


def _patched(view: torch.Tensor, kind: str, tensors: dict[str, torch.Tensor], key: str,
             strength: float) -> torch.Tensor:
    """The module's weight after the patch: `W + S * delta`, or for a DoRA the lerp from W to
    its W' (exact at S = 0 and S = 1); `key`: the DoRA magnitude's key in the file."""
    delta = anatomy.delta(kind, tensors).reshape(view.shape)
    if kind != "dora":
        return view + strength * delta
    magnitude = tensors["dora_scale"]
    axis = anatomy.magnitude_axis(key, tuple(magnitude.shape), tuple(view.shape))
    return torch.lerp(view, anatomy.decompose(view, delta, magnitude, axis), strength)


def _bake_one(weight: torch.Tensor, patches: list[tuple[Any, Any, Place]], adapter: Adapter,
              strength: float) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """One tensor with its modules' changes made in float32, in its own dtype, and the rows."""
    w = weight.float().clone()
    rows = []
    for module, target, where in patches:
        tensors = anatomy.as_float(adapter.tensors(module))
        kind = "locon" if module.kind == "lora" and tensors["down"].ndim == 4 else module.kind
        scale = anatomy.scale_of(kind, tensors)
        view = rows_of(where, w)
        after = _patched(view, kind, tensors, module.keys.get("dora_scale", ""), strength)
        change = after - view
        norm = float(view.norm())
        view.copy_(after)
        rows.append({"module": module.prefix, "component": target.component,
                     "block": target.block, "kind": kind, "key": where.key, "rank": scale.rank,
                     "alpha": scale.alpha, "scale": scale.scale, "strength": strength,
                     "delta_norm": float(change.norm()), "weight_norm": norm,
                     "relative_change": float(change.norm()) / norm if norm else float("inf")})
    return w.to(weight.dtype), rows


def bake(ckpt: str | os.PathLike, lora: str | os.PathLike, *, out: str | os.PathLike,
         strength: float = 1.0, overwrite: bool = False, progress: bool = True,
         hashes: bool = True) -> pd.DataFrame:
    """Write `out`: the checkpoint with the LoRA-like file (LoRA, LoCon, LoHa, LoKr, full diff,
    DoRA) merged into its weights at `strength` (a DoRA: `W + S * (W' - W)`, ComfyUI's and
    A1111's convention); returns one row per patched module (attrs: output, strength, metadata,
    n_tensors); `hashes`: record the sources' SHA256.

    Raises IncompatibleModelError (a LoRA for another base, a LoRA given as the checkpoint, a
    DoRA magnitude that fits no axis of its weight, a folder), NotAModelError (the LoRA is no
    LoRA-like file), CorruptFileError, UnsafeFileError, LabkitError (the output)."""
    from tqdm.auto import tqdm

    dst = check_output(out, [Path(ckpt), Path(lora)], overwrite)
    with readers(ckpt) as (reader,):
        model = reader.model
        recipe.require_model(model, "CKPT")
        adapter = _adapter_for(Path(lora), model)
        patches = _patches(adapter, model)
        metadata = recipe.recipe_metadata(
            "bake", {"strength": float(strength),
                     "formula": FORMULAS["dora" if adapter.kind == "dora" else "sum"]},
            [(model, "CKPT"), (open_model(adapter.path), "LORA")], title=dst.stem, hashed=hashes)
        rows: list[dict[str, Any]] = []
        with stream_writer(dst, dict(reader.table), metadata) as writer:
            for name in tqdm(list(reader.table), desc=f"bake {dst.name}", unit="tensor",
                             disable=not progress):
                tensor = reader.tensor(name)
                if name in patches:
                    tensor, done = _bake_one(tensor, patches[name], adapter, float(strength))
                    rows += done
                writer.write(name, tensor)
    report = pd.DataFrame(rows, columns=COLUMNS)
    report.attrs.update(output=str(dst), strength=float(strength), metadata=metadata,
                        n_tensors=len(reader.table))
    return report
