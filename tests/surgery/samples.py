"""Checkpoints for the surgery tests, made from the demo SD1 single file: float32 copies, tuned
variants, an inpainting UNet, an EMA copy, a key only one model has."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from labkit import zoo

POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
TEXT_Q = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
OUT_KEY = "model.diffusion_model.output_blocks.5.1.transformer_blocks.0.attn2.to_v.weight"
VAE_KEY = "first_stage_model.decoder.conv_out.weight"
EMA_KEY = "model_ema.diffusion_modelinput_blocks00weight"


def demo_tensors(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The demo SD1 checkpoint's tensors with floating ones in `dtype`."""
    sd = load_file(str(zoo.path("demo_sd1_single")))
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}


def tuned(tensors: dict[str, torch.Tensor], seed: int, scale: float = 0.02) -> dict[str, torch.Tensor]:
    """Every floating tensor moved by seeded noise (a stand-in fine-tune); integers kept."""
    g = torch.Generator().manual_seed(seed)
    return {k: (v.float() + scale * torch.randn(v.shape, generator=g)).to(v.dtype)
            if v.is_floating_point() else v.clone() for k, v in tensors.items()}


def save(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    """Write tensors as .safetensors; returns the path."""
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def inpainting(tensors: dict[str, torch.Tensor], seed: int = 5) -> dict[str, torch.Tensor]:
    """The checkpoint with a 9-channel conv_in (mask and masked image), as an inpainting UNet."""
    g = torch.Generator().manual_seed(seed)
    w = tensors[CONV_IN]
    extra = torch.randn(w.shape[0], 5, *w.shape[2:], generator=g).to(w.dtype)
    return tensors | {CONV_IN: torch.cat([w, extra], 1)}


def with_ema(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint with an EMA copy of conv_in (LitEma's name)."""
    return tensors | {EMA_KEY: tensors[CONV_IN] * 0.5}


def sd1_pair(folder: Path) -> tuple[Path, Path, Path]:
    """(A, B, C): the float32 demo SD1, and two tuned variants of it."""
    a = demo_tensors()
    return (save(a, folder / "a.safetensors"), save(tuned(a, 1), folder / "b.safetensors"),
            save(tuned(a, 2), folder / "c.safetensors"))
