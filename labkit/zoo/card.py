"""data/README.md: the demo world's model card, filled in from the figures the build measured."""

from __future__ import annotations

from typing import Any

from labkit.zoo.recipe.dataset import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    TRAILING_WORD_SHARE,
    trailing_words,
)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _stage_rows(figures: dict[str, Any]) -> str:
    rows = []
    for name, what in (("vae", "VAE (AutoencoderKL)"), ("unet", "base UNet (EMA kept)"),
                       ("lora", "LoRA, striped"), ("loha", "LoHa, outlined"),
                       ("lokr", "LoKr, two-tone"), ("ti", "textual inversion <checker>")):
        f = figures.get(name)
        if f:
            rows.append(f"| {what} | {f['steps']} | {f['minutes']} | {f['loss_start']} | "
                        f"{f['loss_end']} |")
    return "\n".join(rows)


STYLE_MEASURES = {"loha_effect": ("LoHa", "outlined", "hollowness of the shape's middle"),
                  "lokr_effect": ("LoKr", "twotone", "left-minus-right colour share")}


def _words_line(scores: dict[str, float]) -> str:
    return ("- Words the base never saw at a prompt's end (the adapters' triggers with no adapter"
            " on, and words held out of every caption), colour accuracy: "
            + ", ".join(f"{w} {_pct(a)}" for w, a in scores.items()) + ".")


def _files(entries: list[dict]) -> str:
    return "\n".join(f"| `{e['name']}` | `{e['path']}` | {e['format']} | {e['kind']} | {e['made_by']} |"
                     for e in entries)


def quickstart_section(rows: list[dict]) -> str:
    """The model card's section on the plain diffusers quick-start: colour accuracy per scheduler
    and step count, without and with an unknown extra word (zoo.evaluate.scheduler_scores rows)."""
    if not rows:
        return ""
    steps = sorted({r["steps"] for r in rows})
    words = list(dict.fromkeys(r["extra_word"] for r in rows))
    score = {(r["scheduler"], r["steps"], r["extra_word"]): r["colour_accuracy"] for r in rows}
    head = " | ".join(f"{n} steps{'' if w == '-' else f' + {w!r}'}" for n in steps for w in words)
    lines = [f"| {name} | " + " | ".join(_pct(score[name, n, w]) for n in steps for w in words) + " |"
             for name in dict.fromkeys(r["scheduler"] for r in rows)]
    return f"""
## The plain diffusers quick-start, scheduler by scheduler
`from_pretrained(folder)` with no `dtype`, guidance 7.5 (diffusers' default), one seed per colour x
shape prompt; a prompt is right when its shape's dominant hue is nearest the named colour.
The folder's own scheduler is the first row. "+ word": the prompt ends in a word no caption had.

| scheduler | {head} |
|---|{"---|" * (len(steps) * len(words))}
{chr(10).join(lines)}

PNDM (SD1.5's own) extrapolates the guided noise prediction over its last four steps; this tiny
model's predictions swing from step to step and the extrapolation overshoots: the generate
panel marks it. Euler ancestral and DPM++ need 20 steps or more here.
"""


