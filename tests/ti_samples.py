"""Textual inversion files in every container form, and tiny pipelines to load them into."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.tiny_models import TEXT, TEXT_2, save_tiny

SD1_WIDTH = TEXT["hidden_size"]
SDXL_WIDTHS = (TEXT["hidden_size"], TEXT_2["hidden_size"])


def write_forms(folder: Path, vectors: torch.Tensor, name: str = "checker",
                step: int = 400) -> dict[str, Path]:
    """One embedding [n, D] as A1111 .pt, kohya emb_params and diffusers {token: vector}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"a1111": folder / f"{name}.pt", "kohya": folder / f"{name}.safetensors",
             "diffusers": folder / f"{name}_learned_embeds.safetensors"}
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": name,
                "step": step, "sd_checkpoint": None, "sd_checkpoint_name": "test"},
               paths["a1111"])
    save_file({"emb_params": vectors.contiguous()}, paths["kohya"],
              {"modelspec.title": name, "ss_steps": str(step)})
    save_file({f"<{name}>": vectors[0].contiguous()}, paths["diffusers"])
    return paths


def write_sdxl(path: Path, clip_l: torch.Tensor, clip_g: torch.Tensor) -> Path:
    """An SDXL embedding: clip_l for the first encoder, clip_g for the second."""
    save_file({"clip_l": clip_l.contiguous(), "clip_g": clip_g.contiguous()}, path)
    return path


def tiny_pipeline(folder: Path, family: str):
    """A tiny random pipeline ("sd1" or "sdxl") with a byte-level tokenizer, loaded on the CPU."""
    import diffusers

    save_tiny(folder, family)
    cls = (diffusers.StableDiffusionPipeline if family == "sd1"
           else diffusers.StableDiffusionXLPipeline)
    extra = {"requires_safety_checker": False} if family == "sd1" else {}
    pipe = cls.from_pretrained(str(folder), local_files_only=True, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe
