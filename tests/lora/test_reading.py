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