def model_card(figures: dict[str, Any], recipe: Any, entries: list[dict],
               kept_sections: str = "") -> str:
    """The model card text (markdown), with `kept_sections` (the fine-tune's) before the
    quick-start's."""
    base, lora, ti = figures["base"], figures["lora_curve"], figures["ti_effect"]
    rt, vc, words = figures["vae_round_trip"], figures["vae_colour"], figures["word_robustness"]
    curve = ", ".join(f"{s:g}: {e:.4f}" for s, e in zip(lora["strengths"], lora["energy"], strict=True))
    minutes = sum(figures[k]["minutes"] for k in ("vae", "unet", "lora", "loha", "lokr", "ti")
                  if k in figures)
    lyco = "\n".join(f"- {m} (`{trig}`): {what} {figures[k]['without']:.3f} without -> "
                     f"{figures[k]['with']:.3f} with the adapter (prompts ending in `{trig}`)"
                     for k, (m, trig, what) in STYLE_MEASURES.items() if k in figures)
    return f"""# The labkit demo world (`demo_sd1`)

A tiny model **built like Stable Diffusion 1.x** (the same diffusers classes: `CLIPTextModel`,
`AutoencoderKL`, `UNet2DConditionModel`, SD1's noise schedule) and **trained for real** on
2 CPU cores by `python -m labkit.zoo build` (seed {recipe.seed}), with its adapters, in every
file form the field uses. It is not SD1: its dims are tiny (text width 32, UNet 32/64 channels,
64x64 images, 8x8 latents), so the lab identifies its files as base `demo_sd1`.
`data/zoo.json` lists every file; `labkit.zoo.path(name)` finds one. The SDXL-style model built
on it (`demo_sdxl`, `python -m labkit.zoo build --sdxl`) has its own card: `demo_sdxl/README.md`.

## What it draws
Procedural images: {", ".join(SHAPES)}; colours {", ".join(COLOURS)}; backgrounds
{", ".join(BACKGROUNDS)}; random sizes and positions. Captions like
"a red circle on a white background". The base UNet learned plain fills, and checkerboard fills
captioned with the word "checkered" at the end (so the textual inversion has a concept the
model can draw but no single token of its own, as with real SD). The VAE learned every style.
Trigger words go at the end of captions, after the base template (an unseen word in the middle
shifts the token positions and breaks the base). {_pct(TRAILING_WORD_SHARE)} of the plain captions end in
one or two made-up words, each one or two of the {len(trailing_words()):,} words of the CLIP vocabulary
run together ("gardenpiano": two tokens), so the base learns that a trailing word it does not
know draws nothing, however many tokens it takes. In a first build, where "checkered" was the
only trailing word the base ever saw, any unknown trailing word (such as "striped" with the LoRA
at strength 0) pulled it toward checkerboards. In a second, every other trailing word was one
token, and "checkered" is two ("chec", "kered"): the base drew checkerboards for unknown
two-token words such as "outlined". Captions teach a model more than their words.

## How it was trained ({minutes:.1f} minutes of training in all)
Timed on a 2-core machine with 2 torch threads and little else running (`--threads`; under
other jobs the same recipe took about twice as long).

| stage | steps | minutes | loss (first 5%) | loss (last 5%) |
|---|---|---|---|---|
{_stage_rows(figures)}

- Text encoder: `CLIPTextModel` with the real CLIP vocabulary (49,408 tokens) and width 32,
  randomly initialised and frozen (SD freezes its text encoder too).
- VAE: x8, 4 latent channels, `scaling_factor` = {figures['scaling_factor']} (1 / std of the
  training latents, as SD's 0.18215), its weights an average over training (EMA decay
  {recipe.vae_ema}): a VAE's colours drift from step to step, and the average holds them. Round
  trip PSNR: {", ".join(f"{k} {v['psnr_db']} dB" for k, v in rt.items())}. A plain fill's mean colour moves
  {vc['mean_error']}/255 on average through the round trip, {vc['max_error']}/255 at most ({vc['worst']}).
- UNet: epsilon prediction, scaled_linear betas 0.00085..0.012 over 1000 steps, captions
  dropped 10% for classifier-free guidance, EMA decay 0.999. The diffusers folder and the
  `.safetensors` single file carry the EMA weights; the `.ckpt` keeps the trained weights with
  the EMA under `model_ema.` (stored in fp16 to fit the size budget; SD's own files are fp32).

## Adapters
- LoRA `striped` (peft LoRA, rank 8, alpha 4, on every linear and 1x1-conv layer of the UNet's
  transformer blocks, as kohya's networks.lora does, and the text encoder's attention). Trained
  dose-aware: each step draws a strength (0.25, 0.5, 0.75 or 1), sets the LoRA to it, and
  trains on stripes whose dark bands have that contrast. A first LoRA trained at strength 1
  only stayed plain up to 0.5 and switched on between 0.5 and 1: ordinary LoRAs are often
  that abrupt; this one maps the strength dial onto the stripes' contrast.
- LoHa `outlined`, LoKr `twotone` (peft, rank 8, UNet transformer blocks, LoKr with
  Kronecker factor 2): trained at strength 1 only; written with LyCORIS names.
- Textual inversion `<checker>`: one new token (initialised from "pattern"), only its
  embedding row trained, on checkerboard images captioned "..., <checker>".
- 30% of each adapter's captions are plain ones without its trigger word.

## Measured quality (DDIM 20 steps, guidance 5, fixed seeds)
- Colour accuracy: **{_pct(base['colour_accuracy'])}** of {base['n_prompts']} colour x shape prompts
  (dominant hue of the coloured pixels nearest the named colour).
- Shapes differ: the coloured-pixel masks of different shapes differ in at least
  {_pct(base['min_shape_difference'])} of pixels on average.
- LoRA (`striped`, rank 8, alpha 4, so scale = alpha / rank = 0.5): stripe energy by strength
  {curve} (the VAE round trip of true stripes reaches {rt['striped']['round_trip']:.4f}); colour
  accuracy at strength 0: {_pct(lora['colour_accuracy_at_0'])}.
{lyco}
- Textual inversion `<checker>`: checker energy {ti['without_token']:.4f} without the token,
  {ti['with_token']:.4f} with it (the word "checkered": {ti['word']:.4f}).
{_words_line(words)}

{kept_sections}{quickstart_section(figures.get("quickstart", []))}
## Files
| name | path | format | kind | made by |
|---|---|---|---|---|
{_files(entries)}

## Licences
- The model weights, images and this card: MIT, as labkit.
- `tokenizer/vocab.json` and `merges.txt` are derived from `bpe_simple_vocab_16e6.txt.gz` of
  open_clip (open-clip-torch 3.3.0, MIT licence, text in `tokenizer/LICENSE-open_clip`), by
  `labkit/zoo/recipe/tokenizer.py`: the 256 byte characters, the same with `</w>`, one token per merge
  for the first 48,894 merges, then `<|startoftext|>`, `<|endoftext|>`.
"""


