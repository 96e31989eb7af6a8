"""identify on the real SD key tables, real-world edits of them, diffusers naming, adapters and TI."""

from __future__ import annotations

import pytest
import safetensors
import torch

from labkit.identify import rules as R
from labkit.identify.identity import Identity, identify
from labkit.tensors import TensorInfo
from tests.fixtures.layout_files import (
    LAYOUT_NAMES,
    load_layout,
    peft_lora,
    read_sparse,
    shrink_context,
    shrink_lora,
    to_dora,
    to_full,
    to_loha,
    to_lokr,
    with_ema_and_buffers,
    write_sparse,
)

T = TensorInfo

EXPECTED = {  # layout -> (kind, base, variant, base_source)
    "flux_dev": ("unet", "flux_dev", [], "layout"),
    "flux_schnell": ("unet", "flux_schnell", [], "layout"),
    "sd15": ("checkpoint", "sd1", [], "layout"),
    "sd15_inpaint": ("checkpoint", "sd1", ["inpainting"], "layout"),
    "sd15_lora_kohya": ("lora", "sd1", [], "dims"),
    "sd15_vae": ("vae", "unknown", [], "none"),
    "sd21": ("checkpoint", "sd2", ["v_prediction"], "layout"),
    "sd3_medium": ("checkpoint", "sd3", [], "layout"),
    "sdxl_base": ("checkpoint", "sdxl", [], "layout"),
    "sdxl_lora_kohya": ("lora", "sdxl", [], "dims"),
    "sdxl_refiner": ("checkpoint", "sdxl_refiner", [], "layout"),
}


def summary(identity: Identity) -> tuple[str, str, list[str], str]:
    return identity.kind, identity.base, identity.variant, identity.base_source


def test_every_layout_has_an_expectation():
    assert sorted(EXPECTED) == LAYOUT_NAMES


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_layout_table(name):
    identity = identify(load_layout(name))
    assert summary(identity) == EXPECTED[name]
    assert identity.evidence and all(isinstance(e, str) for e in identity.evidence)


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_layout_sparse_file(tmp_path, name):
    path = write_sparse(tmp_path / f"{name}.safetensors", load_layout(name))
    table, metadata = read_sparse(path)
    with safetensors.safe_open(path, "pt") as f:  # the file is a valid safetensors file
        assert list(f.keys()) == sorted(table)
    assert summary(identify(table, metadata)) == EXPECTED[name]


def test_context_evidence_names_the_key():
    evidence = identify(load_layout("sd15")).evidence
    assert any("attn2.to_k.weight last dim 768" in e for e in evidence)


# ---- real-world edits of full checkpoints ----


@pytest.mark.parametrize("dotted", [False, True])
@pytest.mark.parametrize("name", ["sd15", "sdxl_base", "sd21"])
def test_ema_and_schedule_buffers_do_not_change_identity(name, dotted):
    identity = identify(with_ema_and_buffers(load_layout(name), dotted))
    assert summary(identity) == EXPECTED[name]
    assert any("EMA" in e for e in identity.evidence)
    assert any("alphas_cumprod" in e for e in identity.evidence)


@pytest.mark.parametrize("name", ["sd15", "sdxl_base", "sdxl_refiner", "flux_dev"])
def test_fp32_copy(name):
    table = {k: T(v.shape, "F32") for k, v in load_layout(name).items()}
    identity = identify(table)
    assert summary(identity) == EXPECTED[name]
    assert any("F32" in e for e in identity.evidence)


@pytest.mark.parametrize("name,prefix", [("sd15", "cond_stage_model."), ("sd21", "cond_stage_model."),
                                         ("sdxl_base", "conditioner.")])
def test_pruned_text_encoders_keep_the_unet_base(name, prefix):
    table = {k: v for k, v in load_layout(name).items() if not k.startswith(prefix)}
    assert summary(identify(table)) == EXPECTED[name]


