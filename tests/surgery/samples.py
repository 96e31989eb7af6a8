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


# DoRA magnitude layouts: (the suffix that replaces the down key's, the axis the magnitude is on,
# its shape for a weight of shape w). LyCORIS writes `dora_scale` per output row (out, 1, ...) or
# per input column (1, in, ...); PEFT writes `lora_magnitude_vector` per output row, (out,) for a
# linear layer and (1, out, 1, 1) for a conv (what peft's DoraConv2dLayer holds).
DORA_LAYOUTS = {
    "out": (".dora_scale", 0, lambda w: (w[0], *[1] * (len(w) - 1))),
    "in": (".dora_scale", 1, lambda w: (1, w[1], *[1] * (len(w) - 2))),
    "peft": (".lora_magnitude_vector", 0, lambda w: (w[0],) if len(w) == 2 else (1, w[0], 1, 1)),
}
DOWN_SUFFIXES = (".lora_down.weight", ".lora_A.weight")


def module_weights(lora: Path, ckpt: Path) -> dict[str, tuple[str, torch.Tensor]]:
    """Each module of the LoRA (its down key) -> (single-file key, the checkpoint's float32
    weight of the module)."""
    from labkit.files.opener import open_model
    from labkit.lora import open_adapter
    from labkit.stats.canonical import layout_of
    from labkit.surgery.loras import place, rows_of

    model = open_model(ckpt)
    layout = layout_of(model)
    out = {}
    for module, target in open_adapter(lora, "demo_sd1").matched:
        where = place(target.component, target.module, layout)
        first = next(k for k in module.keys.values() if k.endswith(DOWN_SUFFIXES))
        out[first] = (where.key, rows_of(where, model.tensor(where.key).float()))
    return out


def with_dora(lora: Path, ckpt: Path, dst: Path, layout: str = "out", seed: int = 3,
              drift: float = 0.05) -> Path:
    """The LoRA file as a DoRA: one magnitude per module in `layout` (DORA_LAYOUTS), each the
    checkpoint weight's norm along that axis times 1 + drift * noise (a trained DoRA's magnitudes
    stay near their initial value, the base weight's norms). A PEFT file's diffusers metadata
    says use_dora."""
    import json

    from safetensors import safe_open

    suffix, axis, shape_of = DORA_LAYOUTS[layout]
    g = torch.Generator().manual_seed(seed)
    tensors = load_file(str(lora))
    for first, (_, w) in module_weights(lora, ckpt).items():
        norm = torch.linalg.vector_norm(w, dim=[d for d in range(w.ndim) if d != axis])
        noise = 1 + drift * torch.randn(norm.shape, generator=g)
        key = first[: -len(next(s for s in DOWN_SUFFIXES if first.endswith(s)))] + suffix
        tensors[key] = (norm * noise).reshape(shape_of(tuple(w.shape))).to(tensors[first].dtype)
    with safe_open(str(lora), "pt") as f:
        metadata = dict(f.metadata() or {})
    if "lora_adapter_metadata" in metadata:
        config = json.loads(metadata["lora_adapter_metadata"])
        metadata["lora_adapter_metadata"] = json.dumps(
            {k: True if k.endswith(".use_dora") else v for k, v in config.items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dst), metadata)
    return dst
