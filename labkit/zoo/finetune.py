"""A real full fine-tune of the SD1-style demo: every UNet weight trained further on outlined
drawings captioned plainly (no trigger word), so the same prompts draw a new look.

The text encoder, VAE and tokenizer are the shipped demo's, untouched, so the zoo ships the tuned
UNet alone (SD's original keys, fp16: 2.2 MB, where a whole checkpoint would break the data
budget), as UNet-only fine-tunes are shared; labkit.surgery.demo.outlined_finetune puts it
together with the base's other parts into a whole checkpoint when a lesson needs one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labkit import zoo
from labkit.convert import forms as convert
from labkit.zoo import data_dir
from labkit.zoo.card import FINETUNE_HEADING, QUICKSTART_HEADING, finetune_section, with_section
from labkit.zoo.recipe.conditioning import TextConditioner
from labkit.zoo.recipe.dataset import mixed_samples
from labkit.zoo.recipe.models import make_scheduler
from labkit.zoo.recipe.train import (
    Stage,
    cached_pool,
    denoiser_loss,
    pool_rng,
    run_stage,
    save_tensors,
    summary,
)
from labkit.zoo.recipe.world import World
from labkit.zoo.registry import write_manifest

NAME = "demo_sd1_outlined_unet"  # its zoo.json name
FILE = "demo_sd1_outlined_unet.safetensors"
UNET_PREFIX = "model.diffusion_model."  # the UNet's keys in SD's original layout
STYLE = "outlined"  # the look it learns, under the plain captions


@dataclass(frozen=True, kw_only=True)
class FinetuneRecipe:
    """The fine-tune's lengths: its pool of drawings, steps, batch, learning rate, the share of
    plain drawings mixed in, the EMA decay of the weights shipped, and how often it checkpoints."""

    pool: int
    steps: int
    batch: int
    lr: float
    plain_share: float = 0.0
    ema_decay: float | None = 0.99
    ckpt_every: int = 100
    eval_steps: int = 20
    seed: int = 1234


# FULL: the shipped file (9.6 minutes on 2 shared cores, data/README.md); TOY: a test, seconds.
FULL_FINETUNE = FinetuneRecipe(pool=3000, steps=1200, batch=32, lr=3e-4, ckpt_every=200)
TOY_FINETUNE = FinetuneRecipe(pool=16, steps=2, batch=4, lr=1e-4, ckpt_every=2, eval_steps=2)


def load_world(folder: Path) -> World:
    """The shipped SD1-style demo from its diffusers folder: tokenizer, frozen text encoder and
    VAE, the EMA UNet (to fine-tune) and SD1's DDPM schedule for training."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    te = CLIPTextModel.from_pretrained(folder / "text_encoder").eval().requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(folder / "vae").eval().requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    return World([tokenizer], [te], vae, unet, {}, make_scheduler("ddpm"))


def finetune(world: World, recipe: FinetuneRecipe, workdir: Path, progress: bool = True) -> Stage:
    """Train every weight of the world's UNet (in place, resumable) on outlined drawings with
    plain captions; the UNet ends with the EMA weights when the recipe keeps an EMA."""
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    weights = {STYLE: 1 - recipe.plain_share, "plain": recipe.plain_share}
    samples = mixed_samples(pool_rng(recipe.seed, "finetune"), recipe.pool,
                            {k: w for k, w in weights.items() if w > 0})
    # trigger "": no style word at the end of any caption, so the new look needs no trigger
    pool = cached_pool(workdir / "pool_finetune.safetensors", world.vae, samples, progress,
                       trigger="")
    stage = Stage(name="finetune", steps=recipe.steps, lr=recipe.lr, workdir=workdir,
                  seed=recipe.seed, ckpt_every=recipe.ckpt_every, ema_decay=recipe.ema_decay,
                  progress=progress)
    unet = world.unet.train().requires_grad_(True)
    ema = run_stage(stage, dict(unet.named_parameters()),
                    denoiser_loss(unet, world.scheduler, pool, world.vae.config.scaling_factor,
                                  recipe.batch, TextConditioner(world.tokenizers[0],
                                                                world.encoders[0])))
    if ema:
        unet.load_state_dict(ema.shadow, strict=False)
    unet.eval().requires_grad_(False)
    return stage