def test_unet_only_original_layout():
    table = {k: v for k, v in load_layout("sd15").items()
             if k.startswith("model.diffusion_model.")}
    assert summary(identify(table)) == ("unet", "sd1", [], "layout")


def test_vae_alone_original_prefix():
    table = {k: v for k, v in load_layout("sdxl_base").items()
             if k.startswith("first_stage_model.")}
    identity = identify(table)
    assert (identity.kind, identity.base) == ("vae", "unknown")
    assert any("4 latent channels" in e for e in identity.evidence)


def test_text_encoder_alone_original_prefix():
    table = {k: v for k, v in load_layout("sd21").items() if k.startswith("cond_stage_model.")}
    assert summary(identify(table)) == ("text_encoder", "sd2", [], "layout")


def test_sd2_epsilon_global_step_drops_the_v_hint():
    identity = identify(load_layout("sd21"), {"global_step": "875000"})
    assert identity.variant == []
    assert any("875000" in e for e in identity.evidence)


def test_sd2_v_hint_is_called_a_hint():
    assert any("hint" in e for e in identify(load_layout("sd21")).evidence)


def test_v_pred_key_and_modelspec_prediction_type():
    table = dict(load_layout("sdxl_base"), v_pred=T((0,), "F32"))
    assert identify(table).variant == ["v_prediction"]
    meta = {"modelspec.prediction_type": "v"}
    assert identify(load_layout("sdxl_base"), meta).variant == ["v_prediction"]


def test_playground_edm_buffers():
    table = dict(load_layout("sdxl_base"), edm_mean=T((1, 4, 1, 1), "F32"),
                 edm_std=T((1, 4, 1, 1), "F32"))
    assert summary(identify(table)) == ("checkpoint", "playground", [], "layout")


def test_sdxl_inpainting():
    table = load_layout("sdxl_base")
    key = "model.diffusion_model.input_blocks.0.0.weight"
    table[key] = T((320, 9, 3, 3), "F16")
    assert summary(identify(table)) == ("checkpoint", "sdxl", ["inpainting"], "layout")


@pytest.mark.parametrize("name,base", [("sd15", "demo_sd1"), ("sdxl_base", "demo_sdxl")])
def test_demo_models_by_unreal_context_dim(name, base):
    identity = identify(shrink_context(load_layout(name), 64))
    assert summary(identity) == ("checkpoint", base, [], "layout")
    assert any("64" in e and "demo" in e for e in identity.evidence)


def test_flux_in_comfy_prefix_and_fill_variant():
    table = {"model.diffusion_model." + k: v for k, v in load_layout("flux_dev").items()}
    table["model.diffusion_model.img_in.weight"] = T((3072, 384), "BF16")
    assert summary(identify(table)) == ("unet", "flux_dev", ["fill"], "layout")


@pytest.mark.parametrize("table", [
    {},
    {"foo.weight": T((3, 3), "F32")},
    {"a.b.c": T((10,), "F32"), "d": T((2, 2), "F16")},
    {f"layers.{i}.weight": T((8, 8), "F32") for i in range(20)},
    {"tokens": T((4000, 768), "F32")},
])
def test_garbage_is_unknown_with_evidence(table):
    identity = identify(table)
    assert summary(identity) == ("unknown", "unknown", [], "none")
    assert "looked for" in identity.evidence[0]
    assert ".lora_down.weight" in identity.evidence[0]


def test_identity_is_frozen():
    with pytest.raises(AttributeError):
        identify({}).kind = "lora"  # type: ignore[misc]


# ---- adapters derived from the kohya tables ----


@pytest.mark.parametrize("name", ["sd15_lora_kohya", "sdxl_lora_kohya"])
@pytest.mark.parametrize("derive,kind", [
    (to_loha, "loha"), (lambda t: to_lokr(t, False), "lokr"), (lambda t: to_lokr(t, True), "lokr"),
    (to_full, "lycoris_full"), (to_dora, "dora"),
])
def test_lycoris_kinds_keep_the_base(name, derive, kind):
    identity = identify(derive(load_layout(name)))
    assert summary(identity) == (kind, EXPECTED[name][1], [], "dims")


