"""The SDXL-style demo model: SDXL's structure (two text encoders, text_time micro-conditioning,
attention only on deeper levels), tiny dims. Its first text encoder and its VAE are the SD1-style
demo's, as SDXL's first encoder is SD1.5's CLIP ViT-L and its VAE has the SD VAE's structure."""

from __future__ import annotations

from typing import Any

import torch

from labkit.zoo.recipe.models import TEXT_ENCODER, TOY_TEXT

# SDXL's second encoder is OpenCLIP ViT-bigG: wider, GELU, with a text projection whose output
# (the pooled prompt) conditions the UNet beside the time step. 48 wide: no real model's width.
TEXT_ENCODER_2: dict[str, Any] = {**TEXT_ENCODER, "hidden_size": 48, "intermediate_size": 192,
                                  "hidden_act": "gelu", "projection_dim": 48, "pad_token_id": 0}
TIME_EMBED_DIM = 8  # SDXL: 256 per micro-conditioning number
MICRO_CONDITIONS = 6  # original size (h, w), crop top-left (y, x), target size (h, w)


def context_dim(te1: dict[str, Any], te2: dict[str, Any]) -> int:
    """Cross-attention width: both encoders' penultimate hidden states side by side."""
    return int(te1["hidden_size"] + te2["hidden_size"])


def unet_config(te1: dict[str, Any], te2: dict[str, Any], channels: list[int], groups: int,
                heads: list[int]) -> dict[str, Any]:
    """SDXL's UNet pattern: no attention on the first level, more transformer layers deeper,
    linear projections, and the text_time additional embedding; two levels (8x8 latents)."""
    return {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": channels,
        "layers_per_block": 2,
        "transformer_layers_per_block": [1, 2],
        "attention_head_dim": heads,
        "cross_attention_dim": context_dim(te1, te2),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": TIME_EMBED_DIM,
        "projection_class_embeddings_input_dim": MICRO_CONDITIONS * TIME_EMBED_DIM
        + te2["projection_dim"],
        "norm_num_groups": groups,
    }


UNET_XL = unet_config(TEXT_ENCODER, TEXT_ENCODER_2, [32, 64], 8, [2, 4])
TOY_TEXT_2 = {**TEXT_ENCODER_2, "intermediate_size": 32, "num_hidden_layers": 1}
TOY_UNET_XL = unet_config(TOY_TEXT, TOY_TEXT_2, [8, 16], 4, [1, 2])

# SDXL ships an Euler scheduler over SD1's noise schedule.
EULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}


def make_text_encoder_2(cfg: dict[str, Any], seed: int):
    """A seeded, frozen CLIPTextModelWithProjection (SDXL's second encoder class)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed + 1)
    model = CLIPTextModelWithProjection(CLIPTextConfig(**cfg))
    return model.eval().requires_grad_(False)


def make_unet_xl(cfg: dict[str, Any], seed: int):
    """A seeded UNet2DConditionModel with SDXL's text_time conditioning."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**cfg)


def make_euler():
    """SDXL's scheduler (Euler, SD1's schedule, "leading" spacing)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler.from_config(EULER)
