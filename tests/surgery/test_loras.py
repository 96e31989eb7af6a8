"""Where a diffusers module sits in a single file, kohya's layout per family, the energy report."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from labkit.identify import layouts
from labkit.surgery.loras import Place, energy_summary, family_layout, place, rows_of


def test_modules_map_to_their_original_keys_and_fused_thirds():
    assert place("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                 layouts.SD1) == Place(
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight")
    assert place("text_encoder", "encoder.layers.3.mlp.fc1", layouts.SD1).key == (
        "cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight")
    k = place("text_encoder_2", "text_model.encoder.layers.2.self_attn.k_proj", layouts.SDXL)
    assert k == Place("conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight", 1)


def test_rows_of_a_fused_tensor_are_a_view_of_its_third():
    fused = torch.arange(12.0).reshape(6, 2)
    middle = rows_of(Place("x", 1), fused)
    assert torch.equal(middle, fused[2:4])
    middle += 100
    assert float(fused[2, 0]) == 104.0  # a view: changing it changes the tensor
    assert rows_of(Place("x"), fused) is fused


def test_kohya_names_sdxl_style_unets_by_their_original_blocks_only():
    assert family_layout("sd1") is None and family_layout("demo_sd1") is None
    assert family_layout("sdxl") is not None and family_layout("demo_sdxl") is not None
    assert family_layout("flux") is None


def test_energy_summary_weights_modules_by_their_change():
    frame = pd.DataFrame({"rank": [2, 4], "energy_kept": [0.5, 1.0], "delta_norm": [1.0, 3.0]})
    summary = energy_summary(frame)
    assert summary["energy_kept_overall"] == pytest.approx((0.5 * 1 + 1.0 * 9) / 10)
    assert (summary["rank_min"], summary["rank_max"], summary["energy_kept_min"]) == (2, 4, 0.5)
    assert energy_summary(frame.iloc[:0]) == {"n_modules": 0}