def test_lora_without_alpha():
    table = {k: v for k, v in load_layout("sd15_lora_kohya").items() if not k.endswith(".alpha")}
    identity = identify(table)
    assert summary(identity) == ("lora", "sd1", [], "dims")
    assert any("alpha = rank" in e for e in identity.evidence)


@pytest.mark.parametrize("name,meta,base,variant", [
    ("sd15_lora_kohya", {"ss_base_model_version": "sd_v1"}, "sd1", []),
    ("sd15_lora_kohya", {"ss_base_model_version": "sd_v1_v"}, "sd1", ["v_prediction"]),
    ("sdxl_lora_kohya", {"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl", []),
    ("sdxl_lora_kohya", {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "sdxl",
     []),
    ("sd15_lora_kohya", {"modelspec.architecture": "stable-diffusion-v1/lora"}, "sd1", []),
])
def test_lora_base_from_metadata(name, meta, base, variant):
    identity = identify(load_layout(name), meta)
    assert summary(identity) == ("lora", base, variant, "metadata")
    assert any("metadata" in e for e in identity.evidence)


def test_metadata_variants_on_sd2_widths():
    identity = identify(shrink_lora(load_layout("sd15_lora_kohya"), 1024),
                        {"ss_base_model_version": "sd_v2_v"})
    assert summary(identity) == ("lora", "sd2", ["v_prediction"], "metadata")


def demo_sdxl_lora():
    """The kohya SDXL table at the demo SDXL's widths (te1 32, te2 48, context 80)."""
    te1, te2 = R.DEMO_SDXL_WIDTHS
    widths = {"lora_te1_": te1, "lora_te2_": te2, "attn2_to_k": R.DEMO_SDXL_CONTEXT}
    out = {}
    for key, info in load_layout("sdxl_lora_kohya").items():
        width = next((w for part, w in widths.items() if part in key), None)
        down = key.endswith(".lora_down.weight") and width is not None
        out[key] = T((info.shape[0], width), info.dtype) if down else info
    return out


@pytest.mark.parametrize("table,meta,base,said", [
    (demo_sdxl_lora, {"ss_base_model_version": "sdxl_base_v1-0"}, "demo_sdxl",
     "te1 32 / te2 48 / context 80 are those of the lab's demo SDXL"),
    (demo_sdxl_lora, {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "demo_sdxl",
     "modelspec.architecture='stable-diffusion-xl-v1-base'"),
    (lambda: shrink_lora(load_layout("sd15_lora_kohya"), 32), {"ss_base_model_version": "sd_v1"},
     "demo_sd1", "te 32 / context 32 are those of the lab's demo SD1"),
    (lambda: load_layout("sd15_lora_kohya"), {"ss_base_model_version": "sdxl_base_v1-0"}, "sd1",
     "te 768 / context 768 are those of SD1"),
])
def test_widths_win_over_metadata_of_another_family(table, meta, base, said):
    identity = identify(table(), meta)
    assert summary(identity) == ("lora", base, [], "dims")
    (line,) = [e for e in identity.evidence if "the widths decide" in e]
    assert line.startswith("metadata says ") and said in line


def test_the_demo_sdxl_lora_by_its_widths_alone():
    identity = identify(demo_sdxl_lora())
    assert summary(identity) == ("lora", "demo_sdxl", [], "dims")
    assert not any("metadata" in e for e in identity.evidence)


def test_metadata_tells_bases_of_the_same_widths():
    identity = identify(load_layout("sdxl_lora_kohya"),
                        {"modelspec.architecture": "playground-v2.5/lora"})
    assert summary(identity) == ("lora", "playground", [], "metadata")
    assert any("fit sdxl as well" in e for e in identity.evidence)


def test_lora_metadata_in_a_sparse_file(tmp_path):
    meta = {"ss_base_model_version": "sdxl_base_v1-0", "ss_network_dim": "32"}
    path = write_sparse(tmp_path / "l.safetensors", load_layout("sdxl_lora_kohya"), meta)
    assert summary(identify(*read_sparse(path))) == ("lora", "sdxl", [], "metadata")


def test_te_only_lora_by_width():
    table = {k: v for k, v in load_layout("sd15_lora_kohya").items() if k.startswith("lora_te_")}
    assert summary(identify(table)) == ("lora", "sd1", [], "dims")


@pytest.mark.parametrize("name,version", [("sd15_lora_kohya", "labkit_demo_sd1"),
                                          ("sdxl_lora_kohya", "labkit_demo_sdxl")])
def test_demo_lora(name, version):
    table = shrink_lora(load_layout(name), 64)
    unknown = identify(table)
    assert summary(unknown) == ("lora", "unknown", [], "none")
    assert any("no real" in e for e in unknown.evidence)
    told = identify(table, {"ss_base_model_version": version})
    assert summary(told) == ("lora", version.removeprefix("labkit_"), [], "metadata")


# ---- diffusers naming, built with diffusers / transformers on the meta device ----

SD15_UNET = {"cross_attention_dim": 768}
SDXL_UNET = {
    "sample_size": 128, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D",
                                             "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280), "cross_attention_dim": 2048,
    "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20),
    "use_linear_projection": True, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816,
}
VAE = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
       "up_block_types": ("UpDecoderBlock2D",) * 4, "layers_per_block": 2, "latent_channels": 4}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12}
CLIP_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
          "num_attention_heads": 20, "projection_dim": 1280}


