"""Build the SDXL-style demo: train its UNet, a LoRA and a textual inversion, export the diffusers
folder, the single file (SDXL's original layout, through labkit.convert.forms) and the adapters, measure
them and add them to data/zoo.json beside the SD1-style files."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file

from labkit import zoo
from labkit.convert import forms as convert
from labkit.zoo.card import xl_model_card
from labkit.zoo.evaluate import STRENGTHS, base_quality, quickstart_scores, word_robustness
from labkit.zoo.export_adapters import write_kohya, write_sdxl_embedding
from labkit.zoo.metrics import colour_accuracy, style_score
from labkit.zoo.recipe.adapters import (
    TE_ATTENTION,
    TI_TOKEN,
    UNET_TRANSFORMER,
    AdapterSpec,
    TrainedAdapter,
    TrainedEmbedding,
    train_adapter,
    train_embedding,
)
from labkit.zoo.recipe.tokenizer import SPECIAL_TOKENS_MAP, write_configs
from labkit.zoo.recipe.train import summary
from labkit.zoo.registry import write_manifest
from labkit.zoo.sample import colour_prompts, generate, grid
from labkit.zoo.xl.world import PAD_2, World, XLRecipe, make_xl_pipeline, train_base_xl

# Dose-aware, as the SD1-style LoRA: each step trains at one strength on stripes of that contrast.
XL_LORA = AdapterSpec("lora_xl", "lora", "striped", tuple(UNET_TRANSFORMER), tuple(TE_ATTENTION),
                      alpha=4, doses=STRENGTHS[1:])
XL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
NAMES = {"folder": "demo_sdxl", "single": "demo_sdxl_single", "lora": "demo_lora_striped_xl",
         "ti": "demo_ti_checker_xl"}


def _write_tokenizer(dst: Path, pad_token: str) -> None:
    """SD's tokenizer files (vocab.json + merges.txt) with the given padding token."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(zoo.TOKENIZER / name, dst / name)
    write_configs(dst, pad_token)


def save_xl_folder(pipe, dst: Path) -> Path:
    """The pipeline as a diffusers folder in fp16 (the lab's size budget), the text encoders'
    configs saying float32: transformers loads a text encoder in its config's dtype and diffusers
    loads fp32, so with no `dtype` argument every part runs in float32 together (fp16 configs made
    the quick-start fail: "Half and Float"). The tokenizers as vocab.json + merges.txt, the second
    padding with "!"."""
    half = [getattr(pipe, name) for name in XL_COMPONENTS]
    with convert.atomic_folder(dst) as tmp:
        for module in half:
            module.to(torch.float16)
        try:
            pipe.save_pretrained(tmp, safe_serialization=True)
        finally:
            for module in half:
                module.to(torch.float32)
        for encoder in ("text_encoder", "text_encoder_2"):
            config = tmp / encoder / "config.json"
            config.write_text(json.dumps({**json.loads(config.read_text()), "dtype": "float32"},
                                         indent=2, sort_keys=True) + "\n")
        _write_tokenizer(tmp / "tokenizer", SPECIAL_TOKENS_MAP["pad_token"])
        _write_tokenizer(tmp / "tokenizer_2", PAD_2)
    return dst


def export_xl(world: World, lora: TrainedAdapter, emb: TrainedEmbedding, out: Path
              ) -> dict[str, Path]:
    """Every file of the SDXL-style demo; manifest name -> path."""
    folder = save_xl_folder(make_xl_pipeline(world), out / "demo_sdxl")
    single = convert.folder_to_single_file(folder, out / "demo_sdxl.safetensors",
                                           dtype=torch.float16, overwrite=True)
    return {
        NAMES["folder"]: folder,
        NAMES["single"]: single,
        NAMES["lora"]: write_kohya(lora, lora.captions, out / "lora" / "striped_lora_xl.safetensors",
                                   "demo striped lora (SDXL-style)", family="demo_sdxl"),
        NAMES["ti"]: write_sdxl_embedding(emb, out / "embeddings" / "checker_xl.safetensors",
                                            "checker"),
    }


