from pathlib import Path

import ipywidgets as widgets
import pytest
import torch
from safetensors.torch import save_file

from labkit.panels import stats_panel
from labkit.panels.stats import StatsPanel

PNG = b"\x89PNG"
PROJ = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
NORM = "model.diffusion_model.input_blocks.1.0.in_layers.0.weight"
VAE = "first_stage_model.encoder.conv_in.weight"


def is_png(image: widgets.Image) -> bool:
    return bytes(image.value).startswith(PNG)


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path]:
    g = torch.Generator().manual_seed(0)
    tensors = {PROJ: torch.randn(8, 8, generator=g), NORM: torch.ones(8) * 3,
               VAE: torch.randn(4, 3, 3, 3, generator=g)}
    save_file(tensors, str(tmp_path / "a.safetensors"))
    changed = dict(tensors, **{PROJ: tensors[PROJ] * 2})
    save_file({k: v.half() for k, v in changed.items()}, str(tmp_path / "b.safetensors"))
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors"


def test_stats_panel_is_a_widget_and_waits_for_a_path():
    assert isinstance(stats_panel(), widgets.Widget)
    panel = StatsPanel()
    panel.compute.click()
    assert "Pick a demo file" in panel.count.value and panel.rows.value == ""


def test_compute_shows_the_table_and_a_histogram(files):
    panel = StatsPanel(str(files[0]))
    assert "3 of 3 tensors" in panel.count.value
    assert PROJ in panel.rows.value and "<table" in panel.rows.value
    assert panel.tensor.options == tuple(sorted([PROJ, NORM, VAE]))
    assert is_png(panel.histogram)
    assert "UNet" in panel.summary.value and is_png(panel.figures)
    before = bytes(panel.histogram.value)
    panel.tensor.value = NORM
    assert is_png(panel.histogram) and bytes(panel.histogram.value) != before
    assert NORM in panel.histogram_of.value


def test_filter_and_sort_drive_the_rows(files):
    panel = StatsPanel(str(files[0]))
    panel.filter.value = "first_stage"
    assert "1 of 3 tensors" in panel.count.value
    assert VAE in panel.rows.value and PROJ not in panel.rows.value
    assert panel.tensor.options == (VAE,)
    panel.filter.value = ""
    panel.sort.value = "mean"
    panel.ascending.value = False
    assert panel.tensor.options[0] == NORM  # mean 3 is the largest
    panel.ascending.value = True
    assert panel.tensor.options[-1] == NORM


def test_a_second_model_gives_the_comparison(files):
    panel = StatsPanel(str(files[0]), str(files[1]))
    assert "equal: 1, close: 1, different: 1" in panel.compare_count.value  # 3s are exact in fp16
    assert "unet/down_blocks.0.attentions.0.proj_in.weight" in panel.compare_rows.value
    assert is_png(panel.compare_figure)
    panel.filter.value = "vae"
    assert "proj_in" not in panel.compare_rows.value and "conv_in" in panel.compare_rows.value


def test_errors_go_to_the_red_box(files, tmp_path):
    panel = StatsPanel(str(tmp_path / "missing.safetensors"))
    assert "labkit-error" in panel.error.value and "missing.safetensors" in panel.error.value
    assert panel.rows.value == ""
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(files[0].read_bytes()[:-10])
    panel.a.path.value = str(cut)
    panel.compute.click()
    assert "labkit-error" in panel.error.value and "cut.safetensors" in panel.error.value
    panel.a.path.value, panel.b.path.value = str(files[0]), str(tmp_path / "nope.ckpt")
    panel.compute.click()
    assert "nope.ckpt" in panel.error.value and PROJ in panel.rows.value


def test_the_sdxl_single_file_against_its_folder():
    panel = StatsPanel()
    panel.a.demo.value, panel.b.demo.value = "demo_sdxl_single", "demo_sdxl"
    assert panel.a.path.value.endswith("demo_sdxl.safetensors")
    panel.compute.click()
    assert panel.error.value == ""
    assert "text encoder 2" in panel.summary.value and is_png(panel.figures)
    panel.filter.value = "conditioner.embedders.1"
    assert panel.tensor.options and all("conditioner.embedders.1" in n for n in panel.tensor.options)
    assert is_png(panel.histogram)
    counts = panel.compare_count.value
    assert "equal:" in counts and "different" not in counts  # the same fp16 weights, two layouts
