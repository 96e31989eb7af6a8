"""labkit.lora.writing: one LoRA's weights in every writer's key style, read back to one table."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from labkit import lora, zoo
from labkit.errors import LabkitError
from labkit.identify import layouts
from labkit.lora import writing

TO_Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
TE_Q = "text_encoder.encoder.layers.0.self_attn.q_proj"
FF = "unet.mid_block.attentions.0.transformer_blocks.0.ff.net.2"


@pytest.mark.parametrize(("name", "style", "two", "down"), [  # the keys of /work/shared/FORMATS.md
    (TO_Q, "attention processor", False,
     "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight"),
    (TE_Q, "attention processor", False,
     "text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.down.weight"),
    ("unet.up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0", "LoRACompatibleLinear",
     False, "unet.up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0.lora.down.weight"),
    ("text_encoder.encoder.layers.11.self_attn.q_proj", "LoRACompatibleLinear", False,
     "text_encoder.text_model.encoder.layers.11.self_attn.q_proj.lora_linear_layer.down.weight"),
    (TE_Q, "PEFT", False, "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"),
    (TO_Q, "kohya", False,
     "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"),
    (TE_Q, "kohya", True, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"),
    ("text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj", "kohya", True,
     "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"),
])
def test_module_keys_are_the_writers_own(name, style, two, down):
    keys = writing.module_keys(name, style, two)
    assert keys["down"] == down
    assert ("alpha" in keys) == (style == "kohya")


def test_kohya_names_sdxl_unet_modules_by_their_original_blocks():
    keys = writing.module_keys("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
                               "kohya", True, layouts.SDXL)
    assert keys["up"] == "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight"


def test_the_processor_style_names_attention_projections_only():
    assert writing.can_name("attention processor", TO_Q)
    assert not writing.can_name("attention processor", FF)
    assert all(writing.can_name(s, FF) for s in ("kohya", "LoRACompatibleLinear", "PEFT"))
    with pytest.raises(LabkitError, match="no key for .*ff.net.2"):
        writing.module_keys(FF, "attention processor")


def part(rank=4, alpha=2.0, width=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return writing.LoraPart(torch.randn(rank, width, generator=g), torch.randn(width, rank, generator=g), alpha)


def test_a_style_without_alpha_carries_the_scale_in_up():
    p = part(alpha=2.0)
    kohya = writing.in_style({TO_Q: p}, "kohya")
    peft = writing.in_style({TO_Q: p}, "PEFT")
    k = writing.module_keys(TO_Q, "kohya")
    assert float(kohya[k["alpha"]]) == 2.0 and torch.equal(kohya[k["up"]], p.up)
    assert torch.allclose(peft[writing.module_keys(TO_Q, "PEFT")["up"]], p.up * 0.5)
    # no alpha given: alpha is the rank, scale 1
    bare = writing.in_style({TO_Q: p._replace(alpha=None)}, "kohya")
    assert float(bare[k["alpha"]]) == 4.0


@pytest.fixture(scope="module")
def demo_parts():
    adapter = lora.open_adapter(zoo.path("demo_lora_striped"))
    return writing.nameable(writing.adapter_parts(adapter), "attention processor")


SAME = ["component", "module", "block", "kind", "rank", "delta_norm", "eff_rank"]


def test_the_demo_lora_in_every_style_reads_to_one_table(demo_parts, tmp_path):
    frames = {}
    for style in writing.KEY_STYLES:
        path = writing.write_in_style(tmp_path / f"{style}.safetensors", demo_parts, style)
        frame = lora.read(path, "demo_sd1")
        assert frame.attrs["unmatched"] == [], style
        frames[style] = frame.sort_values("module").reset_index(drop=True)
        assert len(set(load_file(str(path)))) == len(demo_parts) * (3 if style == "kohya" else 2)
    first = frames["kohya"]
    assert len(first) == len(demo_parts) and first["scale"].iloc[0] == 0.5  # alpha 4, rank 8
    for style, frame in frames.items():
        pd.testing.assert_frame_equal(frame[SAME], first[SAME], check_exact=False, rtol=1e-5,
                                      obj=style)


def test_convert_rewrites_a_whole_file(tmp_path):
    source = zoo.path("demo_lora_striped")
    out = writing.convert(source, tmp_path / "peft.safetensors", "PEFT")
    assert all(".lora_A." in k or ".lora_B." in k for k in load_file(str(out)))
    before, after = (lora.read(p).sort_values("module").reset_index(drop=True) for p in (source, out))
    pd.testing.assert_frame_equal(after[SAME], before[SAME], check_exact=False, rtol=1e-5)
    with pytest.raises(LabkitError, match="no key for"):
        writing.convert(source, tmp_path / "old.safetensors", "attention processor")
    kept = writing.convert(source, tmp_path / "old.safetensors", "attention processor",
                           only_nameable=True)
    assert len(lora.read(kept)) < len(before)


def test_only_plain_lora_files_are_rewritten():
    with pytest.raises(LabkitError, match="not a down/up pair"):
        writing.adapter_parts(lora.open_adapter(zoo.path("demo_loha_outlined")))


def test_the_key_table_has_a_row_per_style_and_module():
    table = writing.key_table([TO_Q, FF])
    assert len(table) == 2 * len(writing.KEY_STYLES)
    row = table.set_index(["style", "module"])
    assert row.loc[("PEFT", TO_Q), "up"].endswith(".to_q.lora_B.weight")
    assert row.loc[("kohya", FF), "alpha"].startswith("lora_unet_mid_block_")
    assert row.loc[("attention processor", FF), "down"] == ""  # no name for a feed-forward
    assert row.loc[("LoRACompatibleLinear", TO_Q), "alpha"] == ""  # no alpha slot
