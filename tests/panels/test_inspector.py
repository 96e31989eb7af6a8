import hashlib
import html
import sys
import types

import ipywidgets as widgets
import pandas as pd
import pytest

import labkit
from labkit.errors import LabkitError
from labkit.panels.inspector import NO_CODE, Inspector, filter_tensors, inspector_panel
from tests.fixtures.layout_files import load_layout, write_sparse
from tests.fixtures.sample_models import (
    LORA_MODULE,
    write_checkpoint,
    write_lora,
    write_unsafe_pickle,
)


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def lora(tmp_path):
    return write_lora(tmp_path / "cat_lora.safetensors")


def opened(path) -> Inspector:
    panel = Inspector()
    panel.path.value = str(path)
    panel.open.click()
    return panel


def test_the_panel_is_a_widget_and_opens_a_path_given_up_front(lora):
    assert isinstance(inspector_panel(), widgets.Widget)
    assert "lora" in Inspector(str(lora)).summary.value


def test_open_shows_the_summary_metadata_and_safety(lora):
    panel = opened(lora)
    assert panel.error.value == ""
    for text in ("safetensors", "lora", "cat_lora.safetensors", "F32", "5", "told by"):
        assert text in panel.summary.value
    assert "ss_network_dim" in panel.metadata.value and "Tag frequency" in panel.metadata.value
    assert "tabby" in panel.metadata.value
    assert "cannot run code" in panel.safety.value
    assert not panel.hash_button.disabled


def test_filter_keeps_matching_tensor_rows(lora):
    panel = opened(lora)
    assert "5 of 5 tensors" in panel.count.value
    panel.filter.value = "mid_block"
    assert "2 of 5 tensors" in panel.count.value
    assert "mid_block" in panel.tensors.value and LORA_MODULE not in panel.tensors.value
    panel.filter.value = r"\.alpha$"
    assert "1 of 5 tensors" in panel.count.value


def test_filter_takes_a_broken_regex_as_plain_text():
    names = pd.DataFrame({"name": ["a[1].weight", "b.weight"]})
    assert filter_tensors(names, "a[1")["name"].tolist() == ["a[1].weight"]


def test_hashes_button_shows_the_sha256_hashlib_gives(lora):
    panel = opened(lora)
    assert panel.hashes.value == ""
    panel.hash_button.click()
    assert hashlib.sha256(lora.read_bytes()).hexdigest().upper() in panel.hashes.value
    assert "AutoV3" in panel.hashes.value and "under 2 MiB" in panel.hashes.value


def test_a_bad_path_shows_the_red_box_with_the_file_name(tmp_path, lora):
    panel = opened(lora)
    panel.path.value = str(tmp_path / "nowhere.safetensors")
    panel.open.click()
    assert "labkit-error" in panel.error.value and "nowhere.safetensors" in panel.error.value
    assert panel.summary.value == "" and panel.tensors.value == "" and panel.hash_button.disabled


def test_pickle_verdicts_in_plain_words(tmp_path):
    safe = opened(write_checkpoint(tmp_path / "model.ckpt"))
    assert "This .ckpt only contains tensors and torch's own helpers" in safe.safety.value
    evil = opened(write_unsafe_pickle(tmp_path / "evil.ckpt"))
    assert "labkit-error" in evil.error.value
    assert "Refused: it names posix.system, which runs system commands" in evil.safety.value
    assert evil.tabs.selected_index == 4


def fake_zoo(monkeypatch, manifest, path=None):
    """Stand in for labkit.zoo so the dropdown is tested with or without the demo files."""
    zoo = types.ModuleType("labkit.zoo")
    zoo.manifest, zoo.path = manifest, path
    monkeypatch.setitem(sys.modules, "labkit.zoo", zoo)
    monkeypatch.setattr(labkit, "zoo", zoo, raising=False)


def test_picking_a_demo_file_opens_it(monkeypatch, lora):
    fake_zoo(monkeypatch, lambda: [{"name": "demo_lora", "path": "x"}], lambda name: lora)
    panel = Inspector()
    assert panel.demo.layout.display != "none"
    panel.demo.value = "demo_lora"
    assert panel.path.value == str(lora) and "lora" in panel.summary.value


def test_without_demo_files_the_dropdown_is_hidden(monkeypatch):
    def missing():
        raise LabkitError("cannot read the demo manifest")

    fake_zoo(monkeypatch, missing)
    assert Inspector().demo.layout.display == "none"


def test_a_real_sd15_layout_opens_header_only(tmp_path):
    path = write_sparse(tmp_path / "v1-5-pruned.safetensors", load_layout("sd15"))
    panel = opened(path)
    assert "<b>sd1</b>" in panel.summary.value and "1,131" in panel.summary.value
    panel.filter.value = r"^model\.diffusion_model\..*attn2\.to_k\.weight$"
    assert "16 of 1,131 tensors" in panel.count.value


@pytest.mark.parametrize(("name", "fmt", "kind", "told"), [
    ("demo_sdxl", "diffusers", "checkpoint", "text_encoder_2/"),
    ("demo_sdxl_single", "safetensors", "checkpoint", "conditioner.embedders.1"),
    ("demo_lora_striped_xl", "safetensors", "lora", "te2"),
    ("demo_ti_checker_xl", "safetensors", "textual_inversion", "clip_l + clip_g"),
])
def test_the_sdxl_demo_files_open_from_the_dropdown(name, fmt, kind, told):
    panel = Inspector()
    assert name in dict(panel.demo.options).values()
    panel.demo.value = name
    assert panel.error.value == ""
    for text in ("<b>demo_sdxl</b>", f"<td style='font-family:monospace'>{fmt}</td>",
                 f"<td style='font-family:monospace'>{kind}</td>", told):
        assert text in panel.summary.value
    assert panel.safety.value == html.escape(NO_CODE[fmt])
    assert int(panel.count.value.split()[-2].replace(",", "")) > 0
