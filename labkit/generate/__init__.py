"""Generate: load any checkpoint or folder into a diffusers pipeline offline, on the best device,
and sample images from it.
"""

from __future__ import annotations

from labkit.generate.device import DeviceChoice, pick_device
from labkit.generate.grids import image_grid, image_grid_figure
from labkit.generate.pipelines import config_for, demo_config, load_pipeline
from labkit.generate.sampling import (
    compare_schedulers,
    components_table,
    decode_latents,
    denoise_steps,
    encode_image,
    generate,
    latent_channels,
    native_size,
)

__all__ = ["DeviceChoice", "compare_schedulers", "components_table", "config_for",
           "decode_latents", "demo_config", "denoise_steps", "encode_image", "generate",
           "image_grid", "image_grid_figure", "latent_channels", "load_pipeline", "native_size",
           "pick_device"]
