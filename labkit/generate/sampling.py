"""Making images with a loaded pipeline: schedulers by name, seeded generation, previews of the
denoising loop, and the small teaching helpers (parts, latents, strips, comparisons) as data."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import diffusers
import pandas as pd
import torch
from PIL import Image

from labkit.errors import LabkitError

# name -> (diffusers scheduler class, settings over the pipeline's own schedule). DDIM's own
# defaults clip the predicted x0 to [-1, 1] and end at alpha 1: right for pixel models, wrong for
# SD's latents. SD1 configs (PNDM) say both off, SDXL's (Euler) say nothing, so they are set here.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}),
    "dpm++": ("DPMSolverMultistepScheduler",
              {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
}
# Schedulers that fail on the demo models, with the reason the generate panel shows beside their
# name (zoo.evaluate.scheduler_scores measures every one; data/README.md has the figures).
DEMO_CAVEATS: dict[str, str] = {
    "pndm": "SD1.5's own; overshoots on the demo models above guidance 3",
}
PREVIEW_PX = 128  # longest side of a preview

# Each pipeline's scheduler config as loaded: every swap starts from it, so one scheduler's
# settings (Karras sigmas, ...) never leak into the next.
_BASE_SCHEDULER: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

Size = int | tuple[int, int] | None


def set_scheduler(pipe: diffusers.DiffusionPipeline, name: str) -> None:
    """Swap the pipeline's scheduler for one named in SCHEDULERS, keeping its noise schedule."""
    if name not in SCHEDULERS:
        raise LabkitError(f"unknown scheduler {name!r}.", hint=f"Use one of {sorted(SCHEDULERS)}.")
    base = _BASE_SCHEDULER.setdefault(pipe, pipe.scheduler.config)
    cls_name, settings = SCHEDULERS[name]
    pipe.scheduler = getattr(diffusers, cls_name).from_config(base, **settings)


def scheduler_options() -> list[tuple[str, str]]:
    """(label, name) pairs for a scheduler menu: each name, with its caveat on the demo models."""
    return [(f"{name} ({DEMO_CAVEATS[name]})" if name in DEMO_CAVEATS else name, name)
            for name in SCHEDULERS]


def native_size(pipe: diffusers.DiffusionPipeline) -> tuple[int, int]:
    """(height, width) the model was trained at: the UNet's sample size times the VAE's factor."""
    side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    return side, side


def _hw(pipe: diffusers.DiffusionPipeline, size: Size) -> tuple[int, int]:
    if size is None:
        return native_size(pipe)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _device(pipe: diffusers.DiffusionPipeline) -> torch.device:
    return getattr(pipe, "_execution_device", None) or pipe.device


def _clean_latents(scheduler: Any, latents: torch.Tensor) -> torch.Tensor:
    """Latents in the variance-preserving scale the VAE expects: Euler-type schedulers keep
    x0 + sigma * noise (init_noise_sigma > 1), which is divided by sqrt(sigma^2 + 1)."""
    if float(scheduler.init_noise_sigma) > 1 and getattr(scheduler, "step_index", None) is not None:
        sigma = scheduler.sigmas[min(scheduler.step_index, len(scheduler.sigmas) - 1)]
        return latents / (float(sigma) ** 2 + 1) ** 0.5
    return latents


