"""What the surgery lesson needs from the demo world: second models of the demo family (the
demo checkpoint with its striped LoRA baked in, and the zoo's full fine-tune of it), and a quick
picture of a surgery's result."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

VARIANT_NAME = "demo_sd1_striped.safetensors"
FINETUNE_UNET = "demo_sd1_outlined_unet"  # the zoo's full fine-tune of demo_sd1's UNet
FINETUNE_NAME = "demo_sd1_outlined.safetensors"
PREVIEW_PROMPT = "a red circle on a white background, striped"


def striped_variant(folder: str | os.PathLike, strength: float = 1.0) -> Path:
    """The demo SD1 checkpoint with the demo striped LoRA baked in at `strength`, written once
    into `folder` (a second model of the demo family to merge with or extract from)."""
    from labkit import zoo
    from labkit.surgery.baking import bake

    out = Path(folder) / (VARIANT_NAME if strength == 1.0 else
                          f"demo_sd1_striped_{strength:g}.safetensors")
    if not out.exists():
        bake(zoo.path("demo_sd1_single"), zoo.path("demo_lora_striped"), out=out,
             strength=strength, progress=False)
    return out


def outlined_finetune(folder: str | os.PathLike) -> Path:
    """The demo SD1 checkpoint fine-tuned for real, every UNet weight, to draw outlines for the
    same plain prompts (a second model whose change from the base has no built-in rank): the
    zoo's tuned UNet with the base's text encoder and VAE, written once into `folder`.
    Raises LabkitError when the data folder lacks either file."""
    from safetensors import safe_open

    from labkit import zoo
    from labkit.surgery.tensorio import write_tensors

    out = Path(folder) / FINETUNE_NAME
    if out.exists():
        return out
    with safe_open(str(zoo.path("demo_sd1_single")), "pt") as base, \
            safe_open(str(zoo.path(FINETUNE_UNET)), "pt") as unet:
        tuned, names = set(unet.keys()), base.keys()
        tensors = {k: (unet if k in tuned else base).get_tensor(k) for k in names}
        metadata = {**(base.metadata() or {}), "labkit.unet_from": FINETUNE_UNET}
    return write_tensors(out, tensors, metadata)


def preview(model: str | os.PathLike, lora: str | os.PathLike | None = None,
            prompt: str = PREVIEW_PROMPT, seed: int = 1, steps: int = 8,
            guidance: float = 5.0) -> Image.Image:
    """One image from a checkpoint (with a LoRA at strength 1 when given), the same seed and
    noise every call: few steps, so that a CPU makes it in a second on the demo model."""
    from labkit.generate import pipelines
    from labkit.generate.sampling import generate
    from labkit.lora.sweeping import sweep
    from labkit.quiet import quiet_libraries

    with quiet_libraries():
        pipe = pipelines.cached_pipeline(model, progress=False)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        return sweep(pipe, lora, [1.0], prompt, seed=seed, steps=steps, guidance=guidance)[0]
    return generate(pipe, prompt, seed=seed, steps=steps, guidance=guidance, progress=False)[0]
