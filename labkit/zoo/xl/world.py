"""Train the SDXL-style demo base: SD1's demo VAE and first encoder, a new second encoder (frozen,
as SDXL freezes both), and a UNet trained with SDXL's conditioning on the same demo images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from labkit import zoo
from labkit.errors import LabkitError
from labkit.zoo.build import BASE_STYLES  # the same images as the SD1-style base
from labkit.zoo.recipe.dataset import mixed_samples
from labkit.zoo.recipe.models import Configs, make_scheduler, make_text_encoder, make_vae
from labkit.zoo.recipe.tokenizer import load_tokenizer
from labkit.zoo.recipe.train import (
    Lengths,
    cached_pool,
    denoiser_loss,
    pool_rng,
    run_stage,
    summary,
)
from labkit.zoo.recipe.world import World
from labkit.zoo.xl.models import make_text_encoder_2, make_unet_xl

SHARED_PARTS = ("vae", "text_encoder")  # taken from the SD1-style demo
PAD_2 = "!"  # SDXL's second tokenizer pads with "!" (id 0), the first with the end token


@dataclass(frozen=True, kw_only=True)
class XLRecipe(Lengths):
    """The SDXL-style build: its configs, and `sd1_folder`, which gives the shared VAE and first
    encoder (None: fresh random ones, for the toy build); then the shared lengths."""

    configs: Configs  # text_encoder, vae, unet (the SDXL-style UNet)
    text_encoder_2: dict
    sd1_folder: Path | None


def shared_parts(recipe: XLRecipe) -> tuple[object, object]:
    """The VAE and first text encoder: the SD1-style demo's trained files, or fresh toy ones.
    Raises LabkitError when the SD1-style demo folder lacks them."""
    if recipe.sd1_folder is None:
        return (make_vae(recipe.configs.vae, recipe.seed),
                make_text_encoder(recipe.configs.text_encoder, recipe.seed))
    missing = [part for part in SHARED_PARTS if not (recipe.sd1_folder / part / "config.json").is_file()]
    if missing:
        raise LabkitError(f"the SDXL-style build reuses the SD1-style demo's {' and '.join(missing)}, "
                          "and this folder has no such part.", recipe.sd1_folder,
                          "Build the SD1-style demo first: `python -m labkit.zoo build`.")
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    vae = AutoencoderKL.from_pretrained(recipe.sd1_folder / "vae")
    te = CLIPTextModel.from_pretrained(recipe.sd1_folder / "text_encoder")
    return vae, te.eval().requires_grad_(False)


def train_base_xl(recipe: XLRecipe, workdir: Path, progress: bool = True) -> World:
    """Train (or resume) the SDXL-style UNet on the shared VAE's latents of the demo images."""
    torch.manual_seed(recipe.seed)
    workdir.mkdir(parents=True, exist_ok=True)
    vae, te1 = shared_parts(recipe)
    vae.eval().requires_grad_(False)
    te2 = make_text_encoder_2(recipe.text_encoder_2, recipe.seed)
    tokenizer = zoo.TOKENIZER
    tokenizers = [load_tokenizer(tokenizer), load_tokenizer(tokenizer, pad_token=PAD_2)]
    pool = cached_pool(workdir / "pool_base.safetensors", vae,
                       mixed_samples(pool_rng(recipe.seed, "base"), recipe.base_pool,
                                     BASE_STYLES), progress)
    if recipe.sd1_folder is None:
        z = pool.mean + pool.std * torch.randn(pool.mean.shape)
        vae.register_to_config(scaling_factor=round(float(1.0 / z.std()), 5))
    unet = make_unet_xl(recipe.configs.unet, recipe.seed)
    scheduler = make_scheduler("ddpm")
    stage = recipe.stage(workdir, "unet", recipe.base_steps, recipe.base_lr, progress,
                         ema_decay=0.999)
    world = World(tokenizers, [te1, te2], vae, unet, {}, scheduler)
    ema = run_stage(stage, dict(unet.named_parameters()),
                    denoiser_loss(unet, scheduler, pool, vae.config.scaling_factor,
                                  recipe.base_batch, world.conditioner()))
    world.raw_unet = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    unet.load_state_dict(ema.shadow)
    unet.eval().requires_grad_(False)
    world.figures = {"unet": summary(stage), "scaling_factor": vae.config.scaling_factor}
    return world


def make_xl_pipeline(world: World, scheduler=None):
    """A StableDiffusionXLPipeline around the world's components (Euler unless given)."""
    from diffusers import StableDiffusionXLPipeline

    from labkit.zoo.xl.models import make_euler

    return StableDiffusionXLPipeline(
        vae=world.vae, text_encoder=world.encoders[0], text_encoder_2=world.encoders[1],
        tokenizer=world.tokenizers[0], tokenizer_2=world.tokenizers[1], unet=world.unet,
        scheduler=scheduler or make_euler(), force_zeros_for_empty_prompt=True,
        add_watermarker=False)
