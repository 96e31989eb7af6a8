"""The surgery reports as tables and figures, on the demo model: a merge's alphas per block, a
bake's change per block, an energy report's worst modules; and the demo variant and preview."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure

from labkit import surgery, zoo
from labkit.surgery import figures as F
from labkit.surgery.demo import (
    FINETUNE_NAME,
    FINETUNE_UNET,
    VARIANT_NAME,
    outlined_finetune,
    preview,
    striped_variant,
)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("surgery-figures")


@pytest.fixture(scope="module")
def variant(work):
    return striped_variant(work)


def test_the_variant_is_the_demo_lora_baked_and_made_once(work, variant):
    assert variant == work / VARIANT_NAME and variant.exists()
    stamp = variant.stat().st_mtime_ns
    assert striped_variant(work) == variant and variant.stat().st_mtime_ns == stamp
    from labkit import open_model
    assert surgery.recipe_of(open_model(variant).metadata)["operation"] == "bake"


def test_the_fine_tune_is_the_base_with_the_zoos_tuned_unet_made_once(work):
    import torch
    from safetensors.torch import load_file

    from labkit import open_model

    tuned = outlined_finetune(work)
    assert tuned == work / FINETUNE_NAME
    stamp = tuned.stat().st_mtime_ns
    assert outlined_finetune(work) == tuned and tuned.stat().st_mtime_ns == stamp
    model = open_model(tuned)
    assert (model.kind, model.base) == ("checkpoint", "demo_sd1")
    whole, base = load_file(str(tuned)), load_file(str(zoo.path("demo_sd1_single")))
    unet = load_file(str(zoo.path(FINETUNE_UNET)))
    assert set(whole) == set(base)
    assert all(torch.equal(whole[k], unet[k] if k in unet else base[k]) for k in base)
    assert any(not torch.equal(unet[k], base[k]) for k in unet)


def test_merge_tables_and_alpha_figure(work, variant):
    report = surgery.merge(zoo.path("demo_sd1_single"), variant, alpha=0.3, blocks="OUT*=1",
                           out=work / "m.safetensors", progress=False, hashes=False)
    actions = F.merge_actions(report)
    assert dict(zip(actions["action"], actions["keys"], strict=True)) == {"merged": 588, "integer": 1}
    assert "copied from A" in actions.set_index("action").loc["integer", "what merge did"]
    fig = F.block_alpha_figure(report)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "BASE" and labels.index("IN00") < labels.index("MID") < labels.index("OUT00")
    heights = dict(zip(labels, (p.get_height() for p in ax.patches), strict=True))
    assert heights["OUT03"] == 1.0 and heights["IN02"] == pytest.approx(0.3)


def test_bake_blocks_in_unet_order_and_figure_in_percent(work):
    report = surgery.bake(zoo.path("demo_sd1_single"), zoo.path("demo_lora_striped"),
                          out=work / "b.safetensors", strength=0.5, progress=False, hashes=False)
    table = F.bake_blocks(report)
    assert table["modules"].sum() == len(report)
    assert table["block"].iloc[0] == "BASE" and table["block"].iloc[-1].startswith("OUT")
    ax = F.bake_figure(report).axes[0]
    median = report[report["block"] == "MID"]["relative_change"].median()
    mid = [t.get_text() for t in ax.get_xticklabels()].index("MID")
    assert ax.patches[mid].get_height() == pytest.approx(median * 100)


def test_energy_table_and_figure_show_the_worst_modules_first(work, variant):
    report = surgery.extract_lora(zoo.path("demo_sd1_single"), variant, rank=2,
                                  out=work / "e.safetensors", progress=False, hashes=False)
    table = F.energy_table(report)
    assert "singular_values" not in table and table["energy_kept"].is_monotonic_increasing
    fig = F.energy_figure(report)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.patches) == min(len(report), F.MAX_BARS)
    assert ax.patches[0].get_width() == pytest.approx(report["energy_kept"].min())
    assert f"{F.MAX_BARS} worst of {len(report)}" in ax.get_title()
    first = ax.get_yticklabels()[0].get_text()
    worst = report.loc[report["energy_kept"].idxmin()]
    assert first.startswith(worst["block"]) and worst["module"].endswith(first.split()[-1])


def test_a_small_report_has_no_worst_of_note():
    frame = pd.DataFrame({"module": ["unet.a.b.c"], "block": ["IN00"], "energy_kept": [0.5]})
    assert F.energy_figure(frame).axes[0].get_title() == "Energy kept per module"


def test_preview_is_the_same_picture_for_the_same_seed_and_a_lora_changes_it():
    model, lora = zoo.path("demo_sd1_single"), zoo.path("demo_lora_striped")
    one, again = preview(model, steps=2), preview(model, steps=2)
    assert one.size == (64, 64) and one.tobytes() == again.tobytes()
    assert preview(model, lora, steps=2).tobytes() != one.tobytes()