def meta_table(model, prefix=""):
    return {prefix + k: T(tuple(v.shape), "F32") for k, v in model.state_dict().items()}


def unet(**config):
    from diffusers import UNet2DConditionModel
    with torch.device("meta"):
        return UNet2DConditionModel(**config)


def text_encoder(projection, **config):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    with torch.device("meta"):
        return cls(CLIPTextConfig(**config))


@pytest.fixture(scope="module")
def diffusers_parts():
    from diffusers import AutoencoderKL
    with torch.device("meta"):
        vae = AutoencoderKL(**VAE)
    return {
        "sd15_unet": meta_table(unet(**SD15_UNET)),
        "sdxl_unet": meta_table(unet(**SDXL_UNET)),
        "vae": meta_table(vae),
        "clip_l": meta_table(text_encoder(False, **CLIP_L)),
        "clip_g": meta_table(text_encoder(True, **CLIP_G)),
    }


def folder(**components):
    return {f"{name}/{k}": v for name, table in components.items() for k, v in table.items()}


def test_diffusers_sd15_folder(diffusers_parts):
    p = diffusers_parts
    table = folder(unet=p["sd15_unet"], vae=p["vae"], text_encoder=p["clip_l"])
    assert summary(identify(table)) == ("checkpoint", "sd1", [], "layout")


def test_diffusers_sdxl_folder(diffusers_parts):
    p = diffusers_parts
    table = folder(unet=p["sdxl_unet"], vae=p["vae"], text_encoder=p["clip_l"],
                   text_encoder_2=p["clip_g"])
    identity = identify(table)
    assert summary(identity) == ("checkpoint", "sdxl", [], "layout")
    assert any("add_embedding.linear_1.weight" in e for e in identity.evidence)


@pytest.mark.parametrize("part,expected", [
    ("sd15_unet", ("unet", "sd1", [], "layout")),
    ("sdxl_unet", ("unet", "sdxl", [], "layout")),
    ("clip_l", ("text_encoder", "sd1", [], "layout")),
    ("vae", ("vae", "unknown", [], "none")),
])
def test_diffusers_components_alone(diffusers_parts, part, expected):
    assert summary(identify(diffusers_parts[part])) == expected
    assert summary(identify(folder(x=diffusers_parts[part]))) == expected


def test_diffusers_text_encoders_alone(diffusers_parts):
    p = diffusers_parts
    table = folder(text_encoder=p["clip_l"], text_encoder_2=p["clip_g"])
    assert summary(identify(table)) == ("text_encoder", "sdxl", [], "layout")


