"""Measure the demo world: colour accuracy, shapes, each adapter's effect, and grids to look at."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from labkit.zoo.metrics import STYLE_METRICS, colour_accuracy, foreground, shape_pixels, style_score
from labkit.zoo.recipe.adapters import ADAPTERS
from labkit.zoo.recipe.dataset import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_WORDS,
    SHAPES,
    STYLES,
    Sample,
    mixed_samples,
    to_tensor_batch,
)
from labkit.zoo.sample import colour_prompts, generate, grid, load_pipeline

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
UNKNOWN_WORD = HELD_OUT_WORDS[0]  # no demo caption has it: a prompt carrying it tests robustness
# words the base never saw at a caption's end
ADAPTER_TRIGGERS = tuple(spec.trigger for spec in ADAPTERS)
QUICKSTART_GUIDANCE = 7.5  # diffusers' pipeline default, what the quick-start line uses


@torch.no_grad()
def vae_ceiling(vae, style: str, n: int = 32, seed: int = 7) -> dict[str, float]:
    """A style's measure on true drawings and on their VAE round trip (what a decoder can show)."""
    samples = mixed_samples(np.random.default_rng(seed), n, {style: 1.0})
    images = [s.render() for s in samples]
    x = to_tensor_batch(images)
    y = vae.decode(vae.encode(x).latent_dist.mean).sample
    back = list(((y.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy())
    mse = float(np.mean([(a - b) ** 2 for a, b in zip(images, back, strict=True)]))
    return {"drawn": style_score(images, style), "round_trip": style_score(back, style),
            "psnr_db": round(10 * np.log10(1 / max(mse, 1e-12)), 2)}


@torch.no_grad()
def vae_colour_error(vae) -> dict[str, float | str]:
    """How far a VAE round trip moves each named colour's plain fill, on every background: the
    largest channel error of the fill's mean colour (0-255), and where it is."""
    errors = {}
    for bg in BACKGROUNDS:
        samples = [Sample(c, "circle", bg, "plain", 32.0, 32.0, 18.0) for c in COLOURS]
        images = [s.render() for s in samples]
        y = vae.decode(vae.encode(to_tensor_batch(images)).latent_dist.mean).sample
        back = ((y.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        for s, drawn, decoded in zip(samples, images, back, strict=True):
            fill = foreground(drawn)
            error = np.abs(decoded[fill].mean(0) - drawn[fill].mean(0)).max() * 255
            errors[f"{s.colour} on {bg}"] = float(error)
    worst = max(errors, key=errors.__getitem__)
    return {"max_error": round(errors[worst], 1), "worst": worst,
            "mean_error": round(float(np.mean(list(errors.values()))), 1)}


def word_robustness(pipe, words: tuple[str, ...] = (*HELD_OUT_WORDS, *ADAPTER_TRIGGERS),
                    steps: int = 20, guidance: float = 5.0) -> dict[str, float]:
    """Colour accuracy of every colour x shape prompt ending in each word the base never saw."""
    scores = {}
    for word in words:
        prompts, colours, seeds = colour_prompts(1, word)
        scores[word] = colour_accuracy(generate(pipe, prompts, seeds, steps, guidance), colours)
    return scores


def base_quality(pipe, n_seeds: int = 2, steps: int = 20) -> dict[str, float]:
    """Colour accuracy over every colour x shape prompt, and how much the shapes differ."""
    prompts, colours, seeds = colour_prompts(n_seeds)
    images = generate(pipe, prompts, seeds, steps)
    masks = np.stack([shape_pixels(im) for im in images]).reshape(len(colours) // len(SHAPES) // n_seeds,
                                                                  len(SHAPES), n_seeds, -1)
    diffs = [np.mean(masks[:, a] != masks[:, b]) for a in range(len(SHAPES))
             for b in range(a + 1, len(SHAPES))]
    return {"colour_accuracy": colour_accuracy(images, colours), "n_prompts": len(prompts),
            "min_shape_difference": float(np.min(diffs))}


def scheduler_scores(pipe, schedulers: list[str], steps: tuple[int, ...] = (10, 20, 50),
                     words: tuple[str, ...] = ("", UNKNOWN_WORD), n_seeds: int = 1,
                     guidance: float = QUICKSTART_GUIDANCE) -> pd.DataFrame:
    """Colour accuracy of every colour x shape prompt per scheduler (labkit's names), step count
    and extra trailing word ("" for none): one row each."""
    from labkit.generate.sampling import set_scheduler

    rows = []
    for name in schedulers:
        set_scheduler(pipe, name)
        for n in steps:
            for word in words:
                prompts, colours, seeds = colour_prompts(n_seeds, word or None)
                images = generate(pipe, prompts, seeds, n, guidance)
                rows.append({"scheduler": name, "steps": n, "extra_word": word or "-",
                             "colour_accuracy": colour_accuracy(images, colours)})
    return pd.DataFrame(rows)


def quickstart_pipeline(folder: Path):
    """A demo folder loaded as the diffusers quick-start does: its own pipeline class and
    scheduler, no dtype argument (no safety checker, which the demos do not ship)."""
    import diffusers

    cls_name = json.loads((folder / "model_index.json").read_text())["_class_name"]
    pipe = getattr(diffusers, cls_name).from_pretrained(str(folder), **(
        {"safety_checker": None} if cls_name == "StableDiffusionPipeline" else {}))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def quickstart_scores(folder: Path) -> list[dict]:
    """scheduler_scores of a demo folder's quickstart_pipeline (its own scheduler first, then
    every one the generate panel offers), as card rows."""
    from labkit.generate.sampling import SCHEDULERS

    pipe = quickstart_pipeline(folder)
    own = next(n for n, (c, _) in SCHEDULERS.items() if c == type(pipe.scheduler).__name__)
    names = [own, *(n for n in SCHEDULERS if n != own)]
    return scheduler_scores(pipe, names).to_dict("records")


@contextmanager
def lora_loaded(pipe, lora_file: Path, name: str = "demo") -> Iterator[object]:
    """The pipeline with a LoRA file loaded through diffusers (set its strength with
    `set_adapters`); unloaded afterwards."""
    pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name, adapter_name=name)
    try:
        yield pipe
    finally:
        pipe.unload_lora_weights()


@contextmanager
def unet_swapped(pipe, unet) -> Iterator[object]:
    """The pipeline with another UNet (e.g. one with a peft LoHa/LoKr injected) for a while."""
    old = pipe.unet
    pipe.unet = unet
    try:
        yield pipe
    finally:
        pipe.unet = old


@contextmanager
def embedding_loaded(pipe, embeds_file: Path, token: str) -> Iterator[object]:
    """The pipeline with a textual inversion loaded through diffusers; unloaded afterwards."""
    pipe.load_textual_inversion(str(embeds_file), token=token)
    try:
        yield pipe
    finally:
        pipe.unload_textual_inversion(token)


def lora_curve(pipe, lora_file: Path, style: str, trigger: str, steps: int = 20) -> dict:
    """The style's measure at each strength (triggered prompts) and colour accuracy at 0."""
    prompts, _, seeds = colour_prompts(2, trigger)
    plain, plain_colours, plain_seeds = colour_prompts(2)
    curve = []
    with lora_loaded(pipe, lora_file) as lp:
        for s in STRENGTHS:
            lp.set_adapters(["demo"], [s])
            curve.append(style_score(generate(lp, prompts, seeds, steps), style))
        lp.set_adapters(["demo"], [0.0])
        acc0 = colour_accuracy(generate(lp, plain, plain_seeds, steps), plain_colours)
    return {"strengths": list(STRENGTHS), "energy": curve, "colour_accuracy_at_0": acc0}


def adapter_effect(pipe, unet_with_adapter, style: str, trigger: str, steps: int = 20) -> dict:
    """A style's measure on triggered prompts without and with a trained (peft-injected) UNet."""
    prompts, _, seeds = colour_prompts(1, trigger)
    before = style_score(generate(pipe, prompts, seeds, steps), style)
    with unet_swapped(pipe, unet_with_adapter):
        after = style_score(generate(pipe, prompts, seeds, steps), style)
    return {"without": before, "with": after}


def embedding_effect(pipe, embeds_file: Path, token: str, style: str = "checker",
                     steps: int = 20) -> dict[str, float]:
    """The style's measure of plain prompts, then ending in the TI token, then in the word."""
    prompts, _, seeds = colour_prompts(1)
    without = style_score(generate(pipe, prompts, seeds, steps), style)
    word = style_score(generate(pipe, [f"{p}, {STYLES[style]}" for p in prompts], seeds, steps),
                       style)
    with embedding_loaded(pipe, embeds_file, token):
        with_token = style_score(generate(pipe, [f"{p}, {token}" for p in prompts], seeds, steps),
                                 style)
    return {"without_token": without, "with_token": with_token, "word": word}


def sample_grid(pipe, trained: list, paths: dict[str, Path], token: str, steps: int = 20
                ) -> np.ndarray:
    """Rows to look at: base prompts; LoRA strengths 0..1; each LyCORIS off/on; TI off/on."""
    prompts, _, seeds = colour_prompts(1)
    rows = [generate(pipe, prompts[:12], seeds[:12], steps),
            generate(pipe, prompts[12:], seeds[12:], steps)]
    with lora_loaded(pipe, paths["demo_lora_striped_peft"]) as lp:
        for p, sd in zip(prompts[1:4], seeds[1:4], strict=True):
            row = []
            for s in STRENGTHS:
                lp.set_adapters(["demo"], [s])
                row += generate(lp, [f"{p}, striped"], [sd], steps)
            rows.append(row)
    for t in trained:
        if t.spec.method == "lora":
            continue
        trig = [f"{p}, {t.spec.trigger}" for p in prompts[:6]]
        row = generate(pipe, trig, seeds[:6], steps)
        with unet_swapped(pipe, t.model):
            rows.append(row + generate(pipe, trig, seeds[:6], steps))
    with embedding_loaded(pipe, paths["demo_ti_checker_diffusers"], token):
        rows.append(generate(pipe, prompts[:6], seeds[:6], steps)
                    + generate(pipe, [f"{p}, {token}" for p in prompts[:6]], seeds[:6], steps))
    return grid(rows)


def measure(world, trained: list, paths: dict[str, Path], png: Path, steps: int = 20,
            token: str = "<checker>") -> dict:
    """Every figure of the model card, measured on the exported files; saves a sample grid."""
    from PIL import Image

    pipe = load_pipeline(paths["demo_sd1"])
    figures: dict = {"base": base_quality(pipe, steps=steps),
                     "word_robustness": word_robustness(pipe, steps=steps),
                     "vae_colour": vae_colour_error(world.vae)}
    figures["quickstart"] = quickstart_scores(paths["demo_sd1"])
    figures["vae_round_trip"] = {st: vae_ceiling(world.vae, st) for st in ["plain", *STYLE_METRICS]
                                 if st != "plain"}
    figures["lora_curve"] = lora_curve(pipe, paths["demo_lora_striped_peft"], "striped", "striped",
                                       steps)
    for t in trained:
        if t.spec.method != "lora":
            figures[f"{t.spec.method}_effect"] = adapter_effect(pipe, t.model, t.spec.style,
                                                                t.spec.trigger, steps)
    figures["ti_effect"] = embedding_effect(pipe, paths["demo_ti_checker_diffusers"], token,
                                             steps=steps)
    png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample_grid(pipe, trained, paths, token, steps)).save(png)
    return figures
