"""zoo.data_dir(): the one lookup of the lab's data folder, $LABKIT_DATA or the checkout's data/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labkit import zoo
from labkit.errors import LabkitError
from labkit.families import tables
from labkit.zoo import registry

REPO_DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A data folder outside the checkout: a copy of zoo.json and one key table."""
    folder = tmp_path / "kit data"
    (folder / "layouts").mkdir(parents=True)
    shutil.copy(REPO_DATA / "zoo.json", folder / "zoo.json")
    shutil.copy(REPO_DATA / "layouts" / "sd15.json.gz", folder / "layouts" / "sd15.json.gz")
    monkeypatch.setenv("LABKIT_DATA", str(folder))
    return folder


def test_without_the_setting_a_checkout_uses_its_data_folder(monkeypatch):
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    assert zoo.data_dir() == REPO_DATA
    assert zoo.path("demo_sd1") == REPO_DATA / "demo_sd1"


def test_labkit_data_is_honoured_by_every_lookup(elsewhere):
    assert zoo.data_dir() == elsewhere
    assert zoo.path("demo_sd1_single") == elsewhere / "demo_sd1.safetensors"
    assert [e["name"] for e in zoo.manifest()][0] == "demo_sd1"
    # The module's names for the folder, its zoo.json and its tokenizer/ are looked up as read.
    names = [getattr(zoo, name) for name in ("DATA", "MANIFEST", "TOKENIZER")]
    assert names == [elsewhere, elsewhere / "zoo.json", elsewhere / "tokenizer"]
    assert tables.layouts_dir() == elsewhere / "layouts"
    assert tables.layout_names() == ["sd15"]


def test_a_relative_labkit_data_is_taken_from_the_working_folder(elsewhere, monkeypatch):
    monkeypatch.chdir(elsewhere.parent)
    monkeypatch.setenv("LABKIT_DATA", elsewhere.name)
    assert zoo.data_dir() == elsewhere


@pytest.mark.parametrize("where", ["a folder with no zoo.json", "no folder at all"])
def test_a_bad_labkit_data_says_what_to_set_it_to(where, tmp_path, monkeypatch):
    folder = tmp_path if where == "a folder with no zoo.json" else tmp_path / "nowhere"
    monkeypatch.setenv("LABKIT_DATA", str(folder))
    with pytest.raises(LabkitError, match="LABKIT_DATA names no data folder") as e:
        zoo.path("demo_sd1")
    assert e.value.path == str(folder)
    assert "the folder holding zoo.json" in e.value.hint and "kit's data/" in e.value.hint
    with pytest.raises(LabkitError, match="LABKIT_DATA"):
        tables.key_table("sd15")  # the key tables too: no fallback to the checkout


def test_an_install_without_data_or_the_setting_names_labkit_data(tmp_path, monkeypatch):
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.setattr(registry, "CHECKOUT_DATA", tmp_path / "site-packages" / "data")
    with pytest.raises(LabkitError, match="LABKIT_DATA is not set") as e:
        zoo.data_dir()
    assert "Set LABKIT_DATA to the folder holding zoo.json" in e.value.hint
