"""The catalog panel driven from Python: the demo folder catalogued, the table filtered by kind
and base, the counts figure; a missing folder in the red box."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

import labkit as lk
from labkit import zoo
from labkit.panels.catalog import CatalogPanel

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.delenv("LABKIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))


@pytest.fixture
def panel() -> CatalogPanel:
    panel = CatalogPanel()
    panel.go.click()
    return panel


def test_registered_and_nothing_before_the_click():
    assert isinstance(lk.panels.catalog_panel(), widgets.Widget)
    panel = CatalogPanel()
    assert panel.folder.value == str(zoo.data_dir())
    assert panel.table.value == "" and panel.figure.layout.display == "none"
    assert panel.filters.layout.display == "none"


def test_the_demo_folder_catalogued_with_its_kinds_and_bases(panel):
    assert panel.error.value == "", panel.error.value
    n = len(lk.catalog(zoo.data_dir(), progress=False))
    assert f"{n} model files and folders" in panel.status.value
    assert f"<b>{n} of {n} rows</b>" in panel.table.value
    assert "lycoris/twotone_lokr.safetensors" in panel.table.value
    assert panel.kinds.options[0] == "checkpoint" and "lokr" in panel.kinds.options
    assert set(panel.bases.options) == {"demo_sd1", "demo_sdxl"}
    assert bytes(panel.figure.value).startswith(PNG) and panel.filters.layout.display == ""


def test_filters_keep_the_rows_of_a_kind_and_base(panel):
    everything = bytes(panel.figure.value)
    panel.kinds.value = ("lora",)
    assert "<b>3 of" in panel.table.value and "embeddings/" not in panel.table.value
    panel.bases.value = ("demo_sdxl",)
    assert "<b>1 of" in panel.table.value and "striped_lora_xl.safetensors" in panel.table.value
    assert bytes(panel.figure.value) != everything
    panel.kinds.value = ("vae",)
    assert "No model files" in panel.table.value and panel.figure.layout.display == "none"
    panel.kinds.value, panel.bases.value = (), ()
    assert bytes(panel.figure.value) == everything


def test_another_folder_and_a_missing_one(panel, tmp_path):
    panel.folder.value = str(tmp_path)
    panel.go.click()
    assert panel.error.value == "" and "0 model files" in panel.status.value
    assert "No model files in" in panel.table.value and panel.filters.layout.display == "none"
    panel.folder.value = str(tmp_path / "nope")
    panel.go.click()
    assert "labkit-error" in panel.error.value and "this folder is missing" in panel.error.value
    assert panel.table.value == "" and panel.status.value == ""
    assert panel.figure.layout.display == "none" and not panel.go.disabled
