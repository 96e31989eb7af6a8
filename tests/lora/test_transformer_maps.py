"""The Flux and SD3 module maps LoRAs are read against, checked on the real layouts."""

import pytest

from labkit.lora import transformer_maps as T
from tests.fixtures.layout_files import load_layout


@pytest.mark.parametrize(("layout", "prefix", "blocks", "width"), [
    ("flux_dev", "", T.MAPS["flux"][2], 3072),
    ("sd3_medium", "model.diffusion_model.", T.MAPS["sd3_1536"][2], 1536),
])
def test_the_original_block_tables_are_the_real_files_weights(layout, prefix, blocks, width):
    real = {k[len(prefix):-len(".weight")]: v.shape for k, v in load_layout(layout).items()
            if k.startswith(prefix) and k.endswith(".weight") and len(v.shape) == 2}
    table = T.original_modules(blocks, width)
    last = f"joint_blocks.{blocks.get('joint_blocks', (0,))[0] - 1}.context_block."
    # SD3's last context block is pre-only: it has no attn.proj or mlp, and a 2x modulation.
    comparable = {m: s for m, s in table.items() if not m.startswith(last)}
    assert {m: real.get(m) for m in comparable} == comparable
    assert {m for m in real if m.startswith(tuple(blocks))} - set(table) == set()


@pytest.mark.parametrize(("name", "double", "single"), [("flux", 19, 38)])
def test_flux_map_names_every_block_in_both_namings(name, double, single):
    targets = T.transformer_targets(name)
    d = targets.lookup("transformer.transformer_blocks.18.attn.to_q")
    s = targets.lookup("lora_unet_single_blocks_37_linear1")
    assert (d.block, d.shape, s.block, s.shape) == ("D18", (3072, 3072), "S37", (7 * 3072, 3072))
    assert targets.lookup("double_blocks.0.img_attn.qkv").block == "D00"
    assert targets.lookup(f"transformer.transformer_blocks.{double}.attn.to_q") is None
    assert targets.lookup(f"single_blocks.{single}.linear1") is None
    assert targets.lookup("text_encoder.text_model.encoder.layers.0.self_attn.q_proj").block == "BASE"


def test_sd3_maps_follow_the_hidden_width():
    medium, large = T.transformer_targets("sd3_1536"), T.transformer_targets("sd3_2432")
    key = "transformer.transformer_blocks.0.attn.to_q"
    assert (medium.lookup(key).shape, large.lookup(key).shape) == ((1536, 1536), (2432, 2432))
    assert large.lookup("transformer.transformer_blocks.37.attn.to_q").block == "J37"
    assert medium.lookup("transformer.transformer_blocks.37.attn.to_q") is None


@pytest.mark.parametrize(("module", "family", "label"), [
    ("single_transformer_blocks.5.attn.to_q.", "flux", "S05"),
    ("double_blocks.12.txt_mlp.0.", "flux", "D12"),
    ("transformer_blocks.3.attn.add_q_proj.", "sd3_1536", "J03"),
    ("x_embedder.", "flux", ""),
])
def test_block_labels(module, family, label):
    assert T.block_of(module, family) == label