def decode_latents(pipe: diffusers.DiffusionPipeline, latents: torch.Tensor) -> Image.Image:
    """The VAE's image of a latent (the first of a batch): undo the scaling, decode, to PIL."""
    vae = pipe.vae
    z = latents if latents.ndim == 4 else latents[None]
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:  # SDXL's VAE overflows in fp16, as diffusers' own pipeline knows
        vae.to(torch.float32)
    try:
        z = z[:1].to(_device(pipe), vae.dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            z = z + vae.config.shift_factor
        with torch.no_grad():
            x = vae.decode(z).sample
    finally:
        if upcast:
            vae.to(torch.float16)
    return pipe.image_processor.postprocess(x.float(), output_type="pil")[0]


def encode_image(pipe: diffusers.DiffusionPipeline, image: Image.Image,
                 size: Size = None) -> torch.Tensor:
    """The scaled latent of an image (the mean of the VAE's distribution), shape [1, C, h, w]."""
    height, width = _hw(pipe, size)
    x = pipe.image_processor.preprocess(image.convert("RGB"), height=height, width=width)
    vae = pipe.vae
    with torch.no_grad():
        mean = vae.encode(x.to(_device(pipe), vae.dtype)).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (mean - shift) * vae.config.scaling_factor


def latent_channels(latents: torch.Tensor, scale: int = 8) -> list[Image.Image]:
    """Each channel of a latent (the first of a batch) as a grey image, stretched to 0..255."""
    z = (latents if latents.ndim == 3 else latents[0]).detach().float().cpu()
    images = []
    for channel in z:
        lo, hi = channel.min(), channel.max()
        grey = ((channel - lo) / (hi - lo + 1e-8) * 255).round().to(torch.uint8).numpy()
        img = Image.fromarray(grey, mode="L")
        images.append(img.resize((img.width * scale, img.height * scale), Image.NEAREST))
    return images


def _thumbnail(image: Image.Image) -> Image.Image:
    small = image.copy()
    small.thumbnail((PREVIEW_PX, PREVIEW_PX))
    return small


def _step_callback(on_step: Callable[[int, int], None] | None, preview_every: int,
                   on_preview: Callable[[int, Image.Image], None] | None) -> Callable:
    def callback(pipe: Any, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        done, total = i + 1, pipe.num_timesteps
        if on_step is not None:
            on_step(done, total)
        if on_preview is not None and preview_every and done % preview_every == 0 and done < total:
            latents = _clean_latents(pipe.scheduler, tensors["latents"])
            on_preview(done, _thumbnail(decode_latents(pipe, latents)))
        return tensors

    return callback


def _second_prompt(pipe: diffusers.DiffusionPipeline, prompt_2: str) -> dict[str, str]:
    """The pipeline's `prompt_2` argument, or {} when none is given. Raises LabkitError for a
    pipeline with one text encoder."""
    if not prompt_2.strip():
        return {}
    if getattr(pipe, "text_encoder_2", None) is None:
        raise LabkitError("a second prompt was given, but this model has one text encoder.",
                          hint="The second prompt is for SDXL-style models (their second text "
                               "encoder); leave it empty for SD1/SD2-style models.")
    return {"prompt_2": prompt_2}


def _micro_conditions(pipe: diffusers.DiffusionPipeline, original_size: tuple[int, int] | None,
                      crop: tuple[int, int] | None) -> dict[str, tuple[int, int]]:
    """SDXL's size/crop arguments, or {} when none is given. Raises LabkitError for a pipeline
    whose UNet takes no micro-conditioning."""
    given = {"original_size": original_size, "crops_coords_top_left": crop}
    given = {k: tuple(int(v) for v in value) for k, value in given.items() if value is not None}
    if given and getattr(pipe.unet.config, "addition_embed_type", None) != "text_time":
        raise LabkitError("an original size or crop was given, but this model takes no size/crop "
                          "conditioning.", hint="They are SDXL's micro-conditioning; leave them "
                                                "out for SD1/SD2-style models.")
    return given


def generate(pipe: diffusers.DiffusionPipeline, prompt: str, negative_prompt: str = "",
             seed: int = 0, steps: int = 20, guidance: float = 7.5, size: Size = None,
             scheduler: str = "euler", n_images: int = 1, preview_every: int = 0,
             on_preview: Callable[[int, Image.Image], None] | None = None,
             on_step: Callable[[int, int], None] | None = None,
             progress: bool = True, prompt_2: str = "",
             original_size: tuple[int, int] | None = None,
             crop: tuple[int, int] | None = None) -> list[Image.Image]:
    """Images for a prompt, the same for the same seed on the same device.

    size: None (the model's native size), a side, or (height, width). Every `preview_every`
    steps the current latents are decoded and passed, small, to on_preview(step, image);
    on_step(step, total) is called after every step. `prompt_2` goes to an SDXL-style
    pipeline's second text encoder (empty: the same prompt for both); `original_size` and
    `crop` (top-left, y x) are its size/crop micro-conditioning (None: the image size,
    uncropped). Raises LabkitError (unknown scheduler, out of memory, a prompt_2 or a size/crop
    for a pipeline that takes none).
    """
    second = {**_second_prompt(pipe, prompt_2), **_micro_conditions(pipe, original_size, crop)}
    set_scheduler(pipe, scheduler)
    height, width = _hw(pipe, size)
    generator = torch.Generator(device=_device(pipe)).manual_seed(int(seed))
    pipe.set_progress_bar_config(disable=not progress)
    try:
        out = pipe(prompt=prompt, negative_prompt=negative_prompt or None,
                   num_inference_steps=int(steps), guidance_scale=float(guidance), height=height,
                   width=width, num_images_per_prompt=int(n_images), generator=generator,
                   callback_on_step_end=_step_callback(on_step, preview_every, on_preview),
                   callback_on_step_end_tensor_inputs=["latents"], **second)
    except torch.OutOfMemoryError as e:
        raise LabkitError(
            f"out of memory making {n_images} image(s) of {width}x{height}.",
            hint="Use a smaller size or fewer images, or reload the model so the lab can offload "
                 "parts to the CPU.") from e
    return list(out.images)


def denoise_steps(pipe: diffusers.DiffusionPipeline, prompt: str, seed: int = 0,
                  steps: int = 20, every: int = 4, scheduler: str = "euler",
                  size: Size = None) -> list[Image.Image]:
    """The image emerging from noise: a preview every `every` steps, then the final image."""
    strip: list[Image.Image] = []
    final = generate(pipe, prompt, seed=seed, steps=steps, scheduler=scheduler, size=size,
                     preview_every=every, on_preview=lambda _step, img: strip.append(img),
                     progress=False)
    return [*strip, _thumbnail(final[0])]


def compare_schedulers(pipe: diffusers.DiffusionPipeline, prompt: str, seed: int = 0,
                       names: Sequence[str] = tuple(SCHEDULERS), steps: int = 20,
                       size: Size = None) -> dict[str, Image.Image]:
    """One image per scheduler, same prompt, seed and steps."""
    return {name: generate(pipe, prompt, seed=seed, steps=steps, scheduler=name, size=size,
                           progress=False)[0] for name in names}


def components_table(pipe: diffusers.DiffusionPipeline) -> pd.DataFrame:
    """The pipeline's parts: part, class, parameters, dtype, device (empty for non-networks)."""
    rows = []
    for name, part in pipe.components.items():
        if part is None:
            continue
        if isinstance(part, torch.nn.Module):
            first = next(part.parameters(), None)
            rows.append((name, type(part).__name__, sum(p.numel() for p in part.parameters()),
                         str(first.dtype).removeprefix("torch.") if first is not None else "",
                         str(first.device) if first is not None else ""))
        else:
            rows.append((name, type(part).__name__, 0, "", ""))
    return pd.DataFrame(rows, columns=["part", "class", "parameters", "dtype", "device"])
