"""Families: SD1, SD2, SDXL, SD3 and Flux side by side: their parts, widths, layouts and fit."""

from __future__ import annotations

from labkit.families.compare import compare_table, verdict
from labkit.families.tables import family_table, key_table, parts

__all__ = ["compare_table", "family_table", "key_table", "parts", "verdict"]