def load_xl_pipeline(folder: Path):
    """The SDXL-style demo's diffusers folder as a float32 StableDiffusionXLPipeline."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder), dtype=torch.float32,
                                                     add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextmanager
def lab_lora_applied(pipe, file: Path, strength: float = 1.0) -> Iterator[object]:
    """The pipeline with a LoRA put on by the lab's own loader (kohya SDXL names); removed after."""
    from labkit.lora import applying as lora_apply
    handle = lora_apply.apply(pipe, file, strength)
    try:
        yield pipe
    finally:
        lora_apply.remove(pipe, handle)


@contextmanager
def sdxl_embedding_loaded(pipe, file: Path, token: str) -> Iterator[object]:
    """The pipeline with an SDXL textual inversion loaded into both encoders; unloaded after."""
    vectors = load_file(str(file))
    pairs = ((vectors["clip_l"], pipe.text_encoder, pipe.tokenizer),
             (vectors["clip_g"], pipe.text_encoder_2, pipe.tokenizer_2))
    for vec, te, tok in pairs:
        pipe.load_textual_inversion(vec, token=token, text_encoder=te, tokenizer=tok)
    try:
        yield pipe
    finally:
        for _vec, te, tok in pairs:
            pipe.unload_textual_inversion(token, tokenizer=tok, text_encoder=te)


def measure_xl(paths: dict[str, Path], png: Path, steps: int = 20) -> dict:
    """Colour accuracy, the LoRA's and the TI's effect, measured on the exported files; saves a
    grid: base prompts, LoRA off/on, TI off/on."""
    from PIL import Image

    pipe = load_xl_pipeline(paths[NAMES["folder"]])
    figures: dict = {"base": base_quality(pipe, steps=steps),
                     "word_robustness": word_robustness(pipe, steps=steps),
                     "quickstart": quickstart_scores(paths[NAMES["folder"]])}
    prompts, colours, seeds = colour_prompts(1)
    striped = [f"{p}, striped" for p in prompts]
    ti = [f"{p}, {TI_TOKEN}" for p in prompts]
    plain_images = generate(pipe, prompts, seeds, steps)
    lora_off = generate(pipe, striped, seeds, steps)
    curve = []
    for strength in STRENGTHS:
        with lab_lora_applied(pipe, paths[NAMES["lora"]], strength) as lp:
            curve.append(generate(lp, striped, seeds, steps))
    lora_on = curve[-1]
    with sdxl_embedding_loaded(pipe, paths[NAMES["ti"]], TI_TOKEN) as tp:
        ti_on = generate(tp, ti, seeds, steps)
    figures["lora_effect"] = {"without": style_score(lora_off, "striped"),
                              "with": style_score(lora_on, "striped"),
                              "colour_accuracy_with": colour_accuracy(lora_on, colours),
                              "strengths": list(STRENGTHS),
                              "energy": [style_score(images, "striped") for images in curve]}
    figures["ti_effect"] = {"without_token": style_score(plain_images, "checker"),
                            "with_token": style_score(ti_on, "checker")}
    rows = [plain_images[:12], plain_images[12:], lora_off[:6] + lora_on[:6],
            plain_images[:6] + ti_on[:6]]
    png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(rows)).save(png)
    return figures


def build_xl(out: Path, workdir: Path, recipe: XLRecipe, progress: bool = True,
             sample_png: Path | None = None) -> dict:
    """Run the SDXL-style recipe (resuming where a previous run stopped), export every file into
    `out`, measure them and add them to out/zoo.json; returns the figures."""
    world = train_base_xl(recipe, workdir, progress)
    lora = train_adapter(world, XL_LORA, recipe.stage(workdir, XL_LORA.name,
                                                recipe.adapter_steps, recipe.adapter_lr,
                                                progress), recipe.adapter_pool, recipe.adapter_batch)
    emb = train_embedding(world, recipe.stage(workdir, "ti_xl", recipe.ti_steps, recipe.ti_lr,
                                        progress), recipe.adapter_pool, recipe.adapter_batch)
    paths = export_xl(world, lora, emb, out)
    figures = measure_xl(paths, sample_png or workdir / "samples_xl.png", recipe.eval_steps)
    figures.update(world.figures, lora=summary(lora.stage), ti=summary(emb.stage))
    (paths[NAMES["folder"]] / "README.md").write_text(xl_model_card(figures, recipe),
                                                      encoding="utf-8")
    write_manifest(out, paths)
    (workdir / "figures_xl.json").write_text(json.dumps(figures, indent=2))
    return figures
