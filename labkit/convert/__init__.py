"""Convert: between file forms (pickle -> safetensors, single file <-> diffusers folder, fp16,
EMA strip), always to a temporary file renamed into place, never over the source.
"""

from __future__ import annotations

from labkit.convert.forms import (
    atomic_folder,
    ckpt_to_safetensors,
    folder_to_single_file,
    single_file_to_folder,
    strip_ema,
    to_fp16,
)

__all__ = ["atomic_folder", "ckpt_to_safetensors", "folder_to_single_file",
           "single_file_to_folder", "strip_ema", "to_fp16"]
