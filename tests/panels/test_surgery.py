"""The surgery panel driven from Python: each operation run on the demo model into the panel's
temporary folder, its report, figure and pictures shown; the inputs each operation takes; errors
in the red box; the sources never touched."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

import labkit as lk
from labkit import zoo
from labkit.panels.common import png_size
from labkit.panels.surgery import CELL_PX, FINETUNE, VARIANT, SurgeryPanel
from labkit.surgery.demo import FINETUNE_NAME

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def panel() -> SurgeryPanel:
    panel = SurgeryPanel()
    panel.pictures.value = False  # pictures are checked once, below: a CPU draws slowly
    return panel


def shown(widget: widgets.Widget) -> bool:
    return widget.layout.display != "none"


def test_the_panel_is_registered_and_starts_with_merge_and_nothing_shown():
    assert isinstance(lk.panels.surgery_panel(), widgets.Widget)
    panel = SurgeryPanel()
    assert panel.operation.value == "merge" and panel.b.choice.value == VARIANT
    assert panel.report.value == "" and panel.figure.layout.display == "none"
    assert panel.images.layout.display == "none"  # no broken image before the first run
    assert shown(panel.a.widget) and shown(panel.b.widget) and not shown(panel.c.widget)
    assert not shown(panel.lora.widget) and not shown(panel.strength)


def test_each_operation_shows_only_its_inputs(panel):
    panel.mode.value = "add_difference"
    assert shown(panel.c.widget)
    panel.mode.value = "weighted"
    panel.operation.value = "bake"
    assert shown(panel.lora.widget) and shown(panel.strength) and not shown(panel.b.widget)
    panel.operation.value = "extract"
    assert panel.a.choice.description == "Base" and panel.b.choice.description == "Tuned"
    assert shown(panel.groups["rank"][0]) and not shown(panel.lora.widget)
    panel.operation.value = "resize"
    assert shown(panel.lora.widget) and not shown(panel.b.widget)
    panel.operation.value = "merge"


def test_merge_with_the_baked_variant_shows_report_and_block_alphas(panel):
    source = zoo.path("demo_sd1_single")
    before = source.stat().st_mtime_ns
    panel.operation.value, panel.alpha.value, panel.blocks.value = "merge", 0.25, "OUT*=1"
    panel.run.click()
    assert panel.error.value == "", panel.error.value
    assert "Done in" in panel.status.value and not panel.run.disabled
    assert str(panel.folder) in panel.report.value and "merge_" in panel.report.value
    assert "<td>merged</td>" in panel.report.value and "<td>588</td>" in panel.report.value
    assert bytes(panel.figure.value).startswith(PNG) and panel.figure.layout.display == ""
    assert (panel.folder / "demo_sd1_striped.safetensors").exists()
    assert source.stat().st_mtime_ns == before  # sources never written
    outputs = sorted(panel.folder.glob("merge_*.safetensors"))
    report = lk.surgery.recipe_of(lk.open_model(outputs[-1]).metadata)
    assert report["operation"] == "merge" and report["parameters"]["blocks"] == "OUT*=1"


def test_bake_extract_and_resize_each_write_a_new_file(panel, output_dir):
    seen = {}
    for op, table_text in (("bake", "median change"), ("extract", "energy_kept"),
                           ("resize", "energy_kept")):
        panel.operation.value = op
        panel.run.click()
        assert panel.error.value == "", (op, panel.error.value)
        assert table_text in panel.report.value, op
        assert bytes(panel.figure.value).startswith(PNG)
        seen[op] = bytes(panel.figure.value)
        (output_dir / f"surgery_panel_{op}_figure.png").write_bytes(seen[op])
    assert len(set(seen.values())) == 3
    assert len(list(panel.folder.glob("*_*.safetensors"))) >= 4


def test_resize_with_a_dynamic_rule_and_rank_one_keeps_less(panel):
    panel.operation.value = "resize"
    panel.rank.value, panel.dynamic.value = 1, "fixed rank"
    panel.run.click()
    assert "<td>1</td>" in panel.report.value
    panel.rank.value, panel.dynamic.value, panel.ratio.value = 8, "sv_fro", 0.5
    panel.run.click()
    assert panel.error.value == "" and "sv_fro" not in panel.error.value
    panel.dynamic.value = "fixed rank"


def test_model_b_offers_the_fine_tune_beside_the_baked_variant(panel):
    options = list(panel.b.choice.options)
    assert options[:2] == [(VARIANT, VARIANT), (FINETUNE, FINETUNE)]
    panel.operation.value, panel.rank.value = "extract", 4
    panel.b.choice.value = FINETUNE
    assert panel.model_b() == panel.folder / FINETUNE_NAME
    panel.run.click()
    assert panel.error.value == "", panel.error.value
    assert "energy_kept" in panel.report.value and "extract_" in panel.report.value
    panel.b.choice.value, panel.operation.value = VARIANT, "merge"


def test_errors_go_to_the_red_box(panel, tmp_path):
    panel.operation.value = "merge"
    panel.b.choice.value = "demo_sdxl_single"
    panel.run.click()
    assert "labkit-error" in panel.error.value and "demo_sdxl" in panel.error.value
    assert panel.report.value == "" and panel.figure.layout.display == "none"
    assert panel.status.value == "" and not panel.run.disabled
    panel.b.choice.value = VARIANT
    panel.blocks.value = "NOPE=1"
    panel.run.click()
    assert "names no block" in panel.error.value
    panel.blocks.value = ""
    panel.operation.value = "bake"
    panel.lora.path.value = str(tmp_path / "missing.safetensors")
    panel.run.click()
    assert "missing.safetensors" in panel.error.value
    panel.lora.path.value = ""


def test_pictures_show_the_sources_and_the_result_at_their_size(output_dir):
    panel = SurgeryPanel(operation="bake")
    panel.run.click()
    assert panel.error.value == "", panel.error.value
    png = bytes(panel.images.value)
    (output_dir / "surgery_panel_bake_pictures.png").write_bytes(png)
    width, height = png_size(png)
    assert width == 2 * CELL_PX and height > CELL_PX  # two cells and a label band
    assert panel.images.layout.width == f"{width}px" and "Pictures" in panel.status.value
