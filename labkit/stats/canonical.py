"""Canonical tensor names, so that one model in any form (.ckpt, single-file .safetensors in the
original layout, diffusers folder) lists the same names: diffusers' `component/key`.

A single file maps through labkit.identify.layouts with a layout built from the file's own block
structure (levels, layers per block, which levels have attention), read off its keys, so the
demo models and real families map alike. Keys no diffusers component holds (EMA copies,
position_ids, schedule buffers) keep their own name, as do files of no known layout (LoRA,
SD3, Flux).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from labkit.identify import layouts
from labkit.identify.blocks import ema_twins

if TYPE_CHECKING:
    from labkit.files.model_file import ModelFile

# A single file's family by a marker key prefix, first match wins; None: no layout.
FAMILY_MARKERS: tuple[tuple[str, str | None], ...] = (
    ("conditioner.embedders.1.", "sdxl"),
    ("conditioner.embedders.0.model.", "sdxl_refiner"),
    ("cond_stage_model.model.", "sd2"),  # OpenCLIP-H, fused in_proj q/k/v
    ("model.diffusion_model.", "sd1"),
    ("first_stage_model.", "sd1"),
)
# Original-layout numbers the structure is read from.
_U = re.escape(layouts.UNET_PREFIX)
_V = re.escape(layouts.VAE_PREFIX)
UNET_DOWNSAMPLER = re.compile(_U + r"input_blocks\.(\d+)\.0\.op\.")
UNET_INPUT_ATTENTION = re.compile(_U + r"input_blocks\.(\d+)\.1\.")
UNET_OUTPUT_ATTENTION = re.compile(_U + r"output_blocks\.(\d+)\.1\.(?!conv\.)")
VAE_LEVEL = re.compile(_V + r"encoder\.down\.(\d+)\.")
VAE_LAYER = re.compile(_V + r"encoder\.down\.0\.block\.(\d+)\.")


def _numbers(pattern: re.Pattern[str], keys: Iterable[str]) -> set[int]:
    return {int(m.group(1)) for k in keys if (m := pattern.match(k))}


def structure(keys: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The UNet and VAE config fields make_layout needs, read off original-layout keys
    (SD's own structure where a part is absent)."""
    keys = list(keys)
    downsamplers = sorted(_numbers(UNET_DOWNSAMPLER, keys)) or [3, 6, 9]
    step = downsamplers[0]
    levels = len(downsamplers) + 1
    down, up = _numbers(UNET_INPUT_ATTENTION, keys), _numbers(UNET_OUTPUT_ATTENTION, keys)
    unet = {
        "layers_per_block": step - 1,
        "down_block_types": ["CrossAttnDownBlock2D" if step * i + 1 in down else "DownBlock2D"
                             for i in range(levels)],
        "up_block_types": ["CrossAttnUpBlock2D" if step * i in up else "UpBlock2D"
                           for i in range(levels)],
    }
    vae_levels = _numbers(VAE_LEVEL, keys) or {0, 1, 2, 3}
    vae = {"block_out_channels": [0] * (max(vae_levels) + 1),
           "layers_per_block": max(_numbers(VAE_LAYER, keys) or {1}) + 1}
    return unet, vae


def layout_of(model: ModelFile) -> layouts.Layout | None:
    """The single-file layout of a model in the original layout, None for folders and files of
    no known family."""
    if model.format == "diffusers":
        return None
    family = next((f for marker, f in FAMILY_MARKERS
                   if any(k.startswith(marker) for k in model.table)), None)
    if family is None:
        return None
    return layouts.make_layout(family, *structure(model.table))


# Text encoder layouts by a folder's components: their key spellings do not depend on the UNet.
_FOLDER_TEXT = {("text_encoder",): layouts.SD1, ("text_encoder", "text_encoder_2"): layouts.SDXL}


def _folder_name(name: str, layout: layouts.Layout) -> str:
    """A diffusers folder key in the mapping's own spelling (older transformers saves keep a
    `text_model.` prefix that the mapping leaves out), by mapping it to the single file and back."""
    component, _, key = name.partition("/")
    if not component.startswith("text_encoder") or component not in layout.components:
        return name
    back = layouts.to_diffusers(layouts.to_original(component, key, layout), layout)
    if back is None or back[0] != component or key in back[1] or len(back[1]) != 1:
        return name
    return f"{component}/{back[1][0]}"


def canonical_names(model: ModelFile, ema: bool = False) -> dict[str, str]:
    """Canonical name -> the model's own key (a fused q/k/v key serves three names). With `ema`,
    a UNet weight that has an EMA copy (`model_ema.`) is read from that copy instead."""
    if model.format == "diffusers":
        comps = tuple(c for c in ("text_encoder", "text_encoder_2")
                      if any(n.startswith(c + "/") for n in model.table))
        layout = _FOLDER_TEXT.get(comps)
        return {(_folder_name(n, layout) if layout else n): n for n in model.table}
    layout = layout_of(model)
    out = {}
    for key in model.table:
        found = layouts.to_diffusers(key, layout) if layout is not None else None
        names = [f"{found[0]}/{d}" for d in found[1]] if found else [key]
        out.update(dict.fromkeys(names, key))
    if ema:
        copies = {twin: e for e, twin in ema_twins(model.table).items() if e in model.table}
        out = {n: copies.get(k, k) for n, k in out.items() if k not in copies.values()}
    return out


def canonical_tensor(layout: layouts.Layout | None, key: str, tensor: torch.Tensor,
                     name: str) -> torch.Tensor:
    """A tensor in the diffusers shape of its canonical `name` (1x1 convs as linear, fused q/k/v
    split), given its model's layout_of and its key in the original layout (for an EMA copy,
    the key of the weight it shadows); unmapped tensors as they are."""
    if layout is None or "/" not in name:
        return tensor
    component, _, dkey = name.partition("/")
    return layouts.state_dict_to_diffusers([(key, tensor)], layout)[component][dkey]
