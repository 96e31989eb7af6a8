"""LoRAs rebuilt from their weight changes: resized to a rank (kohya's resize_lora.py) and merged
into one (kohya's merge_lora.py, without its S*|S|).

resize: each module's change (labkit.lora.anatomy's delta, so LoHa and LoKr files resize into
plain LoRAs) is replaced by its truncated SVD at a fixed rank or the rank a dynamic method picks.
merge: `sum_i w_i * delta_i` per module, exactly by concatenating the ranks
(`[w1 s1 up1 | w2 s2 up2] @ [down1; down2]`, plain LoRAs only), or by the SVD of the sum to a
rank. Outputs are kohya files (labkit.surgery.loras) with alpha = rank.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from labkit.errors import IncompatibleModelError, LabkitError
from labkit.files.opener import open_model
from labkit.lora import anatomy
from labkit.lora.keys import FileModule, Target
from labkit.lora.reading import Adapter, open_adapter
from labkit.lora.writing import LoraPart
from labkit.surgery import recipe
from labkit.surgery.loras import energy_frame, energy_row, family_layout, part_of, write_lora
from labkit.surgery.lowrank import check_rule, factor
from labkit.surgery.tensorio import check_output

CONCAT_KINDS = ("lora", "locon")


def _open(path: str | os.PathLike, family: str | None = None) -> Adapter:
    """An adapter whose every module is matched (IncompatibleModelError otherwise)."""
    adapter = open_adapter(path, family)
    if adapter.unmatched or not adapter.matched:
        raise IncompatibleModelError(
            f"has {len(adapter.unmatched)} keys that patch nothing in a {adapter.targets.family} "
            f"model. {adapter.note}", adapter.path, "Give LoRAs of one known family.")
    return adapter


def _open_beside(path: str | os.PathLike, first: Adapter) -> Adapter:
    """Another LoRA to merge with `first`, matched to its family; IncompatibleModelError naming
    both files when it is for another base or patches modules `first`'s family lacks."""
    try:
        adapter = _open(path, first.targets.family)
    except IncompatibleModelError as e:
        raise IncompatibleModelError(f"cannot be merged with {first.path} (a LoRA for "
                                     f"{first.base}): {e}", path,
                                     "Merge LoRAs of one family.") from None
    if adapter.base not in ("unknown", first.base):
        raise IncompatibleModelError(f"is a LoRA for base {adapter.base}, but {first.path} is one "
                                     f"for base {first.base}.", adapter.path,
                                     "Merge LoRAs of one family.")
    return adapter


def module_change(adapter: Adapter, module: FileModule, target: Target) -> torch.Tensor:
    """A module's weight change at strength 1 (float32), in its weight's shape."""
    change = anatomy.delta(module.kind, adapter.tensors(module))
    return change.reshape(target.shape) if change.numel() == torch.Size(target.shape).numel() else change


def _name(target: Target) -> str:
    return f"{target.component}.{target.module}"


def _sources(adapters: Sequence[Adapter], role: str) -> list[tuple[Any, str]]:
    return [(open_model(a.path), f"{role}{i + 1}" if len(adapters) > 1 else role)
            for i, a in enumerate(adapters)]


def resize_lora(lora: str | os.PathLike, *, out: str | os.PathLike, rank: int | None = None,
                dynamic: str | None = None, ratio: float | None = None,
                overwrite: bool = False, progress: bool = True) -> pd.DataFrame:
    """Write `out`: each module of the LoRA-like file at `rank` (or the rank `dynamic` with
    `ratio` picks, capped by `rank`); returns the energy report (attrs: output, metadata).

    Raises LabkitError (no rank, a bad method or output), NotAModelError (no LoRA-like file),
    IncompatibleModelError (keys of no known family), CorruptFileError."""
    from tqdm.auto import tqdm

    check_rule(dynamic, ratio)
    if rank is None and dynamic is None or (rank is not None and rank < 1):
        raise LabkitError(f"resize needs a rank >= 1 or a dynamic method (got rank {rank}).",
                          lora, "Pass --rank R, or --dynamic sv_fro --ratio 0.9.")
    dst = check_output(out, [Path(lora)], overwrite)
    adapter = _open(lora)
    parts: dict[str, LoraPart] = {}
    rows = []
    for module, target in tqdm(adapter.matched, desc=f"resize {dst.name}", unit="module",
                               disable=not progress):
        factors = factor(module_change(adapter, module, target), rank, dynamic, ratio)
        parts[_name(target)] = part_of(factors)
        rows.append(energy_row(_name(target), target, factors))
    params = {"rank": rank, "dynamic": dynamic, "ratio": ratio,
              "formula": "SVD(delta) truncated per module, alpha = rank"}
    metadata = recipe.recipe_metadata("resize-lora", params, _sources([adapter], "LORA"),
                                      title=dst.stem)
    write_lora(dst, parts, family_layout(adapter.targets.family), metadata)
    report = energy_frame(rows)
    report.attrs.update(output=str(dst), metadata=metadata)
    return report


