"""LoRA files surgery writes (extract, resize, merge): kohya keys, the energy report, and where a
module's weight sits in an original single-file checkpoint.

Output keys are kohya's (`lora_unet_...` / `lora_te_...`, SDXL `lora_te1_` / `lora_te2_` and the
original UNet block names; `.lora_down.weight`, `.lora_up.weight`, `.alpha`), written by
labkit.lora.writing, so that diffusers' load_lora_weights and the A1111 / ComfyUI loaders read
them. A single file keeps diffusers' modules under the original layout's names
(labkit.identify.layouts); OpenCLIP fuses q, k and v into one `in_proj_weight`, so those three
modules are row slices of one tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch

from labkit.identify import layouts
from labkit.lora import keys as K
from labkit.lora.writing import LoraPart, in_style
from labkit.surgery.lowrank import Factors
from labkit.surgery.tensorio import write_tensors

FUSED = "in_proj_weight"
QKV = {"q_proj": 0, "k_proj": 1, "v_proj": 2}  # row third of OpenCLIP's fused in_proj
ENERGY_COLUMNS = ["module", "component", "block", "shape", "rank", "energy_kept", "fro_error",
                  "delta_norm", "singular_values"]
KOHYA_METADATA = {"ss_network_module": "networks.lora", "format": "pt"}


class Place(NamedTuple):
    """Where a diffusers module's weight sits in a single file: key, and which third of its rows
    it is (OpenCLIP's fused q/k/v; None: the whole tensor)."""

    key: str
    third: int | None = None


def place(component: str, module: str, layout: layouts.Layout) -> Place:
    """The single-file key (and row slice, for OpenCLIP's fused q/k/v) of a module's weight."""
    key = layouts.to_original(component, f"{module}.weight", layout)
    if not key.endswith(FUSED):
        return Place(key)
    return Place(key, QKV[module.rsplit(".", 1)[-1]])


def rows_of(where: Place, tensor: torch.Tensor) -> torch.Tensor:
    """The part of a single-file tensor a module's weight is (a view)."""
    if where.third is None:
        return tensor
    n = tensor.shape[0] // 3
    return tensor[where.third * n:(where.third + 1) * n]


def family_layout(base: str) -> layouts.Layout | None:
    """The original block layout kohya names an SDXL-style family's UNet in (None for SD1-style
    families, named with diffusers' blocks)."""
    folder = K.family_folder(base)
    if folder is None or not (folder / "text_encoder_2").is_dir():
        return None
    return layouts.make_layout("sdxl", K.read_config(folder / "unet" / "config.json"),
                               K.read_config(folder / "vae" / "config.json"))


def kohya_tensors(parts: dict[str, LoraPart], layout: layouts.Layout | None) -> dict[str, torch.Tensor]:
    """A LoRA's parts ("component.module" -> down, up, alpha) as kohya-named tensors."""
    return in_style(parts, "kohya", layout)


def write_lora(dst: Path, parts: dict[str, LoraPart], layout: layouts.Layout | None,
               metadata: dict[str, str]) -> Path:
    """Write a LoRA's parts to dst atomically in kohya's key style, with its metadata."""
    ranks = sorted({int(p.down.shape[0]) for p in parts.values()})
    meta = KOHYA_METADATA | {"ss_network_dim": str(ranks[-1] if ranks else 0),
                             "ss_network_alpha": str(ranks[-1] if ranks else 0)} | metadata
    return write_tensors(dst, kohya_tensors(parts, layout), meta)


def part_of(factors: Factors) -> LoraPart:
    """A factored change as a LoRA part with alpha = rank (scale 1)."""
    return LoraPart(factors.down, factors.up, float(factors.rank))


def energy_row(module: str, target: Any, factors: Factors) -> dict[str, Any]:
    """One row of an energy report: how much of a module's change its rank keeps."""
    s = factors.singular_values
    return {"module": module, "component": target.component, "block": target.block,
            "shape": tuple(target.shape), "rank": factors.rank, "energy_kept": factors.energy,
            "fro_error": max(0.0, 1.0 - factors.energy) ** 0.5,
            "delta_norm": float(s.square().sum().sqrt()),
            "singular_values": [float(v) for v in s]}


def energy_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The energy report: one row per module (energy_kept = share of |delta|_F^2 kept,
    fro_error = relative Frobenius error of the kept rank)."""
    return pd.DataFrame(rows, columns=ENERGY_COLUMNS)


def energy_summary(frame: pd.DataFrame) -> dict[str, Any]:
    """The report in a few numbers: modules, ranks, the least and the overall energy kept."""
    if frame.empty:
        return {"n_modules": 0}
    norms = frame["delta_norm"].pow(2)
    overall = float((frame["energy_kept"] * norms).sum() / norms.sum()) if norms.sum() else 1.0
    return {"n_modules": len(frame), "rank_min": int(frame["rank"].min()),
            "rank_max": int(frame["rank"].max()),
            "energy_kept_min": float(frame["energy_kept"].min()), "energy_kept_overall": overall}
