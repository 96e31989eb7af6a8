"""LoRA key tables: real kohya SD1.5 / SDXL LoRAs map completely to modules and SD blocks."""

from __future__ import annotations

from collections import Counter

import pytest

from labkit.lora import keys as K
from labkit.lora.reading import anatomy, delta_shape, match
from tests.fixtures.layout_files import load_layout, to_dora, to_full, to_loha, to_lokr

SD1_LBW = ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID",
           *(f"OUT{i:02d}" for i in range(3, 12))]
SDXL_LBW = ["BASE", "IN04", "IN05", "IN07", "IN08", "MID", *(f"OUT{i:02d}" for i in range(6))]


@pytest.mark.parametrize(("layout", "family", "blocks"), [
    ("sd15_lora_kohya", "sd1", SD1_LBW),
    ("sdxl_lora_kohya", "sdxl", SDXL_LBW),
])
def test_real_kohya_tables_map_completely(layout, family, blocks):
    table = load_layout(layout)
    adapter = match(table, K.family_targets(family))
    assert adapter.unmatched == [] and adapter.note == ""
    assert sum(len(m.keys) for m, _ in adapter.matched) == len(table)
    labels = Counter(t.block for _, t in adapter.matched)
    assert sorted(labels, key=blocks.index) == blocks  # the LoRA Block Weight lists: 17 and 12
    assert K.weight_blocks(K.family_targets(family)) == blocks


def test_sdxl_original_block_names_reach_the_diffusers_modules():
    targets = K.family_targets("sdxl")
    original = targets.lookup("lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k")
    diffusers = targets.lookup("lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k")
    assert original == diffusers
    assert original.module == "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k"
    assert original.block == "IN04"
    assert targets.lookup("lora_te2_text_model_encoder_layers_31_mlp_fc2").component == "text_encoder_2"


def test_peft_and_kohya_names_of_one_module_agree():
    targets = K.family_targets("sd1")
    kohya = targets.lookup("lora_te_text_model_encoder_layers_3_self_attn_q_proj")
    assert kohya == targets.lookup("text_encoder.text_model.encoder.layers.3.self_attn.q_proj")
    assert kohya.block == "BASE"
    assert targets.lookup("unet.up_blocks.3.attentions.2.proj_out").block == "OUT11"


@pytest.mark.parametrize("edit", [to_loha, lambda t: to_lokr(t, True), lambda t: to_lokr(t, False),
                                  to_full, to_dora])
def test_lycoris_forms_of_the_real_table_map_completely(edit):
    table = edit(load_layout("sd15_lora_kohya"))
    adapter = match(table, K.family_targets("sd1"))
    assert adapter.unmatched == []
    frame = anatomy(adapter, with_norms=False)
    assert len(frame) == 264 and frame["block"].ne("").all()


def test_delta_shapes_of_the_real_table_are_the_patched_weights():
    table = load_layout("sd15_lora_kohya")
    adapter = match(table, K.family_targets("sd1"))
    shapes = {t.module: delta_shape(m, table) for m, t in adapter.matched if t.component == "unet"}
    assert shapes["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"] == (320, 768)
    assert shapes["down_blocks.0.attentions.0.proj_in"] == (320, 320, 1, 1)
    lokr = to_lokr(table, True)
    m, _ = next(x for x in match(lokr, K.family_targets("sd1")).matched
                if x[1].module == "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj")
    assert delta_shape(m, lokr) == (10240, 1280)


def test_a_lora_for_another_family_says_which():
    sdxl = match(load_layout("sdxl_lora_kohya"), K.family_targets("sd1"))
    assert len(sdxl.unmatched) == 2958 and not sdxl.matched
    assert "264 modules are named as for SDXL (two text encoders" in sdxl.note
    assert "722 modules are named as for SDXL (original block names" in sdxl.note
    assert sdxl.note.endswith("this model is sd1.")
    sd1 = match(load_layout("sd15_lora_kohya"), K.family_targets("sdxl"))
    assert "72 modules are named as for SD1/SD2 (one text encoder" in sd1.note


def test_keys_group_by_module_and_role():
    modules, stray = K.group_keys(["a.lora_down.weight", "a.lora_up.weight", "a.alpha",
                                   "b.hada_w1_a", "b.hada_w1_b", "c.lokr_w1", "c.lokr_w2_b",
                                   "d.diff", "d.diff_b", "e.lora_A.weight", "e.dora_scale",
                                   "emb_params"])
    assert {m.prefix: m.kind for m in modules} == {"a": "lora", "b": "loha", "c": "lokr",
                                                   "d": "full", "e": "dora"}
    assert modules[0].keys == {"down": "a.lora_down.weight", "up": "a.lora_up.weight",
                               "alpha": "a.alpha"}
    assert stray == ["emb_params"]