def _concat(items: list[tuple[float, Adapter, FileModule]]) -> LoraPart:
    """The exact sum of weighted LoRA modules as one LoRA of the summed ranks (alpha = rank)."""
    downs, ups = [], []
    for weight, adapter, module in items:
        t = anatomy.as_float(adapter.tensors(module))
        scale = anatomy.scale_of(module.kind, t).scale
        downs.append(t["down"])
        ups.append(weight * scale * t["up"])
    down, up = torch.cat(downs, 0), torch.cat(ups, 1)
    return LoraPart(down.contiguous(), up.contiguous(), float(down.shape[0]))


def _check_concat(adapters: Sequence[Adapter]) -> None:
    for adapter in adapters:
        for module, _ in adapter.matched:
            if module.kind not in CONCAT_KINDS or "mid" in module.keys:
                raise LabkitError(f"{module.prefix} is a {module.kind} module: only plain LoRA "
                                  "modules merge exactly by concatenating ranks.", adapter.path,
                                  "Pass --rank R to merge by SVD to that rank instead.")


def merge_lora(loras: Sequence[str | os.PathLike], *, out: str | os.PathLike,
               weights: Sequence[float] | None = None, rank: int | None = None,
               overwrite: bool = False, progress: bool = True) -> pd.DataFrame:
    """Write `out`: `sum_i weights[i] * delta_i` per module of the LoRA-like files, exact
    (ranks concatenated) when `rank` is None, else the SVD of the sum at `rank`; returns one
    row per module (energy kept 1 when exact; attrs: output, metadata, exact).

    Raises LabkitError (weights, rank, output, a LyCORIS file merged exactly),
    IncompatibleModelError (LoRAs of different bases), NotAModelError, CorruptFileError."""
    from tqdm.auto import tqdm

    weights = [1.0] * len(loras) if weights is None else [float(w) for w in weights]
    if len(loras) < 2 or len(weights) != len(loras):
        raise LabkitError(f"merge-lora takes two or more LoRAs and one weight each (got "
                          f"{len(loras)} files, {len(weights)} weights).",
                          hint="e.g. merge-lora A B --weights 0.5 0.5 -o OUT")
    if rank is not None and rank < 1:
        raise LabkitError(f"rank {rank}: a rank is a whole number >= 1.")
    dst = check_output(out, [Path(p) for p in loras], overwrite)
    first = _open(loras[0])
    adapters = [first] + [_open_beside(p, first) for p in loras[1:]]
    if rank is None:
        _check_concat(adapters)
    by_module: dict[str, tuple[Target, list[tuple[float, Adapter, FileModule]]]] = {}
    for weight, adapter in zip(weights, adapters, strict=True):
        for module, target in adapter.matched:
            by_module.setdefault(_name(target), (target, []))[1].append((weight, adapter, module))
    parts: dict[str, LoraPart] = {}
    rows = []
    for name, (target, items) in tqdm(by_module.items(), desc=f"merge-lora {dst.name}",
                                      unit="module", disable=not progress):
        if rank is None:
            parts[name] = _concat(items)
            rows.append({"module": name, "component": target.component, "block": target.block,
                         "shape": tuple(target.shape), "rank": int(parts[name].down.shape[0]),
                         "energy_kept": 1.0, "fro_error": 0.0})
            continue
        total = sum(w * module_change(a, m, target) for w, a, m in items)
        factors = factor(total, rank)
        parts[name] = part_of(factors)
        rows.append(energy_row(name, target, factors))
    params = {"weights": weights, "rank": rank,
              "formula": "sum_i w_i * delta_i, " + ("ranks concatenated (exact)" if rank is None
                                                    else "SVD truncated to rank")}
    metadata = recipe.recipe_metadata("merge-lora", params, _sources(adapters, "LORA"),
                                      title=dst.stem)
    write_lora(dst, parts, family_layout(first.targets.family), metadata)
    report = energy_frame(rows)
    report.attrs.update(output=str(dst), metadata=metadata, exact=rank is None)
    return report
