import math

import numpy as np
import pandas as pd
import pytest
import torch

from labkit.stats import figures as stats_plots
from labkit.stats import per_tensor as stats

ROWS = [  # name, component, block, dtype, numel, bytes, l2_norm
    ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "UNet",
     "IN01", "F16", 100, 200, 10.0),
    ("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", "UNet", "IN01", "F16", 400,
     800, 4.0),
    ("model.diffusion_model.middle_block.1.proj_in.weight", "UNet", "MID", "F32", 25, 100, 5.0),
    ("cond_stage_model.transformer.text_model.final_layer_norm.weight", "text encoder", "BASE",
     "F32", 16, 64, 4.0),
    ("first_stage_model.encoder.conv_in.weight", "VAE", "", "F32", 9, 36, 3.0),
]


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=["name", "component", "block", "dtype", "numel", "bytes",
                                       "l2_norm"])


def bar_widths(ax) -> list[float]:
    return [p.get_width() for p in ax.patches]


def test_component_figure_shows_params_and_bytes_by_dtype(table, output_dir):
    fig = stats_plots.component_figure(table)
    left, right = fig.axes[:2]
    assert sorted(bar_widths(left)) == pytest.approx(sorted([525 / 1e6, 16 / 1e6, 9 / 1e6]))
    assert {t.get_text() for t in right.get_legend().get_texts()} == {"F16", "F32"}
    assert sum(bar_widths(right)) == pytest.approx(1200 / 2**20)
    (output_dir / "stats_components.png").write_bytes(stats_plots.to_png(fig))


def test_block_figure_has_a_bar_per_block_in_unet_order(table):
    ax = stats_plots.block_figure(table).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["BASE", "IN01", "MID"]
    assert [p.get_height() for p in ax.patches] == pytest.approx([16e-6, 500e-6, 25e-6])


def test_heatmap_holds_the_rms_by_block_and_layer_kind(table):
    ax = stats_plots.norm_heatmap_figure(table).axes[0]
    data = ax.get_images()[0].get_array()
    norms = stats.block_norms(table)
    assert data.shape == norms.shape
    col = list(norms.columns).index("cross-attention")
    assert data[list(norms.index).index("IN01"), col] == pytest.approx(1.0)  # 10 / sqrt(100)


def test_histogram_counts_every_finite_value(output_dir):
    t = torch.cat([torch.randn(1000, generator=torch.Generator().manual_seed(1)),
                   torch.tensor([math.nan, math.inf])])
    fig = stats_plots.histogram_figure(t, "demo")
    ax = fig.axes[0]
    assert sum(np.asarray(p.get_data().values).sum() for p in ax.patches) == 1000
    assert "demo" in ax.get_title() and "1002" in ax.get_title()
    (output_dir / "stats_histogram.png").write_bytes(stats_plots.to_png(fig))
    flat = stats_plots.histogram_figure(torch.ones(3), "ones").axes[0]
    assert sum(np.asarray(p.get_data().values).sum() for p in flat.patches) == 3


def test_difference_figure_has_the_relative_difference_per_block():
    comparison = pd.DataFrame({
        "name": ["unet/down_blocks.0.attentions.0.proj_in.weight", "unet/mid_block.resnets.0.conv1.weight"],
        "block": ["IN01", "MID"], "status": ["different", "equal"],
        "l2_a": [2.0, 1.0], "l2_diff": [1.0, 0.0]})
    ax = stats_plots.difference_figure(comparison).axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.5, 0.0])
    assert [t.get_text() for t in ax.texts] == ["1"]


def test_difference_figure_promises_numbers_only_when_it_draws_some():
    close = pd.DataFrame({
        "name": ["unet/down_blocks.0.attentions.0.proj_in.weight"], "block": ["IN01"],
        "status": ["close"], "l2_a": [2.0], "l2_diff": [1e-4]})
    ax = stats_plots.difference_figure(close).axes[0]
    assert len(ax.texts) == 0 and "numbers" not in ax.get_title()
    changed = close.assign(status="different")
    assert "numbers" in stats_plots.difference_figure(changed).axes[0].get_title()
