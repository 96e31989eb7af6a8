"""A trained demo base, either family: its tokenizers and text encoders (SD1-style: one each,
SDXL-style: two), VAE, UNet and scheduler, and how captions condition its UNet."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from labkit.zoo.recipe.conditioning import TextConditioner
from labkit.zoo.xl.conditioning import XLConditioner


@dataclass
class World:
    """A trained base. The UNet carries the EMA weights (as SD's diffusers folders do);
    `raw_unet` keeps the trained weights (the SD1-style .ckpt stores them beside model_ema.)."""

    tokenizers: list
    encoders: list
    vae: object
    unet: object
    raw_unet: dict[str, torch.Tensor]
    scheduler: object
    figures: dict[str, dict] = field(default_factory=dict)

    def conditioner(self, encoders: list | None = None, tokenizers: list | None = None,
                    cache: bool = True) -> TextConditioner | XLConditioner:
        """The conditioning of this world's encoders (or of adapted copies of them): SD1's last
        hidden state for one encoder, SDXL's states, pooled text and size/crop for two. `cache`
        keeps frozen SDXL encodings per caption (SD1's encoder runs every call)."""
        tokenizers, encoders = tokenizers or self.tokenizers, encoders or self.encoders
        if len(encoders) == 1:
            return TextConditioner(tokenizers[0], encoders[0])
        return XLConditioner(tokenizers, encoders, cache)
