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


def test_the_spectrum_legend_fits_under_the_plot_and_names_each_kind():
    from labkit.stats.figures import to_png

    long = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.and.a.long.tail.of.names"
    fig = P.spectrum_figure({f"{kind}: {long}": [3.0, 1.0] for kind in ("LoRA", "LoHa", "LoKr")})
    to_png(fig)  # lays the figure out
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert [t.split(":")[0] for t in texts] == ["LoRA", "LoHa", "LoKr"]
    assert all(t.endswith("to_k.and.a.long.tail.of.names") and len(t) <= P.LEGEND_CHARS
               for t in texts)
    box, figure = legend.get_window_extent(), fig.bbox
    assert box.x0 >= figure.x0 and box.x1 <= figure.x1 and box.y0 >= figure.y0
    assert box.y1 <= fig.axes[0].get_window_extent().y0  # under the plot, not over the lines


def test_a_legend_label_keeps_its_lead_and_end():
    assert P.legend_label("LoRA: short") == "LoRA: short"
    label = P.legend_label("LoKr: " + "a.b." * 40 + "to_q", max_chars=40)
    assert label.startswith("LoKr: ") and label.endswith("to_q") and len(label) <= 40


def test_a_lokr_of_whole_factors_has_the_rank_of_its_kron_not_nan():
    import torch

    from labkit import lora, zoo
    from labkit.lora.anatomy import scale_of

    whole = {"lokr_w1": torch.zeros(2, 2), "lokr_w2": torch.zeros(16, 16, 1, 1),
             "alpha": torch.tensor(8.0)}
    assert scale_of("lokr", whole) == (32, 8.0, 1.0)  # alpha ignored, as LyCORIS does
    frame = lora.read(zoo.path("demo_lokr_twotone"))
    assert frame["rank"].notna().all() and frame["rank"].iloc[0] == 32
    assert "nan" not in P.rank_alpha(frame)["rank"].tolist()
