import json
from pathlib import Path

import pytest

from labkit.identify import layouts
from labkit.identify.blocks import (
    BLOCK_ORDER,
    block_label,
    block_labels,
    block_sort_key,
    component_of,
    ema_twins,
    last_out_block,
    layer_kind,
    lora_part,
)
from labkit.identify.layouts import ema_key

LAYOUTS = Path(__file__).resolve().parents[1] / "data" / "layouts"
# LoRA Block Weight's block lists: 17 for an SD1 LoRA, 12 for SDXL
LBW_SD1 = {"BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID",
           *(f"OUT{i:02d}" for i in range(3, 12))}
LBW_SDXL = {"BASE", "IN04", "IN05", "IN07", "IN08", "MID", *(f"OUT{i:02d}" for i in range(6))}


def keys(name: str) -> list[str]:
    return list(json.loads((LAYOUTS / f"{name}.json").read_text())["tensors"])


@pytest.mark.parametrize(("key", "component", "block"), [
    ("model.diffusion_model.input_blocks.4.1.proj_in.weight", "UNet", "IN04"),
    ("model.diffusion_model.input_blocks.0.0.weight", "UNet", "IN00"),
    ("model.diffusion_model.time_embed.0.weight", "UNet", "IN00"),
    ("model.diffusion_model.middle_block.1.norm.bias", "UNet", "MID"),
    ("model.diffusion_model.output_blocks.11.1.proj_out.bias", "UNet", "OUT11"),
    ("model.diffusion_model.out.2.weight", "UNet", "OUT11"),
    ("unet/down_blocks.1.attentions.0.proj_in.weight", "UNet", "IN04"),
    ("unet/down_blocks.0.downsamplers.0.conv.weight", "UNet", "IN03"),
    ("unet/up_blocks.1.resnets.2.conv1.weight", "UNet", "OUT05"),
    ("unet/up_blocks.0.upsamplers.0.conv.bias", "UNet", "OUT02"),
    ("unet/mid_block.attentions.0.proj_in.weight", "UNet", "MID"),
    ("unet.up_blocks.3.attentions.2.proj_out.lora_A.weight", "UNet", "OUT11"),
    ("down_blocks.2.resnets.1.norm1.weight", "UNet", "IN08"),
    ("lora_unet_down_blocks_1_attentions_1_proj_in.lora_down.weight", "UNet", "IN05"),
    ("lora_unet_input_blocks_7_1_transformer_blocks_0_attn1_to_k.alpha", "UNet", "IN07"),
    ("lora_unet_mid_block_attentions_0_proj_in.alpha", "UNet", "MID"),
    ("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", "text encoder", "BASE"),
    ("lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha", "text encoder 2", "BASE"),
    ("cond_stage_model.transformer.text_model.final_layer_norm.weight", "text encoder", "BASE"),
    ("conditioner.embedders.1.model.ln_final.weight", "text encoder 2", "BASE"),
    ("text_encoder/encoder.layers.0.mlp.fc1.weight", "text encoder", "BASE"),
    ("first_stage_model.decoder.up.0.block.1.conv1.weight", "VAE", ""),
    ("vae/decoder.up_blocks.0.resnets.0.conv1.weight", "VAE", ""),
    ("model_ema.decay", "EMA", ""),
    ("alphas_cumprod", "other", ""),
    ("emb_params", "other", ""),
])
def test_component_and_block_of_known_keys(key, component, block):
    assert (component_of(key), block_label(key)) == (component, block)


@pytest.mark.parametrize("table", ["sd15", "sd15_inpaint", "sd21", "sdxl_base", "sdxl_refiner",
                                   "sd15_lora_kohya", "sdxl_lora_kohya"])
def test_every_unet_key_of_real_files_gets_a_block(table):
    names = keys(table)
    labels = block_labels(names)
    unet = [(k, b) for k, b in zip(names, labels, strict=True) if component_of(k) == "UNet"]
    assert unet and all(b in BLOCK_ORDER and b not in ("", "BASE") for _, b in unet)
    text = [b for k, b in zip(names, labels, strict=True) if component_of(k).startswith("text")]
    assert text and set(text) == {"BASE"}


