"""lora.read on files in every writer's key style: the same weights give the same table."""

import pandas as pd
import pytest

import labkit as lk
from tests.fixtures import wild_formats as W

SAME = ["component", "module", "block", "kind", "rank", "alpha", "scale", "up_norm", "down_norm",
        "delta_norm", "eff_rank"]
# (UNet style, its prefix, text-encoder style) of each writer, one row per era.
WRITERS = {
    "kohya": ("kohya", "lora_unet.", "kohya"),
    "attention processor (<= 0.20)": ("processor", "unet.", "te_processor"),
    "LoRACompatibleLinear (0.21-0.25)": ("compat", "unet.", "te_compat"),
    "PEFT (>= 0.26)": ("peft", "unet.", "peft"),
}


def write_in_style(tmp_path, family, writer):
    unet_style, prefix, te_style = WRITERS[writer]
    g = W._gen(0)
    sd = W.emit(W.unet_linears(family), unet_style, prefix, 4, g, W.torch.float32)
    for name, kohya, layers, width, _ in W.UNET_FAMILIES[family]["te"]:
        te_prefix = f"{kohya}." if te_style == "kohya" else f"{name}."
        sd |= W.emit(W.te_linears(layers, width), te_style, te_prefix, 4, g, W.torch.float32)
    return W.write_safetensors(tmp_path / f"{family}_{unet_style}.safetensors", sd)


def table_of(path):
    frame = lk.lora.read(path)
    return frame.sort_values("module").reset_index(drop=True)


@pytest.mark.parametrize("family", ["sd15", "sd21", "sdxl"])
def test_one_lora_in_four_key_styles_reads_to_one_table(tmp_path, family):
    frames = {w: table_of(write_in_style(tmp_path, family, w)) for w in WRITERS}
    base = frames["PEFT (>= 0.26)"]
    assert len(base) == len(W.unet_linears(family)) + sum(
        4 * layers for _, _, layers, _, _ in W.UNET_FAMILIES[family]["te"])
    for writer, frame in frames.items():
        assert frame.attrs["unmatched"] == [], writer
        pd.testing.assert_frame_equal(frame[SAME], base[SAME], check_exact=False, rtol=1e-5,
                                      obj=writer)


@pytest.mark.parametrize(("builder", "base"), [
    (lambda: W.lora_attn_processor("sd21", prefix=""), "sd2"),
    (lambda: W.lora_compatible("sdxl", doubled=True), "sdxl"),
    (lambda: W.lora_attn_processor("sdxl"), "sdxl"),
])
def test_diffusers_era_files_are_identified_and_every_key_matched(tmp_path, builder, base):
    sd, meta = builder()
    path = W.write_safetensors(tmp_path / "pytorch_lora_weights.safetensors", sd, meta)
    assert lk.open_model(path).identity.base == base
    frame = lk.lora.read(path)
    assert frame.attrs["unmatched"] == [] and 2 * len(frame) == len(sd)


def test_an_attention_processor_lora_pickled_as_bin_reads_like_its_safetensors(tmp_path):
    sd, meta = W.lora_attn_processor("sd15")
    pickled = table_of(W.write_torch(tmp_path / "pytorch_lora_weights.bin", sd))
    safe = table_of(W.write_safetensors(tmp_path / "pytorch_lora_weights.safetensors", sd, meta))
    pd.testing.assert_frame_equal(pickled[SAME], safe[SAME])


FLUX_FILES = {
    "diffusers/PEFT": lambda: W.flux_lora_diffusers(full=True),
    "ai-toolkit (transformer.)": lambda: W.flux_lora_aitoolkit(),
    "ai-toolkit (diffusion_model.)": lambda: W.flux_lora_aitoolkit(prefix="diffusion_model."),
    "kohya": lambda: W.flux_lora_kohya(),
    "ComfyUI": lambda: W.flux_lora_comfy(),
    "XLabs": lambda: W.flux_lora_xlabs(),
}


def written(tmp_path, name, builder):
    sd, meta = builder()
    return W.write_safetensors(tmp_path / f"{name.split()[0].replace('/', '_')}.safetensors", sd, meta), sd


@pytest.mark.parametrize("writer", FLUX_FILES)
def test_flux_loras_of_every_writer_read_against_the_flux_module_map(tmp_path, writer):
    path, sd = written(tmp_path, writer, FLUX_FILES[writer])
    frame = lk.lora.read(path)
    assert (frame.attrs["base"], frame.attrs["family"], frame.attrs["unmatched"]) == ("flux", "flux", [])
    assert set(frame["block"]) == {f"D{n:02d}" for n in W.FLUX_DOUBLE} | {f"S{n:02d}" for n in W.FLUX_SINGLE}
    assert len(frame) == sum(k.endswith(("lora_A.weight", "lora_down.weight", "down.weight")) for k in sd)


@pytest.mark.parametrize(("one", "other"), [("ai-toolkit (transformer.)", "ai-toolkit (diffusion_model.)"),
                                            ("kohya", "ComfyUI")])
def test_the_same_flux_weights_in_two_writers_styles_read_to_one_table(tmp_path, one, other):
    frames = [table_of(written(tmp_path / w, w, FLUX_FILES[w])[0]) for w in (one, other)]
    pd.testing.assert_frame_equal(frames[0][SAME], frames[1][SAME])


def test_an_sd35_large_lora_with_both_clip_encoders_reads_to_joint_blocks_and_base(tmp_path):
    path, sd = written(tmp_path, "sd35", lambda: W.sd3_lora("sd35_large", te=True))
    frame = lk.lora.read(path)
    assert (frame.attrs["base"], frame.attrs["unmatched"]) == ("sd3", [])
    assert set(frame["block"]) == {"BASE", "J00", "J19", "J37"}
    assert set(frame.loc[frame.block == "BASE", "component"]) == {"text_encoder", "text_encoder_2"}