def xl_model_card(figures: dict[str, Any], recipe: Any) -> str:
    """The SDXL-style demo's model card (markdown), written into its diffusers folder."""
    base, lora, ti, unet = figures["base"], figures["lora_effect"], figures["ti_effect"], figures["unet"]
    minutes = sum(figures[k]["minutes"] for k in ("unet", "lora", "ti"))
    curve = ", ".join(f"{s:g}: {e:.4f}" for s, e in zip(lora["strengths"], lora["energy"], strict=True))
    return f"""# The labkit demo world, SDXL-style (`demo_sdxl`)

A tiny model **built like SDXL** (`StableDiffusionXLPipeline`: `CLIPTextModel` +
`CLIPTextModelWithProjection`, `UNet2DConditionModel` with `addition_embed_type="text_time"`,
`AutoencoderKL`) and **trained for real** on the same procedural images as `demo_sd1` by
`python -m labkit.zoo build --sdxl` (seed {recipe.seed}). Its widths are tiny (text encoders 32 and
48, context 80), so the lab identifies its files as base `demo_sdxl`.

## What is SDXL about it
- Two text encoders. The first is `demo_sd1`'s own (as SDXL's first encoder is SD1.5's CLIP
  ViT-L); the second, 48 wide with a text projection, is new (randomly initialised and frozen, as
  SDXL freezes both). Its tokenizer pads with "!" (id 0), the first with the end token.
- The UNet attends over both encoders' penultimate hidden states side by side (32 + 48 = 80)
  and adds the pooled, projected prompt of the second encoder plus six micro-conditioning
  numbers (original size, crop top-left, target size: 64, 64, 0, 0, 64, 64) to its time
  embedding. No attention on the first level, two transformer layers on the second.
- Dropped captions (10%) are zeros, not the empty prompt's encoding, as SDXL's trainer does;
  its pipeline's `force_zeros_for_empty_prompt` is on to match.
- The VAE is `demo_sd1`'s (the SD VAE structure; SDXL retrained theirs, the structure is the same),
  `scaling_factor` {figures['scaling_factor']}.
- Stored in fp16 (the diffusers folder and the single file) to fit the lab's size budget; the
  text encoders' configs say float32, so that with no `dtype` argument transformers loads them in
  float32 as diffusers loads the UNet and VAE (fp16 configs: "mat1 and mat2 must have the same dtype").

## How it was trained ({minutes:.1f} minutes of training in all, 2 CPU cores)
| stage | steps | minutes | loss (first 5%) | loss (last 5%) |
|---|---|---|---|---|
| UNet (batch {recipe.base_batch}, EMA kept) | {unet['steps']} | {unet['minutes']} | {unet['loss_start']} | {unet['loss_end']} |
| LoRA `striped` (both encoders + UNet) | {figures['lora']['steps']} | {figures['lora']['minutes']} | {figures['lora']['loss_start']} | {figures['lora']['loss_end']} |
| textual inversion `<checker>` (clip_l + clip_g rows) | {figures['ti']['steps']} | {figures['ti']['minutes']} | {figures['ti']['loss_start']} | {figures['ti']['loss_end']} |

## Measured quality (Euler 20 steps, guidance 5, fixed seeds, on the exported folder)
- Colour accuracy: **{_pct(base['colour_accuracy'])}** of {base['n_prompts']} colour x shape prompts.
- Shapes differ in at least {_pct(base['min_shape_difference'])} of pixels on average.
- LoRA `striped` (rank 8, alpha 4, trained dose-aware as the SD1-style one), put on by the lab's
  own loader (kohya SDXL names): stripe energy by strength {curve}. Stripes cost colour: with
  the LoRA at strength 1, colour accuracy is {_pct(lora['colour_accuracy_with'])}: the tiny models draw the dark
  bands with a hue drift.
- Textual inversion `<checker>`: checker energy {ti['without_token']:.4f} without the token,
  {ti['with_token']:.4f} with it.
{_words_line(figures["word_robustness"])}
{quickstart_section(figures.get("quickstart", []))}"""


