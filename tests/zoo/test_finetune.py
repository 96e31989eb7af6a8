"""The SD1-style demo's full fine-tune: its recipe at toy scale, and the committed UNet."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from labkit import open_model
from labkit.zoo import manifest, path
from labkit.zoo.finetune import FILE, NAME, TOY_FINETUNE, UNET_PREFIX, build_finetune, unet_change
from labkit.zoo.registry import ENTRIES, sha256_of


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune")
    return out, build_finetune(out, out / "work", TOY_FINETUNE, progress=False)


@pytest.mark.slow
def test_toy_build_writes_the_base_unets_keys_moved_and_nothing_else(toy):
    out, figures = toy
    tuned, base = load_file(str(out / FILE)), load_file(str(path("demo_sd1_single")))
    assert set(tuned) == {k for k in base if k.startswith(UNET_PREFIX)}
    assert all(tuned[k].dtype == base[k].dtype for k in tuned)
    assert any(not torch.equal(tuned[k], base[k]) for k in tuned)
    assert figures["finetune"]["steps"] == TOY_FINETUNE.steps
    assert set(figures["quality"]) == {"base", "finetune"}


@pytest.mark.slow
def test_toy_build_lists_the_file_in_the_manifest_with_its_hash(toy):
    out, _ = toy
    (entry,) = manifest(out)
    assert entry["name"] == NAME and entry["path"] == FILE
    assert (entry["format"], entry["kind"], entry["base"]) == ("safetensors", "unet", "demo_sd1")
    assert entry["sha256"] == sha256_of(out / FILE)
    assert entry["made_by"] == ENTRIES[NAME][2]


def test_the_shipped_fine_tune_is_a_demo_unet_that_moved():
    model = open_model(path(NAME))
    assert (model.format, model.kind, model.base) == ("safetensors", "unet", "demo_sd1")
    assert unet_change(path("demo_sd1_single"), path(NAME)) > 0.01