def test_diffusers_inpainting_unet():
    table = meta_table(unet(in_channels=9, **SD15_UNET))
    assert summary(identify(table)) == ("unet", "sd1", ["inpainting"], "layout")


@pytest.mark.parametrize("xl,base", [(False, "demo_sd1"), (True, "demo_sdxl")])
def test_diffusers_demo_models(xl, base):
    small = {"block_out_channels": (32, 64), "layers_per_block": 1, "sample_size": 16,
             "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
             "attention_head_dim": 4, "norm_num_groups": 8}
    te = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "vocab_size": 1000, "max_position_embeddings": 77}
    if xl:
        unet_table = meta_table(unet(cross_attention_dim=64, addition_embed_type="text_time",
                                     addition_time_embed_dim=8,
                                     projection_class_embeddings_input_dim=80, **small))
        parts = {"unet": unet_table, "text_encoder": meta_table(text_encoder(False, **te)),
                 "text_encoder_2": meta_table(text_encoder(True, **te))}
    else:
        parts = {"unet": meta_table(unet(cross_attention_dim=32, **small)),
                 "text_encoder": meta_table(text_encoder(False, **te))}
    assert summary(identify(folder(**parts))) == ("checkpoint", base, [], "layout")
    assert summary(identify(parts["unet"])) == ("unet", base, [], "layout")


def test_flux_and_sd3_in_diffusers_naming():
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
    with torch.device("meta"):
        flux = FluxTransformer2DModel(num_layers=1, num_single_layers=1, attention_head_dim=16,
                                      num_attention_heads=2, joint_attention_dim=32,
                                      pooled_projection_dim=32, guidance_embeds=True,
                                      axes_dims_rope=(4, 6, 6))
        sd3 = SD3Transformer2DModel(num_layers=2, attention_head_dim=16, num_attention_heads=2,
                                    joint_attention_dim=32, caption_projection_dim=32,
                                    pooled_projection_dim=32)
    assert summary(identify(meta_table(flux, "transformer/"))) == ("unet", "flux_dev", [], "layout")
    assert summary(identify(meta_table(sd3))) == ("unet", "sd3", [], "layout")


def test_peft_lora_sd15(diffusers_parts):
    p = diffusers_parts
    table = peft_lora(p["sd15_unet"], "unet") | peft_lora(p["clip_l"], "text_encoder")
    identity = identify(table)
    assert summary(identity) == ("lora", "sd1", [], "dims")
    assert any("PEFT" in e for e in identity.evidence)


def test_peft_lora_sdxl_with_two_encoders(diffusers_parts):
    p = diffusers_parts
    table = (peft_lora(p["sdxl_unet"], "unet") | peft_lora(p["clip_l"], "text_encoder")
             | peft_lora(p["clip_g"], "text_encoder_2"))
    assert summary(identify(table)) == ("lora", "sdxl", [], "dims")


def test_peft_dora(diffusers_parts):
    table = peft_lora(diffusers_parts["sd15_unet"], "unet", magnitude=True)
    assert summary(identify(table)) == ("dora", "sd1", [], "dims")


# ---- textual inversion: the four container forms ----

@pytest.mark.parametrize("table,base", [
    ({"string_to_param.*": T((4, 768), "F32")}, "sd1"),
    ({"emb_params": T((2, 1024), "F32")}, "sd2"),
    ({"clip_l": T((3, 768), "F16"), "clip_g": T((3, 1280), "F16")}, "sdxl"),
    ({"<cat-toy>": T((768,), "F32")}, "sd1"),
    ({"<cat-toy>": T((1, 768), "F32")}, "sd1"),
    ({"emb_params": T((1, 32), "F32")}, "demo_sd1"),
    ({"clip_l": T((1, 32), "F32"), "clip_g": T((1, 48), "F32")}, "demo_sdxl"),
])
def test_textual_inversion_forms(table, base):
    identity = identify(table)
    assert summary(identity) == ("textual_inversion", base, [], "dims")
    assert "vector" in identity.evidence[0]


