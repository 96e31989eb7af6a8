"""A LoRA pulled out of a fine-tune: the truncated SVD of `tuned - base` per module, as kohya's
extract_lora_from_models.py does, with how much of each module's change the rank keeps.

The modules are those kohya's LoRA trains (EXTRACTED): the linear layers (and 1x1 convs) of the
UNet's transformer blocks and of the text encoders' attention and MLP; with a conv rank also the
resnets' and samplers' layers (3x3 kernels at the conv rank). Modules whose change is at most
`min_diff` everywhere are left out. Both checkpoints are original single files of one family,
read one module at a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from labkit.errors import IncompatibleModelError, LabkitError
from labkit.lora import keys as K
from labkit.lora.writing import LoraPart
from labkit.stats.canonical import layout_of
from labkit.surgery import recipe
from labkit.surgery.loras import energy_frame, energy_row, part_of, place, rows_of, write_lora
from labkit.surgery.lowrank import check_rule, factor
from labkit.surgery.tensorio import Reader, check_output, readers

# (component prefix, module path holds one of, needs a conv rank): which modules kohya's LoRA
# trains. A 3x3 kernel always takes the conv rank; linear layers and 1x1 convs the rank.
EXTRACTED: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("unet", (".attentions.",), False),
    ("unet", (".resnets.", ".downsamplers.", ".upsamplers."), True),
    ("text_encoder", ("self_attn.", "mlp."), False),
)


def _is_kernel(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and tuple(shape[2:]) != (1, 1)


def module_rank(target: K.Target, rank: int, conv_rank: int | None) -> int | None:
    """The rank a module is extracted at (None: left out)."""
    for component, holds, needs_conv in EXTRACTED:
        if not target.component.startswith(component) or not any(h in target.module for h in holds):
            continue
        if needs_conv and conv_rank is None:
            return None
        return conv_rank if _is_kernel(target.shape) else rank
    return None


def extracted_modules(base: str, rank: int, conv_rank: int | None) -> dict[str, tuple[K.Target, int]]:
    """"component.module" -> (target, rank) of every module extracted for a family."""
    targets = K.family_targets(base)
    if targets is None:
        raise IncompatibleModelError(f"the lab knows no module map of base {base}.",
                                     hint="Extract from SD1, SD2, SDXL or demo checkpoints.")
    found = {}
    for target in targets.by_prefix.values():
        r = module_rank(target, rank, conv_rank)
        if r is not None:
            found.setdefault(f"{target.component}.{target.module}", (target, r))
    return found


def _change(base: Reader, tuned: Reader, target: K.Target, layout: Any) -> torch.Tensor:
    """tuned - base of one module's weight, in float32 and the module's shape."""
    where = place(target.component, target.module, layout)
    for reader in (base, tuned):
        if where.key not in reader.table:
            raise IncompatibleModelError(f"has no weight {where.key}.", reader.path,
                                         "Extract from full checkpoints of one family.")
    diff = rows_of(where, tuned.tensor(where.key)).float() - rows_of(where, base.tensor(where.key)).float()
    return diff.reshape(target.shape) if diff.numel() == torch.Size(target.shape).numel() else diff


def extract_lora(base: str | os.PathLike, tuned: str | os.PathLike, *, out: str | os.PathLike,
                 rank: int = 8, conv_rank: int | None = None, dynamic: str | None = None,
                 ratio: float | None = None, min_diff: float = 0.0, overwrite: bool = False,
                 progress: bool = True, hashes: bool = True) -> pd.DataFrame:
    """Write `out`, a kohya LoRA of `tuned - base`; returns the energy report, one row per module
    (attrs: output, metadata, skipped). `dynamic` (sv_ratio, sv_fro, sv_cumulative) with `ratio`
    picks each module's rank, capped by `rank`; `hashes`: record the sources' SHA256.

    Raises IncompatibleModelError (different families, a LoRA given as a checkpoint),
    LabkitError (rank, method or output), NotAModelError, CorruptFileError, UnsafeFileError."""
    from tqdm.auto import tqdm

    check_rule(dynamic, ratio)
    if rank < 1 or (conv_rank is not None and conv_rank < 1):
        raise LabkitError(f"rank {rank} / conv rank {conv_rank}: ranks are whole numbers >= 1.")
    dst = check_output(out, [Path(base), Path(tuned)], overwrite)
    with readers(base, tuned) as (b, t):
        recipe.require_same_family([b.model, t.model], ["BASE", "TUNED"])
        layout = layout_of(b.model)
        if layout is None:
            raise IncompatibleModelError("is not a single checkpoint file in the original layout.",
                                         b.path, "Convert folders to one file first.")
        modules = extracted_modules(b.model.identity.base, rank, conv_rank)
        parts: dict[str, LoraPart] = {}
        rows, skipped = [], []
        for name, (target, r) in tqdm(modules.items(), desc=f"extract {dst.name}",
                                      unit="module", disable=not progress):
            change = _change(b, t, target, layout)
            if float(change.abs().max()) <= min_diff:
                skipped.append(name)
                continue
            factors = factor(change, r, dynamic, ratio)
            parts[name] = part_of(factors)
            rows.append(energy_row(name, target, factors))
        params = {"rank": rank, "conv_rank": conv_rank, "dynamic": dynamic, "ratio": ratio,
                  "min_diff": min_diff, "formula": "SVD(TUNED - BASE) truncated per module"}
        metadata = recipe.recipe_metadata("extract-lora", params,
                                          [(b.model, "BASE"), (t.model, "TUNED")], title=dst.stem,
                                          hashed=hashes)
    if not parts:
        raise IncompatibleModelError(f"does not differ from {b.path} in any module a LoRA "
                                     "patches: there is nothing to extract.", t.path,
                                     "Check that TUNED is a fine-tune of BASE.")
    write_lora(dst, parts, layout if "text_encoder_2" in layout.components else None, metadata)
    report = energy_frame(rows)
    report.attrs.update(output=str(dst), metadata=metadata, skipped=skipped)
    return report
