"""Generate: load any checkpoint or folder into a diffusers pipeline offline, on the best device,
and sample images from it.
"""

from __future__ import annotations

from labkit.generate.device import DeviceChoice, pick_device
from labkit.generate.grids import image_grid, image_grid_figure
from labkit.generate.pipelines import load_pipeline
from labkit.generate.sampling import generate

__all__ = ["DeviceChoice", "generate", "image_grid", "image_grid_figure", "load_pipeline",
           "pick_device"]