def test_a_lora_no_known_family_fits_is_read_against_no_model(tmp_path):
    g = W._gen(0)
    sd = W.emit([("encoder.blocks.0.mixer", 96, 96, 0)], "peft", "backbone.", 4, g, W.torch.float32)
    frame = lk.lora.read(W.write_safetensors(tmp_path / "other.safetensors", sd))
    assert frame.attrs["family"] == "no known family" and len(frame) == 0
    assert "no family the lab knows" in frame.attrs["note"]
    assert sorted(frame.attrs["unmatched"]) == sorted(sd)


def test_a_peft_save_pretrained_folder_reads_rank_and_alpha_patterns_from_its_config(tmp_path):
    sd, config = W.peft_adapter("unet", "sd15", key_prefix="base_model.model.")
    frame = lk.lora.read(W.write_peft_folder(tmp_path / "adapter", sd, config))
    odd = frame.set_index("module").loc["mid_block.attentions.0.transformer_blocks.0.attn1.to_q"]
    assert (odd["rank"], odd["alpha"], odd["scale"]) == (8, 4.0, 0.5)
    rest = frame[frame.module != odd.name]
    assert set(rest["scale"]) == {1.0} and frame.attrs["unmatched"] == []


@pytest.mark.parametrize(("target", "prefix", "component"), [
    ("text_encoder", "", "text_encoder"), ("unet", "", "unet"), ("unet", "base_model.model.", "unet")])
def test_a_peft_folder_without_component_prefix_is_placed_by_its_module_names(tmp_path, target, prefix,
                                                                               component):
    sd, config = W.peft_adapter(target, "sd15", key_prefix=prefix, adapter_name="default", dora=True)
    frame = lk.lora.read(W.write_peft_folder(tmp_path / "adapter", sd, config, safe=False))
    assert set(frame["component"]) == {component} and set(frame["kind"]) == {"dora"}
    assert frame.attrs["unmatched"] == []


def test_kohya_sd3_and_flux_text_encoder_names_read_to_their_modules(tmp_path):
    g, f32 = W._gen(0), W.torch.float32
    sd3 = W.emit([(f"joint_blocks.{n}.{side}.attn.qkv", 1536, 3 * 1536, 0) for n in (0, 23)
                  for side in ("x_block", "context_block")], "kohya", "lora_unet.", 4, g, f32, alpha=2.0)
    frame = lk.lora.read(W.write_safetensors(tmp_path / "sd3_kohya.safetensors", sd3))
    assert (frame.attrs["base"], frame.attrs["unmatched"], sorted(set(frame.block))) == ("sd3", [], ["J00", "J23"])
    assert set(frame["scale"]) == {0.5}
    flux, _ = W.flux_lora_kohya()
    flux |= W.emit(W.te_linears(1, 768), "kohya", "lora_te1.", 4, g, W.torch.bfloat16, alpha=1.0)
    flux |= W.emit([("encoder.block.0.layer.0.SelfAttention.q", 4096, 4096, 0)], "kohya", "lora_te3.", 4, g,
                   W.torch.bfloat16, alpha=1.0)
    frame = lk.lora.read(W.write_safetensors(tmp_path / "flux_kohya_te.safetensors", flux))
    assert frame.attrs["unmatched"] == []
    assert set(frame.loc[frame.block == "BASE", "component"]) == {"text_encoder", "text_encoder_2"}


def test_lycoris_wrapper_names_read_like_kohyas(tmp_path):
    tables = []
    for prefix in ("lycoris.", "lora_unet."):
        sd = W.emit(W.unet_linears("sd15"), "kohya", prefix, 4, W._gen(0), W.torch.float32)
        tables.append(table_of(W.write_safetensors(tmp_path / f"{prefix}safetensors", sd)))
    assert tables[0].attrs["unmatched"] == [] and len(tables[0]) == len(W.unet_linears("sd15"))
    pd.testing.assert_frame_equal(tables[0][SAME], tables[1][SAME])


def test_peft_dreambooth_output_with_unet_and_text_encoder_folders_reads_as_one_adapter(tmp_path):
    for target in ("unet", "text_encoder"):
        sd, config = W.peft_adapter(target, "sd15", seed=1 if target == "unet" else 2)
        W.write_peft_folder(tmp_path / "out" / target, sd, config)
    model = lk.open_model(tmp_path / "out")
    assert (model.identity.kind, model.identity.base) == ("lora", "sd1")
    frame = lk.lora.read(tmp_path / "out")
    assert set(frame["component"]) == {"unet", "text_encoder"} and frame.attrs["unmatched"] == []
    odd = frame.set_index("module").loc[["mid_block.attentions.0.transformer_blocks.0.attn1.to_q",
                                         "encoder.layers.11.self_attn.q_proj"], ["rank", "scale"]]
    assert odd.values.tolist() == [[8, 0.5], [8, 0.5]]


def test_a_lora_whose_names_fit_but_widths_do_not_is_read_against_a_real_family_not_the_demo(tmp_path):
    odd = [(m, 24, 24, k) for m, _, _, k in W.unet_linears("sd15")]
    sd = W.emit(odd, "kohya", "lora_unet.", 4, W._gen(0), W.torch.float32)
    frame = lk.lora.read(W.write_safetensors(tmp_path / "odd.safetensors", sd))
    assert (frame.attrs["base"], frame.attrs["family"], len(frame)) == ("unknown", "sd1", len(odd))