def test_textual_inversion_sparse_file(tmp_path):
    path = write_sparse(tmp_path / "ti.safetensors", {"emb_params": T((2, 768), "F32")})
    assert summary(identify(*read_sparse(path))) == ("textual_inversion", "sd1", [], "dims")


@pytest.mark.parametrize("version", ["labkit_demo_sd1", "labkit_demo_sdxl"])
def test_demo_textual_inversion(version):
    table = ({"emb_params": T((2, 32), "F32")} if version.endswith("sd1")
             else {"clip_l": T((1, 32), "F32"), "clip_g": T((1, 64), "F32")})
    by_dims = ("demo_sd1", "dims") if version.endswith("sd1") else ("unknown", "none")
    assert summary(identify(table)) == ("textual_inversion", by_dims[0], [], by_dims[1])
    told = identify(table, {"ss_base_model_version": version})
    assert summary(told) == ("textual_inversion", version.removeprefix("labkit_"), [], "metadata")


def test_demo_sdxl_ti_widths_beat_real_sdxl_metadata():
    table = {"clip_l": T((1, 32), "F32"), "clip_g": T((1, 48), "F32")}
    identity = identify(table, {"ss_base_model_version": "sdxl_base_v1-0"})
    assert summary(identity) == ("textual_inversion", "demo_sdxl", [], "dims")
    assert any("32 + 48 are those of the lab's demo SDXL" in e for e in identity.evidence)


@pytest.mark.parametrize("widths,base", [((32,), "demo_sd1"), ((32, 48), "demo_sdxl")])
def test_demo_text_encoders_alone(widths, base):
    te = {"intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
          "vocab_size": 1000, "max_position_embeddings": 77}
    names = ("text_encoder", "text_encoder_2")[: len(widths)]
    parts = {name: meta_table(text_encoder(name.endswith("_2"), hidden_size=w, **te))
             for name, w in zip(names, widths, strict=True)}
    assert summary(identify(folder(**parts))) == ("text_encoder", base, [], "layout")


# ---- the demo world's files: SDXL-style told from SD1-style by structure and widths ----

@pytest.mark.parametrize("name,kind,base,xl", [
    ("demo_sdxl", "checkpoint", "demo_sdxl", True),
    ("demo_sdxl_single", "checkpoint", "demo_sdxl", True),
    ("demo_sd1", "checkpoint", "demo_sd1", False),
    ("demo_sd1_single", "checkpoint", "demo_sd1", False),
    ("demo_lora_striped_xl", "lora", "demo_sdxl", True),
    ("demo_lora_striped", "lora", "demo_sd1", False),
    ("demo_lora_striped_peft", "lora", "demo_sd1", False),
    ("demo_ti_checker_xl", "textual_inversion", "demo_sdxl", True),
    ("demo_ti_checker_kohya", "textual_inversion", "demo_sd1", False),
    ("demo_ti_checker_a1111", "textual_inversion", "demo_sd1", False),
])
def test_demo_world_files(name, kind, base, xl):
    from labkit import open_model, zoo
    identity = open_model(zoo.path(name)).identity
    assert (identity.kind, identity.base) == (kind, base)
    if kind == "checkpoint":
        assert any(e.startswith("SDXL structure") for e in identity.evidence) == xl
    elif kind == "lora":
        parts = identity.evidence[0].split("parts: ")[1]
        assert ("te1" in parts and "te2" in parts) == xl


def test_the_demo_sdxl_lora_carries_real_sdxl_metadata_and_says_so():
    from labkit import open_model, zoo
    model = open_model(zoo.path("demo_lora_striped_xl"))
    assert model.metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert model.identity.base_source == "dims"
    assert any("metadata says ss_base_model_version='sdxl_base_v1-0' (sdxl), but the widths "
               "te1 32 / te2 48 / context 80" in e for e in model.identity.evidence)