def export_finetune(world: World, out: Path, workdir: Path) -> Path:
    """Write the fine-tuned UNet as one fp16 file in SD's original layout: the world's single
    file (through a diffusers folder in `workdir` and labkit.convert), its UNet keys alone."""
    from safetensors import safe_open

    from labkit.zoo.build import FOLDER_SCHEDULER
    from labkit.zoo.export import save_folder
    from labkit.zoo.sample import make_pipeline

    pipe = make_pipeline(world.tokenizers[0], world.encoders[0], world.vae, world.unet)
    pipe.scheduler = make_scheduler(FOLDER_SCHEDULER)
    folder = save_folder(pipe, workdir / "finetune_pipeline", zoo.TOKENIZER)
    whole = convert.folder_to_single_file(folder, workdir / "finetune_whole.safetensors",
                                          dtype=torch.float16, overwrite=True)
    with safe_open(str(whole), "pt") as f:
        names = f.keys()
        unet = {k: f.get_tensor(k) for k in names if k.startswith(UNET_PREFIX)}
        metadata = f.metadata() or {}
    save_tensors(out / FILE, unet, metadata)
    return out / FILE


def measure_finetune(base_file: Path, tuned_file: Path, steps: int = 20) -> dict:
    # tuned_file: a whole checkpoint (the UNet-only file is assembled first)
    """Colour accuracy and the outlined style's score (hollowness) of plain prompts, base and
    fine-tune, from the single files (DDIM, guidance 5, the zoo's seeds)."""
    from labkit.generate.pipelines import load_pipeline
    from labkit.quiet import quiet_libraries
    from labkit.zoo.evaluate import base_quality
    from labkit.zoo.metrics import style_score
    from labkit.zoo.sample import colour_prompts, generate

    prompts, _, seeds = colour_prompts(1)
    figures = {}
    for name, file in (("base", base_file), ("finetune", tuned_file)):
        with quiet_libraries():
            pipe = load_pipeline(file, device="cpu", progress=False)
        pipe.scheduler = make_scheduler("ddim")
        quality = base_quality(pipe, steps=steps)
        figures[name] = {"colour_accuracy": quality["colour_accuracy"],
                         STYLE: style_score(generate(pipe, prompts, seeds, steps), STYLE)}
    return figures


def build_finetune(out: Path, workdir: Path, recipe: FinetuneRecipe = FULL_FINETUNE,
                   progress: bool = True) -> dict:
    """Fine-tune the demo in data_dir() (resuming), write FILE into `out`, add it to out's
    zoo.json, measure it against the base; returns the figures (also in workdir)."""
    world = load_world(data_dir() / "demo_sd1")
    stage = finetune(world, recipe, workdir, progress)
    tuned = export_finetune(world, out, workdir)
    write_manifest(out, {NAME: tuned})
    base_file = data_dir() / "demo_sd1.safetensors"
    figures = {"finetune": summary(stage),
               "quality": measure_finetune(base_file, workdir / "finetune_whole.safetensors",
                                           recipe.eval_steps),
               "change": float(unet_change(base_file, tuned))}
    (workdir / "finetune_figures.json").write_text(json.dumps(figures, indent=2, default=float))
    card = out / "README.md"
    if card.exists():
        card.write_text(with_section(card.read_text(encoding="utf-8"),
                                     finetune_section(figures, recipe), FINETUNE_HEADING,
                                     QUICKSTART_HEADING), encoding="utf-8")
    return figures


def unet_change(base_file: Path, tuned_file: Path) -> float:
    """How far the fine-tune moved: the relative norm of tuned - base over the UNet's keys (the
    tuned file: a whole checkpoint or the UNet alone)."""
    from safetensors.torch import load_file

    a, b = load_file(str(base_file)), load_file(str(tuned_file))
    unet = [k for k in a if k.startswith(UNET_PREFIX)]
    delta = np.sqrt(sum(float((b[k].float() - a[k].float()).square().sum()) for k in unet))
    return delta / np.sqrt(sum(float(a[k].float().square().sum()) for k in unet))
