import json
from pathlib import Path

import pytest
import torch

from labkit.files.model_file import ModelFile
from labkit.identify import layouts
from labkit.stats.canonical import canonical_names, canonical_tensor, layout_of, structure
from labkit.tensors import TensorInfo

LAYOUTS = Path(__file__).resolve().parents[1] / "data" / "layouts"


def table(name: str) -> dict[str, TensorInfo]:
    raw = json.loads((LAYOUTS / f"{name}.json").read_text())["tensors"]
    return {k: TensorInfo(tuple(v["shape"]), v["dtype"]) for k, v in raw.items()}


def model(tab: dict[str, TensorInfo], form: str = "safetensors") -> ModelFile:
    return ModelFile(Path("x"), form, tab, {}, {})


@pytest.mark.parametrize(("name", "down", "up"), [
    ("sd15", ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
     ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3),
    ("sdxl_base", ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2,
     ["CrossAttnUpBlock2D"] * 2 + ["UpBlock2D"]),
])
def test_structure_is_read_off_real_keys(name, down, up):
    unet, vae = structure(table(name))
    assert unet == {"layers_per_block": 2, "down_block_types": down, "up_block_types": up}
    assert (len(vae["block_out_channels"]), vae["layers_per_block"]) == (4, 2)


@pytest.mark.parametrize(("name", "layout"), [("sd15", layouts.SD1), ("sd21", layouts.SD2),
                                              ("sdxl_base", layouts.SDXL)])
def test_layout_of_a_real_file_is_the_familys_layout(name, layout):
    assert layout_of(model(table(name))) == layout


def test_every_real_key_gets_a_diffusers_name_but_the_original_only_ones():
    names = canonical_names(model(table("sdxl_base")))
    raw = [n for n in names if "/" not in n]
    assert sorted(raw) == ["conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
                           "conditioner.embedders.1.model.logit_scale"]
    fused = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
    assert [n for n, k in names.items() if k == fused] == [
        f"text_encoder_2/text_model.encoder.layers.0.self_attn.{x}_proj.weight" for x in "qkv"]


def test_sd21s_fused_openclip_attention_gets_the_three_diffusers_names():
    names = canonical_names(model(table("sd21")))
    fused = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
    assert [n.split("self_attn.")[-1] for n, k in names.items() if k == fused] == [
        f"{x}_proj.weight" for x in "qkv"]
    assert all(n.startswith(("unet/", "vae/", "text_encoder/")) for n, k in names.items()
               if k.startswith(("model.diffusion_model.", "first_stage_model.")))


def test_folders_and_unknown_files_keep_their_names_but_old_text_spellings():
    folder = model({"unet/conv_in.weight": TensorInfo((1,), "F32"),
                    "text_encoder/text_model.encoder.layers.0.mlp.fc1.weight":
                        TensorInfo((1,), "F32")}, "diffusers")
    assert set(canonical_names(folder)) == {"unet/conv_in.weight",
                                            "text_encoder/encoder.layers.0.mlp.fc1.weight"}
    lora = model({"lora_unet_x.alpha": TensorInfo((), "F16")})
    assert layout_of(lora) is None and canonical_names(lora) == {"lora_unet_x.alpha": "lora_unet_x.alpha"}


def test_canonical_tensors_take_the_diffusers_shape():
    key = "first_stage_model.decoder.mid.attn_1.q.weight"
    t = torch.randn(4, 4, 1, 1)
    got = canonical_tensor(layouts.SD1, key, t, "vae/decoder.mid_block.attentions.0.to_q.weight")
    assert got.shape == (4, 4) and torch.equal(got, t[:, :, 0, 0])
    fused = torch.arange(12.0).reshape(6, 2)
    k = canonical_tensor(layouts.SDXL,
                         "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
                         fused, "text_encoder_2/text_model.encoder.layers.0.self_attn.k_proj.weight")
    assert torch.equal(k, fused[2:4])
    assert canonical_tensor(None, "a", t, "a") is t