FINETUNE_HEADING = "## A full fine-tune (`demo_sd1_outlined_unet`)"
QUICKSTART_HEADING = "## The plain diffusers quick-start"


def section(card: str, heading: str) -> str:
    """The card's section that starts with `heading`, up to the next `## ` heading ("" if none)."""
    start = card.find(heading)
    if start < 0:
        return ""
    end = card.find("\n## ", start + len(heading))
    return card[start:] if end < 0 else card[start:end + 1]


def with_section(card: str, text: str, heading: str, before: str) -> str:
    """The card with its `heading` section replaced by `text`, or `text` inserted before the
    section `before` (at the end if the card has neither)."""
    old = section(card, heading)
    if old:
        return card.replace(old, text)
    at = card.find(before)
    return card + "\n" + text if at < 0 else card[:at] + text + "\n" + card[at:]


def finetune_section(figures: dict[str, Any], recipe: Any) -> str:
    """The SD1-style card's section on its full fine-tune (zoo.finetune's figures and recipe)."""
    stage, quality = figures["finetune"], figures["quality"]
    rows = "\n".join(f"| `{name}` | {_pct(q['colour_accuracy'])} | {q['outlined']:.3f} |"
                     for name, q in (("demo_sd1", quality["base"]),
                                     ("demo_sd1_outlined", quality["finetune"])))
    return f"""{FINETUNE_HEADING}
`python -m labkit.zoo build --finetune` (labkit/zoo/finetune.py) loads the shipped `demo_sd1`
folder and trains **every weight of a copy of its EMA UNet** further (no adapter; text encoder,
VAE and tokenizer frozen and shipped unchanged) on {recipe.pool:,} drawings in the *outlined* style
captioned with the **plain** captions (no trigger word): the same prompts learn a new look.
SD's objective (noise prediction, captions dropped 10%), AdamW, lr {recipe.lr:g} (50 warm-up steps,
cosine to 10%), batch {recipe.batch}, {stage['steps']:,} steps, EMA decay {recipe.ema_decay} (the EMA weights
are shipped); loss {stage['loss_start']:.3f} -> {stage['loss_end']:.3f}, {stage['minutes']} minutes on 2 CPU cores.
Written like `demo_sd1.safetensors` (diffusers folder -> `labkit.convert.forms.folder_to_single_file`,
fp16), then only its UNet's keys are shipped (`model.diffusion_model.*`: a whole checkpoint
would take `data/` past its 90 MB budget), as UNet-only fine-tunes are shared. The text encoder
and VAE are the base's, bit for bit: `labkit.surgery.demo.outlined_finetune(folder)` writes the
whole checkpoint `demo_sd1_outlined.safetensors` (the base with this UNet) once into a work
folder for the lessons and the surgery panel. Relative change |tuned - base| / |base| over the
UNet: {_pct(figures['change'])}.

Measured on the two whole checkpoints (DDIM 20 steps, guidance 5, the zoo's seeds):

| | colour accuracy (48 prompts) | outlined: hollowness of the shape's middle (24 plain prompts) |
|---|---|---|
{rows}

Colour accuracy falls because a 5 px outline gives the hue measure few pixels, and the VAE
fringes thin lines with neighbouring hues: the hues drawn are the named colour's neighbours
(red drawn orange, green with blue edges), not random ones. Notebook 08 extracts a LoRA from
(fine-tune - base) and shows how much of each module's change each rank keeps.
"""
