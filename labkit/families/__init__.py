"""Families: SD1, SD2, SDXL, SD3 and Flux side by side: their parts, widths, layouts and fit."""

from __future__ import annotations

from labkit.families.compare import compare_table, verdict
from labkit.families.tables import (
    conditioning,
    conditioning_tensors,
    conditioning_widths,
    family_parts,
    family_table,
    family_tables,
    key_table,
    layout_prefixes,
    lora_layout,
    parts,
    unet_levels,
)

__all__ = ["compare_table", "conditioning", "conditioning_tensors", "conditioning_widths",
           "family_parts", "family_table", "family_tables", "key_table", "layout_prefixes",
           "lora_layout", "parts", "unet_levels", "verdict"]
