"""The LoRA lab: what a LoRA-like file is made of, and its effect at several strengths.

`read` gives the anatomy table (labkit.lora_read), `apply` / `remove` / `set_strength` put a file
on a pipeline and take it off (labkit.lora_apply), `sweep` and `xyz_grid` make images at several
strengths with the same noise (labkit.lora_sweep); the key tables live in labkit.lora_keys and
the weight-change math in labkit.lora_math.
"""

from __future__ import annotations

from labkit.lora_apply import Handle, applied, apply, block_names, remove, set_strength
from labkit.lora_math import delta, entropy_rank, singular_values, threshold_rank
from labkit.lora_read import open_adapter, read, unmatched
from labkit.lora_sweep import Job, render, sweep, xyz_grid

__all__ = [
    "Handle", "Job", "applied", "apply", "block_names", "delta", "entropy_rank", "open_adapter",
    "read", "remove", "render", "set_strength", "singular_values", "sweep", "threshold_rank",
    "unmatched", "xyz_grid",
]