def test_kohya_lora_blocks_are_lora_block_weights_lists():
    assert set(block_labels(keys("sd15_lora_kohya"))) == LBW_SD1
    assert set(block_labels(keys("sdxl_lora_kohya"))) == LBW_SDXL


@pytest.mark.parametrize(("table", "layout", "last"), [("sd15", layouts.SD1, 11),
                                                       ("sdxl_base", layouts.SDXL, 8)])
def test_original_and_diffusers_names_get_the_same_labels(table, layout, last):
    names = keys(table)
    assert last_out_block(names) == last
    pairs = [(k, f"{comp}/{d}") for k in names if (found := layouts.to_diffusers(k, layout))
             for comp, ds in [found] for d in ds]
    assert len(pairs) > 1000
    diffusers = [d for _, d in pairs]
    assert last_out_block(diffusers) == last
    for original, mapped in pairs:
        assert component_of(original) == component_of(mapped), (original, mapped)
        assert block_label(original, last) == block_label(mapped, last), (original, mapped)
        assert layer_kind(original) == layer_kind(mapped), (original, mapped)


def test_kohya_sd1_modules_are_sd1_modules_with_the_same_labels():
    module_labels = {}
    for key in keys("sd15"):
        if (found := layouts.to_diffusers(key)) and found[0] == "unet":
            module = found[1][0].rsplit(".", 1)[0]
            module_labels["lora_unet_" + module.replace(".", "_")] = block_label(key)
    lora = [k for k in keys("sd15_lora_kohya") if k.startswith("lora_unet_")]
    assert lora
    for key in lora:
        assert block_label(key) == module_labels[key.split(".")[0]], key


def test_sdxl_conv_out_counts_as_its_last_output_block():
    labels = dict(zip(keys("sdxl_base"), block_labels(keys("sdxl_base")), strict=True))
    assert labels["model.diffusion_model.out.2.weight"] == "OUT08"
    assert "OUT11" not in labels.values()


def test_ema_keys_take_their_twins_label():
    model = ["model.diffusion_model.input_blocks.1.1.proj_in.weight",
             "model.diffusion_model.output_blocks.11.0.in_layers.0.weight"]
    ema = [ema_key(k) for k in model]
    assert ema_twins(model + ema) == dict(zip(ema, model, strict=True))
    assert block_labels(model + ema + ["model_ema.decay"]) == ["IN01", "OUT11", "IN01", "OUT11", ""]
    assert {component_of(k) for k in ema} == {"EMA"}


@pytest.mark.parametrize(("key", "part"), [
    ("lora_unet_x.lora_down.weight", "down"), ("lora_unet_x.lora_up.weight", "up"),
    ("lora_unet_x.alpha", "alpha"), ("unet.x.lora_A.weight", "down"),
    ("unet.x.lora_B.weight", "up"), ("lora_unet_x.hada_w1_a", "hada_w1_a"),
    ("lora_unet_x.lokr_w2", "lokr_w2"), ("lora_unet_x.dora_scale", "dora_scale"),
    ("model.diffusion_model.out.2.weight", ""),
])
def test_lora_parts(key, part):
    assert lora_part(key) == part


def test_layer_kinds_of_real_keys_are_named():
    kinds = {layer_kind(k) for k in keys("sd15")}
    assert {"resnet", "self-attention", "cross-attention", "feed-forward", "norm",
            "projection", "resample", "embedding", "in/out conv"} <= kinds
    assert layer_kind("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k"
                      ".weight") == "cross-attention"


def test_blocks_sort_in_unet_order():
    labels = ["OUT00", "", "MID", "IN11", "BASE", "IN02"]
    assert sorted(labels, key=block_sort_key) == ["BASE", "IN02", "IN11", "MID", "OUT00", ""]
