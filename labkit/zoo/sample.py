"""Generate from the demo world with diffusers' own pipeline, and the prompt sets its checks use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from labkit.zoo.recipe.dataset import BACKGROUNDS, COLOURS, SHAPES, article
from labkit.zoo.recipe.models import make_scheduler


def make_pipeline(tokenizer, text_encoder, vae, unet):
    """A StableDiffusionPipeline (DDIM, no safety checker) around in-memory components."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=make_scheduler("ddim"),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def load_pipeline(folder: Path):
    """The demo model's diffusers folder as a StableDiffusionPipeline with a DDIM scheduler."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = make_scheduler("ddim")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe, prompts: list[str], seeds: list[int], steps: int = 20,
             guidance: float = 5.0, **kwargs) -> list[np.ndarray]:
    """Images (HxWx3 float in [0, 1]) for prompts, one seeded generator each, in one batch."""
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    out = pipe(prompts, generator=gens, num_inference_steps=steps, guidance_scale=guidance,
               output_type="np", **kwargs)
    return list(out.images)


def colour_prompts(n_seeds: int = 1, style_word: str | None = None) -> tuple[list[str], list[str], list[int]]:
    """Every colour x shape (backgrounds cycled), `n_seeds` seeds each: prompts, colours, seeds."""
    backgrounds = list(BACKGROUNDS)
    prompts, colours, seeds = [], [], []
    for i, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        for k in range(n_seeds):
            bg = backgrounds[(i + k) % len(backgrounds)]
            text = f"{article(colour)} {colour} {shape} on a {bg} background"
            prompts.append(f"{text}, {style_word}" if style_word else text)
            colours.append(colour)
            seeds.append(1000 + 17 * i + k)
    return prompts, colours, seeds


def grid(rows: list[list[np.ndarray]], scale: int = 2) -> np.ndarray:
    """A uint8 image grid of rows of images (2 px gaps), enlarged `scale` times."""
    width = max(len(r) for r in rows)
    blank = np.ones_like(rows[0][0])
    pad = [np.concatenate([np.pad(im, ((2, 2), (2, 2), (0, 0)), constant_values=1.0)
                           for im in r + [blank] * (width - len(r))], 1) for r in rows]
    img = np.concatenate(pad, 0)
    img = img.repeat(scale, 0).repeat(scale, 1)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)
