"""Every writer's LoRA key style rewritten to one canonical spelling."""

import pytest

from labkit.identify.adapter_styles import (
    canonical_key,
    canonical_table,
    looks_like_adapter,
    writer_styles,
)
from labkit.tensors import TensorInfo

UNET_ATTN = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
TE_ATTN = "text_model.encoder.layers.0.self_attn"


@pytest.mark.parametrize(("key", "canonical"), [
    (f"unet.{UNET_ATTN}.processor.to_q_lora.down.weight", f"unet.{UNET_ATTN}.to_q.lora_down.weight"),
    (f"unet.{UNET_ATTN}.processor.to_out_lora.up.weight", f"unet.{UNET_ATTN}.to_out.0.lora_up.weight"),
    (f"{UNET_ATTN}.processor.to_k_lora.down.weight", f"unet.{UNET_ATTN}.to_k.lora_down.weight"),
    (f"text_encoder.{TE_ATTN}.to_v_lora.up.weight", f"text_encoder.{TE_ATTN}.v_proj.lora_up.weight"),
    (f"unet.{UNET_ATTN}.to_q.lora.down.weight", f"unet.{UNET_ATTN}.to_q.lora_down.weight"),
    (f"unet.unet.{UNET_ATTN}.to_q.lora.up.weight", f"unet.{UNET_ATTN}.to_q.lora_up.weight"),
    (f"text_encoder.{TE_ATTN}.q_proj.lora_linear_layer.down.weight",
     f"text_encoder.{TE_ATTN}.q_proj.lora_down.weight"),
    (f"base_model.model.{UNET_ATTN}.to_q.lora_A.weight", f"unet.{UNET_ATTN}.to_q.lora_A.weight"),
    (f"base_model.model.{TE_ATTN}.q_proj.lora_B.default.weight",
     f"text_encoder.{TE_ATTN}.q_proj.lora_B.weight"),
    (f"{UNET_ATTN}.to_q.lora_magnitude_vector.default.weight",
     f"unet.{UNET_ATTN}.to_q.lora_magnitude_vector"),
    ("double_blocks.3.processor.qkv_lora2.down.weight", "double_blocks.3.txt_attn.qkv.lora_down.weight"),
    ("single_blocks.7.processor.proj_lora.up.weight", "single_blocks.7.linear2.lora_up.weight"),
    ("diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight",
     "double_blocks.0.img_attn.qkv.lora_down.weight"),
    ("diffusion_model.single_transformer_blocks.0.attn.to_q.lora_A.weight",
     "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight"),
    ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
     "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"),
])
def test_each_writer_key_reads_in_the_canonical_spelling(key, canonical):
    assert canonical_key(key).key == canonical


def test_a_bare_text_encoder_key_1280_wide_is_sdxls_second_encoder():
    table = {f"{TE_ATTN}.q_proj.lora_A.weight": TensorInfo((4, 1280), "F32"),
             f"{TE_ATTN}.q_proj.lora_B.weight": TensorInfo((1280, 4), "F32")}
    assert {k.split(".")[0] for k in canonical_table(table)} == {"text_encoder_2"}
    table = {k: TensorInfo(tuple(768 if d == 1280 else d for d in v.shape), "F32") for k, v in table.items()}
    assert {k.split(".")[0] for k in canonical_table(table)} == {"text_encoder"}


def test_writer_styles_counts_each_style_and_the_untouched_keys():
    table = {f"unet.{UNET_ATTN}.processor.to_q_lora.down.weight": TensorInfo((4, 320), "F32"),
             f"unet.{UNET_ATTN}.to_q.lora_A.weight": TensorInfo((4, 320), "F32")}
    styles = writer_styles(table)
    assert styles["diffusers attention processor (<= 0.20)"] == 1 and styles["canonical"] == 1


def test_a_checkpoints_keys_are_told_no_adapter_before_any_rewrite():
    from tests.fixtures.layout_files import load_layout

    assert not looks_like_adapter(load_layout("sdxl_base"))
    assert looks_like_adapter(load_layout("sdxl_lora_kohya"))
    assert looks_like_adapter(["double_blocks.0.processor.qkv_lora1.down.weight", "x.diff", "y.alpha"])


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9])
def test_the_half_scan_tells_what_counting_every_key_tells(n):
    """looks_like_adapter stops once too few keys are left to reach half: never another answer."""
    hint, plain = "lora_unet_x.lora_down.weight", "model.diffusion_model.x.weight"
    for hits in range(n + 1):
        for keys in ([hint] * hits + [plain] * (n - hits), [plain] * (n - hits) + [hint] * hits):
            assert looks_like_adapter(keys) == (2 * hits >= n), (hits, keys)
    assert not looks_like_adapter([])


def test_a_newline_inside_a_key_neither_hides_nor_makes_an_adapter():
    """The half-scan searches the keys joined by newlines: a key holding one must not fool it."""
    plain = "model.diffusion_model.x.weight"
    assert looks_like_adapter(["unet.x.alpha", "unet.y.diff_b", plain])
    assert not looks_like_adapter(["x.alpha\nwhatever", "y.diff\nz", plain])  # no key ends so
    assert looks_like_adapter(["x.weight\nlora", "y.dora_scale", plain])
