"""Model surgery: checkpoints merged, LoRAs baked in, extracted, resized and merged, each step
streamed tensor by tensor, written atomically and recorded in the output's metadata.

`merge` (labkit.surgery.merging: weighted sum, add difference, per-block alphas), `bake`
(labkit.surgery.baking), `extract_lora` (labkit.surgery.extracting), `resize_lora` and
`merge_lora` (labkit.surgery.resizing); the SVD maths lives in labkit.surgery.lowrank, the
streamed reads and writes in labkit.surgery.tensorio, the record in labkit.surgery.recipe.
"""

from __future__ import annotations

from labkit.surgery.baking import bake
from labkit.surgery.extracting import extract_lora
from labkit.surgery.merging import merge
from labkit.surgery.recipe import recipe_of
from labkit.surgery.resizing import merge_lora, resize_lora

__all__ = ["bake", "extract_lora", "merge", "merge_lora", "recipe_of", "resize_lora"]
