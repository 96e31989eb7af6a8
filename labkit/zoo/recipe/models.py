"""The demo world's model configs: SD1's structure (same classes, same block pattern), tiny dims."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Dims are deliberately unlike real SD (768/1024/...): the identifier tells demo files by them.
TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 32,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}

# SD1's VAE pattern (4 levels, 2 layers per block, x8, 4 latent channels), narrow; 4+ channels
# per GroupNorm group (1 per group stalled training and lost absolute colour).
VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [16, 32, 64, 64],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 64,
    "scaling_factor": 1.0,
}

# SD1's UNet pattern (cross-attention on every level but the last, 2 layers per block, a
# cross-attention mid block), two levels only: latents are 8x8.
UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 2,
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}

# SD1's noise schedule, with the settings SD1.5's scheduler configs give DDIM and PNDM.
SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "skip_prk_steps": True,
    "prediction_type": "epsilon",
}

# Toy scale: the same recipe shrunk so the whole build runs in seconds (tests).
TOY_VAE = {**VAE, "block_out_channels": [4, 8, 8, 8], "norm_num_groups": 4}
TOY_UNET = {**UNET, "block_out_channels": [8, 16], "norm_num_groups": 4, "attention_head_dim": 2}
TOY_TEXT = {**TEXT_ENCODER, "intermediate_size": 32, "num_hidden_layers": 1}


@dataclass(frozen=True)
class Configs:
    """The three component configs of one scale (full or toy)."""

    text_encoder: dict[str, Any]
    vae: dict[str, Any]
    unet: dict[str, Any]


FULL = Configs(TEXT_ENCODER, VAE, UNET)
TOY = Configs(TOY_TEXT, TOY_VAE, TOY_UNET)


def make_text_encoder(cfg: dict[str, Any], seed: int):
    """A seeded, randomly initialised CLIPTextModel (frozen in the recipe, as SD freezes CLIP)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    model = CLIPTextModel(CLIPTextConfig(**cfg))
    return model.eval().requires_grad_(False)


def make_vae(cfg: dict[str, Any], seed: int):
    """A seeded AutoencoderKL."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**cfg)


def make_unet(cfg: dict[str, Any], seed: int):
    """A seeded UNet2DConditionModel."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**cfg)


def make_scheduler(kind: str = "ddpm"):
    """A scheduler with SD1's schedule: "ddpm" (training), "ddim" (the demo folder's) or "pndm" (SD1.5's own)."""
    from diffusers import DDIMScheduler, DDPMScheduler, PNDMScheduler

    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "pndm": PNDMScheduler}
    return classes[kind].from_config(SCHEDULE)
