"""The SDXL-style build's recipes: the shipped one and a toy one that runs in seconds."""

from __future__ import annotations

from labkit.zoo import data_dir
from labkit.zoo.recipe.models import FULL, TOY, Configs
from labkit.zoo.xl.models import TEXT_ENCODER_2, TOY_TEXT_2, TOY_UNET_XL, UNET_XL
from labkit.zoo.xl.world import XLRecipe

FULL_XL = XLRecipe(configs=Configs(FULL.text_encoder, FULL.vae, UNET_XL), text_encoder_2=TEXT_ENCODER_2,
                   sd1_folder=data_dir() / "demo_sd1", base_pool=12000, base_steps=3000, base_batch=64, base_lr=1e-3,
                   adapter_pool=2000, adapter_steps=800, adapter_batch=32, adapter_lr=4e-3,
                   ti_steps=300, ti_lr=5e-3)
TOY_XL = XLRecipe(configs=Configs(TOY.text_encoder, TOY.vae, TOY_UNET_XL), text_encoder_2=TOY_TEXT_2,
                  sd1_folder=None, base_pool=32,
                  base_steps=3, base_batch=4, base_lr=1e-3, adapter_pool=16, adapter_steps=2,
                  adapter_batch=4, adapter_lr=1e-3, ti_steps=2, ti_lr=1e-3, ckpt_every=2,
                  eval_steps=2)
