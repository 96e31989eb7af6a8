"""The demo world's recipe: train the VAE, the base UNet and the adapters, then export every form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from labkit import zoo
from labkit.zoo import manifest
from labkit.zoo.card import FINETUNE_HEADING, model_card, section
from labkit.zoo.evaluate import measure
from labkit.zoo.export import export_base
from labkit.zoo.export_adapters import write_embeddings, write_kohya, write_peft_lora
from labkit.zoo.recipe.adapters import (
    ADAPTERS,
    TrainedAdapter,
    TrainedEmbedding,
    train_adapter,
    train_embedding,
)
from labkit.zoo.recipe.conditioning import TextConditioner
from labkit.zoo.recipe.dataset import mixed_samples
from labkit.zoo.recipe.models import (
    FULL,
    TOY,
    Configs,
    make_scheduler,
    make_text_encoder,
    make_unet,
    make_vae,
)
from labkit.zoo.recipe.tokenizer import load_tokenizer
from labkit.zoo.recipe.train import (
    Lengths,
    cached_pool,
    denoiser_loss,
    pool_rng,
    run_stage,
    summary,
    vae_loss,
)
from labkit.zoo.recipe.world import World
from labkit.zoo.registry import write_manifest
from labkit.zoo.sample import make_pipeline

VAE_STYLES = {"plain": 0.4, "striped": 0.15, "outlined": 0.15, "twotone": 0.15, "checker": 0.15}
# The base learns plain fills, plus checkerboards under the word "checkered" so that a textual
# inversion has a concept the model can draw but no single token names (as with real SD).
BASE_STYLES = {"plain": 0.85, "checker": 0.15}
# The scheduler the diffusers folder ships, so that the plain quick-start draws the prompt: SD1.5's
# own PNDM extrapolates the guided noise over four steps and overshoots on this tiny model at
# guidance 7.5 (data/README.md has the figures per scheduler).
FOLDER_SCHEDULER = "ddim"
ADAPTER_FOLDER = {"lora": "lora", "loha": "lycoris", "lokr": "lycoris"}


@dataclass(frozen=True, kw_only=True)
class Recipe(Lengths):
    """The SD1-style world's recipe: its configs, the VAE stage, then the shared lengths;
    FULL_RECIPE is the shipped build, TOY_RECIPE a test."""

    configs: Configs
    vae_steps: int
    vae_batch: int
    vae_lr: float
    # The VAE's colours drift from step to step (a green fill decoded anywhere from G=100 to 180
    # of 175 late in a 1,000-step run); twice the steps and an average of the weights hold them.
    vae_ema: float = 0.995


FULL_RECIPE = Recipe(configs=FULL, vae_steps=2000, vae_batch=16, vae_lr=1e-3, base_pool=12000,
                     base_steps=3000, base_batch=64, base_lr=1e-3, adapter_pool=3000,
                     adapter_steps=1500, adapter_batch=32, adapter_lr=4e-3, ti_steps=400,
                     ti_lr=5e-3)
TOY_RECIPE = Recipe(configs=TOY, vae_steps=3, vae_batch=4, vae_lr=1e-3, base_pool=32, base_steps=3,
                    base_batch=4, base_lr=1e-3, adapter_pool=16, adapter_steps=2, adapter_batch=4,
                    adapter_lr=1e-3, ti_steps=2, ti_lr=1e-3, ckpt_every=2, eval_steps=2)


def train_base(recipe: Recipe, workdir: Path, progress: bool = True) -> World:
    """Train (or resume) the VAE and the base UNet; returns the world without adapters."""
    torch.manual_seed(recipe.seed)
    cfg = recipe.configs
    workdir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(zoo.TOKENIZER)
    text_encoder = make_text_encoder(cfg.text_encoder, recipe.seed)
    vae = make_vae(cfg.vae, recipe.seed)
    vae_stage = recipe.stage(workdir, "vae", recipe.vae_steps, recipe.vae_lr, progress,
                             ema_decay=recipe.vae_ema)
    vae_ema = run_stage(vae_stage, dict(vae.named_parameters()),
                        vae_loss(vae, recipe.vae_batch, VAE_STYLES))
    vae.load_state_dict(vae_ema.shadow, strict=False)
    vae.eval().requires_grad_(False)

    base = cached_pool(workdir / "pool_base.safetensors", vae,
                       mixed_samples(pool_rng(recipe.seed, "base"), recipe.base_pool,
                                     BASE_STYLES), progress)
    gen = torch.Generator().manual_seed(recipe.seed)
    z = base.mean + base.std * torch.randn(base.mean.shape, generator=gen)
    vae.register_to_config(scaling_factor=round(float(1.0 / z.std()), 5))

    unet = make_unet(cfg.unet, recipe.seed)
    scheduler = make_scheduler("ddpm")
    unet_stage = recipe.stage(workdir, "unet", recipe.base_steps, recipe.base_lr, progress,
                        ema_decay=0.999)
    ema = run_stage(unet_stage, dict(unet.named_parameters()),
                    denoiser_loss(unet, scheduler, base, vae.config.scaling_factor,
                                  recipe.base_batch, TextConditioner(tokenizer, text_encoder)))
    raw = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    unet.load_state_dict(ema.shadow)
    unet.eval().requires_grad_(False)
    figures = {"vae": summary(vae_stage), "unet": summary(unet_stage),
               "scaling_factor": vae.config.scaling_factor}
    return World([tokenizer], [text_encoder], vae, unet, raw, scheduler, figures)


def train_adapters(world: World, recipe: Recipe, workdir: Path, progress: bool
                   ) -> tuple[list[TrainedAdapter], TrainedEmbedding]:
    """Train (or resume) the LoRA, LoHa, LoKr and the textual inversion on the world."""
    trained = [train_adapter(world, spec, recipe.stage(workdir, spec.name, recipe.adapter_steps,
                                                 recipe.adapter_lr, progress),
                             recipe.adapter_pool, recipe.adapter_batch) for spec in ADAPTERS]
    emb = train_embedding(world, recipe.stage(workdir, "ti", recipe.ti_steps, recipe.ti_lr,
                                        progress), recipe.adapter_pool, recipe.adapter_batch)
    for t in trained:
        world.figures[t.spec.name] = summary(t.stage)
    world.figures["ti"] = summary(emb.stage)
    return trained, emb


def export_all(world: World, trained: list[TrainedAdapter], emb: TrainedEmbedding, out: Path,
               workdir: Path, global_step: int) -> dict[str, Path]:
    """Write every form of the base and the adapters into `out`; manifest name -> path."""
    pipe = make_pipeline(world.tokenizers[0], world.encoders[0], world.vae, world.unet)
    pipe.scheduler = make_scheduler(FOLDER_SCHEDULER)
    paths = export_base(pipe, world.raw_unet, out, workdir, global_step, zoo.TOKENIZER)
    for t in trained:
        folder = out / ADAPTER_FOLDER[t.spec.method]
        name = f"demo_{t.spec.method}_{t.spec.style}"
        paths[name] = write_kohya(t, t.captions, folder / f"{t.spec.style}_{t.spec.method}.safetensors",
                                  f"demo {t.spec.style} {t.spec.method}")
        if t.spec.method == "lora":
            paths[name + "_peft"] = write_peft_lora(t, folder / f"{t.spec.style}_lora_peft.safetensors")
    for form, p in write_embeddings(emb, out / "embeddings", "checker").items():
        paths[f"demo_ti_checker_{form}"] = p
    return paths


def build(out: Path, workdir: Path, recipe: Recipe = FULL_RECIPE, progress: bool = True,
          sample_png: Path | None = None) -> dict:
    """Run the whole recipe (resuming where a previous run stopped), export every form into
    `out`, measure the results, and write zoo.json and the model card; returns the figures."""
    world = train_base(recipe, workdir, progress)
    trained, emb = train_adapters(world, recipe, workdir, progress)
    paths = export_all(world, trained, emb, out, workdir, recipe.base_steps)
    figures = measure(world, trained, paths, sample_png or workdir / "samples.png",
                      recipe.eval_steps)
    figures.update(world.figures)
    write_manifest(out, paths)
    card = out / "README.md"
    kept = section(card.read_text(encoding="utf-8"), FINETUNE_HEADING) if card.exists() else ""
    card.write_text(model_card(figures, recipe, manifest(out), kept), encoding="utf-8")
    (workdir / "figures.json").write_text(json.dumps(figures, indent=2))
    return figures


def toy_build(out: Path, progress: bool = False) -> dict:
    """The whole recipe at toy scale (seconds), into `out` (its work folder inside it)."""
    return build(out, out / "work", TOY_RECIPE, progress)
