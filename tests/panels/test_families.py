"""The families panel driven from Python: two pickers (a key table, a demo file, a typed path),
the comparison, the verdict, each model's parts and the parameters figure; errors in the red box."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

import labkit as lk
from labkit import zoo
from labkit.panels.common import PATH_CHOICE
from labkit.panels.families import TABLE, FamiliesPanel, model_options

PNG = b"\x89PNG\r\n\x1a\n"
DEMO_VERDICT = "A demo_sd1 LoRA does not fit demo_sdxl: context 32 vs 80, lora_te_ vs lora_te1_/lora_te2_."


@pytest.fixture
def panel() -> FamiliesPanel:
    return FamiliesPanel("demo_sd1_single", "demo_sdxl_single")


def shown(panel: FamiliesPanel) -> str:
    return " ".join(w.value for w in (panel.verdict, panel.table, *panel.parts))


def test_the_panel_is_registered_and_offers_tables_and_demo_files():
    assert isinstance(lk.panels.families_panel(), widgets.Widget)
    values = [value for _, value in model_options()]
    assert TABLE + "sdxl_base" in values and TABLE + "flux_dev" in values
    assert {"demo_sd1", "demo_sdxl_single", "demo_lora_striped", "demo_loha_outlined"} <= set(values)
    labels = dict((v, k) for k, v in model_options())
    assert labels[TABLE + "sdxl_base"] == "SDXL (key table)"
    assert labels["demo_lora_striped_xl"] == "demo_lora_striped_xl (demo_sdxl)"


def test_two_demo_checkpoints_side_by_side(panel, output_dir):
    assert panel.error.value == ""
    assert DEMO_VERDICT in panel.verdict.value
    for text in ("demo_sd1_single", "demo_sdxl_single", "CLIP 32 + OpenCLIP 48",
                 "conditioner.embedders.1.model.", "cond_stage_model.transformer.text_model.",
                 "context width", "size/crop numbers"):
        assert text in panel.table.value
    left, right = (part.value for part in panel.parts)
    assert "text encoder 2" not in left and "text encoder 2" in right
    assert "<b>demo_sd1_single</b>" in left and "hidden width" in left and "1.11M" in left
    assert bytes(panel.figure.value).startswith(PNG) and panel.figure.layout.display == ""
    (output_dir / "families_panel_figure.png").write_bytes(bytes(panel.figure.value))


def test_picking_a_key_table_or_an_adapter_updates_everything(panel):
    before = bytes(panel.figure.value)
    panel.b.choice.value = TABLE + "sdxl_base"
    assert ("A demo_sd1 LoRA does not fit sdxl: context 32 vs 2048, lora_te_ vs "
            "lora_te1_/lora_te2_.") in panel.verdict.value
    assert "<th>SDXL</th>" in panel.table.value and "OpenCLIP 1280" in panel.table.value
    assert bytes(panel.figure.value).startswith(PNG) and bytes(panel.figure.value) != before
    panel.a.choice.value = "demo_lora_striped_xl"
    assert "This demo_sdxl LoRA does not fit sdxl: context 80 vs 2048" in panel.verdict.value
    assert "lora_te2_" in panel.table.value
    panel.b.choice.value = "demo_sdxl"
    assert "Both are demo_sdxl: this demo_sdxl LoRA fits." in panel.verdict.value


def test_key_table_names_preselect_and_a_same_pair_is_told_apart():
    panel = FamiliesPanel("sd3_medium", "flux_dev")
    assert panel.a.choice.value == TABLE + "sd3_medium" and panel.a.path.value == ""
    assert "MMDiT transformer vs Flux transformer" in panel.verdict.value
    panel.b.choice.value = TABLE + "sd3_medium"
    assert "A: SD3 medium" in panel.table.value and "B: SD3 medium" in panel.table.value
    assert "Both are sd3" in panel.verdict.value


def test_a_typed_path_wins_and_a_picked_model_clears_it(panel):
    panel.b.path.value = str(zoo.path("demo_lora_striped"))
    assert "striped_lora.safetensors" in panel.table.value
    assert "Both are demo_sd1: this demo_sd1 LoRA fits." in panel.verdict.value
    panel.b.choice.value = TABLE + "sd15"
    assert panel.b.path.value == "" and "<th>SD 1.5</th>" in panel.table.value


def test_a_bad_path_gives_the_red_box_not_a_traceback(panel, tmp_path):
    missing = tmp_path / "missing.safetensors"
    panel.a.path.value = str(missing)
    assert "labkit-error" in panel.error.value
    assert "missing.safetensors: no such file or folder" in panel.error.value
    assert shown(panel).strip() == "" and panel.figure.value == b""
    assert panel.figure.layout.display == "none"
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    panel.a.path.value = str(junk)
    assert "junk.safetensors" in panel.error.value and shown(panel).strip() == ""
    panel.a.choice.value = "demo_sd1"  # back to a demo file: the path and the error go
    assert panel.error.value == "" and panel.a.path.value == ""
    assert DEMO_VERDICT in panel.verdict.value


def test_the_path_choice_without_a_path_asks_for_one(panel):
    panel.b.choice.value = PATH_CHOICE
    assert "no model chosen" in panel.error.value and "type the path" in panel.error.value
    panel.b.path.value = str(zoo.path("demo_sdxl_single"))
    assert panel.error.value == "" and DEMO_VERDICT in panel.verdict.value


def test_compare_redraws_and_embeddings_show_without_a_figure(panel):
    panel.verdict.value, panel.figure.value = "", b""
    panel.compare.click()
    assert DEMO_VERDICT in panel.verdict.value and bytes(panel.figure.value).startswith(PNG)
    panel.a.path.value = str(zoo.path("demo_ti_checker_xl"))
    panel.b.path.value = str(zoo.path("demo_ti_checker_kohya"))
    assert panel.error.value == "" and "textual_inversion" in panel.table.value
    assert panel.figure.value == b"" and panel.verdict.value == ""
