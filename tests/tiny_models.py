"""Tiny random diffusers pipelines (SD1-style and SDXL-style) saved as folders, for tests.

Same classes and block patterns as the real families, dims small enough to build in a second.
The tokenizer has a byte-level vocab (256 bytes, the same with `</w>`, the two specials).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [8, 16, 16], "norm_num_groups": 4, "sample_size": 32,
}
SD1_UNET = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [8, 16], "cross_attention_dim": 16, "attention_head_dim": 2,
    "norm_num_groups": 4,
}
SDXL_UNET = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [8, 16], "cross_attention_dim": 40, "attention_head_dim": [2, 4],
    "transformer_layers_per_block": [1, 2], "use_linear_projection": True,
    "norm_num_groups": 4, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
    # text_embeds (projection_dim of text_encoder_2) + 6 time ids x addition_time_embed_dim
    "projection_class_embeddings_input_dim": 24 + 6 * 8,
}
TEXT = {"hidden_size": 16, "intermediate_size": 24, "num_attention_heads": 2,
        "num_hidden_layers": 2, "projection_dim": 16, "hidden_act": "quick_gelu",
        "max_position_embeddings": 77}
TEXT_2 = {**TEXT, "hidden_size": 24, "projection_dim": 24, "hidden_act": "gelu"}
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "steps_offset": 1}


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte, as CLIP's vocab uses."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over bytes only (514 tokens), model_max_length 77."""
    chars = _byte_chars()
    words = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={w: i for i, w in enumerate(words)}, merges=[],
                         model_max_length=77)


def _text_config(cfg: dict) -> CLIPTextConfig:
    return CLIPTextConfig(**cfg, vocab_size=514, bos_token_id=512, eos_token_id=513,
                          pad_token_id=513)


def _write_index(folder: Path, pipeline: str, components: dict[str, tuple[str, str]]) -> None:
    index = {"_class_name": pipeline, "_diffusers_version": "0.42.1", **components}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def save_tiny(folder: Path, family: str = "sd1", seed: int = 0) -> Path:
    """Write a tiny random diffusers folder of family "sd1" or "sdxl"; return the folder."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    unet_cfg = SD1_UNET if family == "sd1" else SDXL_UNET
    UNet2DConditionModel(**unet_cfg).save_pretrained(folder / "unet")
    AutoencoderKL(**VAE).save_pretrained(folder / "vae")
    CLIPTextModel(_text_config(TEXT)).save_pretrained(folder / "text_encoder")
    tokenizer().save_pretrained(folder / "tokenizer")
    components = {
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    if family == "sd1":
        PNDMScheduler(**SCHEDULE, skip_prk_steps=True).save_pretrained(folder / "scheduler")
        components |= {"scheduler": ["diffusers", "PNDMScheduler"],
                       "safety_checker": [None, None], "feature_extractor": [None, None]}
        _write_index(folder, "StableDiffusionPipeline", components)
        return folder
    CLIPTextModelWithProjection(_text_config(TEXT_2)).save_pretrained(folder / "text_encoder_2")
    tokenizer().save_pretrained(folder / "tokenizer_2")
    EulerDiscreteScheduler(**SCHEDULE).save_pretrained(folder / "scheduler")
    components |= {"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                   "tokenizer_2": ["transformers", "CLIPTokenizer"],
                   "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    _write_index(folder, "StableDiffusionXLPipeline", components)
    return folder
