"""The LoRA lab: what a LoRA-like file is made of, and its effect at several strengths.

`read` gives the anatomy table (labkit.lora.reading), `apply` / `remove` / `set_strength` put a file
on a pipeline and take it off (labkit.lora.applying), `sweep` and `xyz_grid` make images at several
strengths with the same noise (labkit.lora.sweeping); the key tables live in labkit.lora.keys (every
writer's key style is read through labkit.identify.adapter_styles, and labkit.lora.writing writes one),
Flux and SD3 module maps in labkit.lora.transformer_maps, the weight-change math in labkit.lora.anatomy.
"""

from __future__ import annotations

from labkit.lora.anatomy import delta, entropy_rank, singular_values, threshold_rank
from labkit.lora.applying import Handle, applied, apply, block_names, remove, set_strength
from labkit.lora.reading import open_adapter, read, unmatched
from labkit.lora.sweeping import Job, render, sweep, xyz_grid

__all__ = [
    "Handle", "Job", "applied", "apply", "block_names", "delta", "entropy_rank", "open_adapter",
    "read", "remove", "render", "set_strength", "singular_values", "sweep", "threshold_rank",
    "unmatched", "xyz_grid",
]
