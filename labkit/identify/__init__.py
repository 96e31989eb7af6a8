"""Identify: what a tensor table is (kind) and for which model family (base), from names and shapes.

Rule tables, key layouts (original <-> diffusers names) and UNet block maps live here as data.
"""

from __future__ import annotations

from labkit.identify.identity import Identity, identify

__all__ = ["Identity", "identify"]
