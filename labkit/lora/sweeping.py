"""Images at several LoRA strengths with the same seed and noise, and labelled XYZ grids of them.

The anchor is a loop: `set_adapters` at each strength, one image at a time. The lab's way runs
every (prompt, seed, strength) of a grid in one batch: the same starting noise per seed, and a
per-sample strength inside the batch (labkit.lora.applying.scale_per_sample), so one UNet pass per
step serves the whole row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from labkit.lora.applying import BlockWeights, Handle, apply, remove, set_strength

MAX_BATCH = 8  # samples per batched pass (the UNet sees twice as many under guidance)
GRID_CELL = 128  # grid cells are at least this many pixels wide (labels must fit)


@dataclass(frozen=True)
class Job:
    """One image to make: prompt, seed and LoRA strength."""

    prompt: str
    seed: int
    strength: float


def image_size(pipe: Any, size: int | None) -> int:
    """The side of the images: `size`, or the model's native size."""
    return int(size) if size else int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


def noise(pipe: Any, seed: int, side: int) -> torch.Tensor:
    """The starting latents [1, C, h, w] the pipeline itself would draw for `seed`."""
    from diffusers.utils.torch_utils import randn_tensor

    shape = (1, pipe.unet.config.in_channels, side // pipe.vae_scale_factor,
             side // pipe.vae_scale_factor)
    generator = torch.Generator(device=pipe.device).manual_seed(int(seed))
    return randn_tensor(shape, generator=generator, device=pipe.device, dtype=pipe.unet.dtype)


def _render(pipe: Any, jobs: Sequence[Job], steps: int, guidance: float, side: int) -> list[Image.Image]:
    latents = torch.cat([noise(pipe, j.seed, side) for j in jobs])
    out = pipe(prompt=[j.prompt for j in jobs], latents=latents, num_inference_steps=int(steps),
               guidance_scale=float(guidance), height=side, width=side)
    return list(out.images)


def render(pipe: Any, handle: Handle, jobs: Sequence[Job], steps: int = 20, guidance: float = 7.5,
           size: int | None = None, batched: bool = True,
           max_batch: int = MAX_BATCH) -> list[Image.Image]:
    """The images of `jobs` with the applied adapter `handle` at each job's strength: one
    batched pass per `max_batch` jobs, or (batched=False, the anchor) one pass per job."""
    side = image_size(pipe, size)
    images: list[Image.Image] = []
    keep = handle.strength
    try:
        if not batched:
            for job in jobs:
                set_strength(pipe, handle, job.strength)
                images += _render(pipe, [job], steps, guidance, side)
            return images
        for i in range(0, len(jobs), max_batch):
            chunk = jobs[i:i + max_batch]
            set_strength(pipe, handle, torch.tensor([j.strength for j in chunk]))
            images += _render(pipe, chunk, steps, guidance, side)
        return images
    finally:
        set_strength(pipe, handle, keep)


def sweep(pipe: Any, path: str | Path, strengths: Sequence[float], prompt: str, seed: int = 0,
          steps: int = 20, batched: bool = True, block_weights: BlockWeights = None,
          guidance: float = 7.5, size: int | None = None) -> list[Image.Image]:
    """One image per strength, all from the same seed and noise; the pipeline is left as it was.

    Raises what labkit.lora.applying raises (not a LoRA, truncated, another family).
    """
    handle = apply(pipe, path, 1.0, block_weights)
    try:
        jobs = [Job(prompt, seed, float(s)) for s in strengths]
        return render(pipe, handle, jobs, steps, guidance, size, batched)
    finally:
        remove(pipe, handle)


def _rows(prompts: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    return [(p, s) for p in prompts for s in seeds]


def xyz_grid(pipe: Any, paths: str | Path | Sequence[str | Path], strengths: Sequence[float],
             prompts: str | Sequence[str], seeds: int | Sequence[int] = 0, steps: int = 20,
             batched: bool = True, guidance: float = 7.5, size: int | None = None) -> Image.Image:
    """A labelled grid like A1111's XYZ plot: one row per (prompt, seed), one column per
    (LoRA, strength); several LoRAs sit side by side with the same prompts and seeds."""
    from labkit.generate.grids import image_grid

    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    rows = _rows(prompts, seeds)
    columns: list[list[Image.Image]] = []
    col_labels = []
    for path in paths:
        handle = apply(pipe, path, 1.0)
        try:
            jobs = [Job(p, s, float(x)) for p, s in rows for x in strengths]
            images = render(pipe, handle, jobs, steps, guidance, size, batched)
        finally:
            remove(pipe, handle)
        for c, x in enumerate(strengths):
            columns.append(images[c::len(strengths)])
            col_labels.append(f"{Path(path).stem} {x:g}" if len(paths) > 1 else f"{x:g}")
    cell = max(GRID_CELL, columns[0][0].width)
    cells = [columns[c][r].resize((cell, cell), Image.Resampling.NEAREST)
             for r in range(len(rows)) for c in range(len(columns))]
    row_labels = [f"{p} #{s}" for p, s in rows]  # whole: image_grid wraps them to fit
    return image_grid(cells, len(rows), len(columns), row_labels, col_labels)
