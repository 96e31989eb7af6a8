"""labkit.identify.layouts against real layouts: SD1.5, SD2.1 and SDXL key tables, built on the meta
device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import SD_2_TEXT_ENCODER_KEYS_TO_IGNORE
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from labkit.identify import layouts

LAYOUTS = Path(__file__).resolve().parents[1] / "data" / "layouts"

SD_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32,
}
SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD21_UNET = {**SD15_UNET, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
             "use_linear_projection": True}
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "down_block_types": ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2,
    "up_block_types": ["CrossAttnUpBlock2D"] * 2 + ["UpBlock2D"],
    "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
    "attention_head_dim": [5, 10, 20], "transformer_layers_per_block": [1, 2, 10],
    "use_linear_projection": True, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816,
}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
          "num_hidden_layers": 12, "projection_dim": 768, "hidden_act": "quick_gelu"}
OPEN_CLIP_H = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
               "num_hidden_layers": 23, "projection_dim": 512, "hidden_act": "gelu"}
BIG_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
         "num_hidden_layers": 32, "projection_dim": 1280, "hidden_act": "gelu"}

FAMILIES = {
    "sd15": (layouts.SD1, SD15_UNET, {"text_encoder": (CLIPTextModel, CLIP_L)}),
    "sd21": (layouts.SD2, SD21_UNET, {"text_encoder": (CLIPTextModel, OPEN_CLIP_H)}),
    "sdxl_base": (layouts.SDXL, SDXL_UNET, {"text_encoder": (CLIPTextModel, CLIP_L),
                                           "text_encoder_2": (CLIPTextModelWithProjection, BIG_G)}),
}


def meta_components(unet: dict, texts: dict) -> dict[str, dict[str, torch.Tensor]]:
    """Diffusers state dicts (meta tensors) of a family's components."""
    with torch.device("meta"):
        out = {"unet": UNet2DConditionModel(**unet).state_dict(),
               "vae": AutoencoderKL(**SD_VAE).state_dict()}
        for name, (cls, cfg) in texts.items():
            out[name] = cls(CLIPTextConfig(**cfg, bos_token_id=0, eos_token_id=2)).state_dict()
    return out


def real_table(name: str) -> dict[str, tuple[int, ...]]:
    """The real file's key -> shape table."""
    tensors = json.loads((LAYOUTS / f"{name}.json").read_text())["tensors"]
    return {k: tuple(v["shape"]) for k, v in tensors.items()}


# Real keys no diffusers folder holds, so none are written back: SD 2.x's last text resblock and
# text_projection (diffusers' own ignore list) and its logit scale.
NOT_HELD = {"sd21": {*SD_2_TEXT_ENCODER_KEYS_TO_IGNORE, "cond_stage_model.model.logit_scale"}}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    layout, unet, texts = FAMILIES[request.param]
    return layout, meta_components(unet, texts), real_table(request.param), \
        NOT_HELD.get(request.param, set())


def test_diffusers_to_original_gives_the_real_keys_and_shapes(family):
    layout, components, real, not_held = family
    mapped = {}
    for name, sd in components.items():
        mapped.update(layouts.component_to_original(name, sd.items(), layout))
        mapped.update(layouts.original_only(name, sd, layout))
    assert not_held <= real.keys()
    assert {k: tuple(v.shape) for k, v in mapped.items()} == \
        {k: v for k, v in real.items() if k not in not_held}


def test_original_to_diffusers_gives_the_diffusers_keys_and_shapes(family):
    layout, components, real, _ = family
    fake = ((k, torch.empty(shape, device="meta")) for k, shape in real.items())
    back = layouts.state_dict_to_diffusers(fake, layout)
    assert sorted(back) == sorted(components)
    for name, sd in components.items():
        assert {k: tuple(v.shape) for k, v in back[name].items()} == \
            {k: tuple(v.shape) for k, v in sd.items()}, name


def test_every_real_key_maps_to_diffusers_and_back(family):
    layout, _, real, not_held = family
    for key in real:
        found = layouts.to_diffusers(key, layout)
        if found is None:
            assert key in not_held or key.endswith(("position_ids", "logit_scale")), key
            continue
        assert key not in not_held
        component, names = found
        assert {layouts.to_original(component, n, layout) for n in names} == {key}


def test_clip_keys_with_and_without_text_model_level_map_alike():
    a = layouts.to_original("text_encoder", "embeddings.token_embedding.weight")
    b = layouts.to_original("text_encoder", "text_model.embeddings.token_embedding.weight")
    assert a == b == "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    assert layouts.to_diffusers(a) == ("text_encoder", ("embeddings.token_embedding.weight",))


def test_keys_outside_the_components_have_no_diffusers_name():
    for key in ("model_ema.decay", "alphas_cumprod", "model_ema.diffusion_modelout0weight"):
        assert layouts.to_diffusers(key) is None


def test_fused_qkv_round_trip_and_rules():
    q, k, v = (torch.randn(4, 4) for _ in range(3))
    fused = layouts.fuse_qkv(q, k, v)
    assert fused.shape == (12, 4)
    assert all(torch.equal(a, b) for a, b in zip(layouts.split_qkv(fused), (q, k, v), strict=True))
    w = torch.randn(8, 8)
    to_orig, to_diff = layouts.RESHAPES["conv1x1"]
    assert to_orig(w).shape == (8, 8, 1, 1) and torch.equal(to_diff(to_orig(w)), w)
    assert to_orig(torch.randn(8)).shape == (8,)


def test_small_structures_number_blocks_like_diffusers():
    # Two levels, one layer per block: input_blocks 1 (res), 2 (downsample), 3 (res).
    pairs = {p.diffusers: p.original for p in layouts.unet_pairs([True, False], [False, True], 1)}
    assert pairs["down_blocks.0.downsamplers.0.conv."] == "input_blocks.2.0.op."
    assert pairs["down_blocks.1.resnets.0."] == "input_blocks.3.0."
    assert pairs["up_blocks.0.upsamplers.0.conv."] == "output_blocks.1.1.conv."
    assert pairs["up_blocks.1.attentions.1."] == "output_blocks.3.1."


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="sd3"):
        layouts.make_layout("sd3", SD15_UNET, SD_VAE)


def test_sd2_text_keys_with_and_without_text_model_level_map_alike():
    flat = "encoder.layers.3.self_attn.q_proj.weight"
    fused = "cond_stage_model.model.transformer.resblocks.3.attn.in_proj_weight"
    for key in (flat, "text_model." + flat):
        assert layouts.to_original("text_encoder", key, layouts.SD2) == fused
    assert layouts.to_diffusers(fused, layouts.SD2) == ("text_encoder", tuple(
        flat.replace("q_proj", f"{x}_proj") for x in "qkv"))
    assert layouts.to_diffusers("cond_stage_model.model.transformer.resblocks.22.ln_1.weight",
                                layouts.SD2) == ("text_encoder", ("encoder.layers.22.layer_norm1.weight",))
