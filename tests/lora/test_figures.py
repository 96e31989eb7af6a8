"""The LoRA lab's figures and the tables under them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from labkit.lora import figures as P


def _frame():
    return pd.DataFrame({
        "module": ["a", "b", "c", "d"], "component": ["unet", "unet", "unet", "text_encoder"],
        "block": ["OUT03", "IN01", "IN01", "BASE"], "kind": ["lora"] * 4,
        "rank": [8, 8, 8, 4], "alpha": [4.0, 4.0, 4.0, 4.0], "scale": [0.5, 0.5, 0.5, 1.0],
        "delta_norm": [1.0, 3.0, 4.0, 2.0]})


def test_block_norms_are_in_unet_order_and_add_in_squares():
    table = P.block_norms(_frame())
    assert table["block"].tolist() == ["BASE", "IN01", "OUT03"]
    assert table.set_index("block").loc["IN01", "delta_norm"] == pytest.approx(5.0)
    assert table.set_index("block").loc["IN01", "modules"] == 2
    fig = P.block_norm_figure(_frame())
    assert len(fig.axes[0].patches) == 3


def test_rank_alpha_counts_modules_per_setting():
    table = P.rank_alpha(_frame())
    assert table.iloc[0][["rank", "alpha", "scale", "modules"]].tolist() == ["8", "4.0", "0.5", 3]
    assert len(P.rank_alpha_figure(_frame()).axes[0].patches) == 2


def test_spectrum_figure_draws_one_line_per_module():
    fig = P.spectrum_figure({"m1": [3.0, 1.0, 0.0], "m2": [2.0]})
    assert [len(line.get_xdata()) for line in fig.axes[0].lines] == [3, 1]


def test_training_metadata_table_and_tags():
    meta = {"ss_network_dim": "8", "ss_network_alpha": "4", "ss_output_name": "x",
            "ss_tag_frequency": json.dumps({"10_style": {"striped": 30, "circle": 12}})}
    assert set(P.training_table(meta)["key"]) == {"ss_network_dim", "ss_network_alpha"}
    ax = P.tag_figure(meta).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["striped", "circle"]
    assert "No tag" in P.tag_figure({}).axes[0].get_title()


def test_empty_anatomy_draws_empty_figures():
    empty = pd.DataFrame(columns=_frame().columns)
    assert P.block_norms(empty).empty and P.rank_alpha(empty).empty
    assert len(P.block_norm_figure(empty).axes[0].patches) == 0


def test_block_norms_put_text_encoders_first_then_a_transformers_blocks_in_order():
    frame = pd.DataFrame({"block": ["S00", "D09", "BASE", "D00", "S00"], "component":
                          ["transformer", "transformer", "text_encoder", "transformer", "transformer"],
                          "delta_norm": [3.0, 1.0, 1.0, 1.0, 4.0], "module": list("abcde")})
    table = P.block_norms(frame)
    assert list(table["block"]) == ["BASE", "D00", "D09", "S00"]
    assert table.set_index("block").loc["S00", "delta_norm"] == 5.0
