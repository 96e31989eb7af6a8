"""Which files surgery combines, and the record it writes."""

from __future__ import annotations

import hashlib
import json

import pytest

from labkit import zoo
from labkit.errors import IncompatibleModelError
from labkit.files.opener import open_model
from labkit.surgery.recipe import (
    RECIPE_KEY,
    recipe_metadata,
    recipe_of,
    require_model,
    require_same_family,
)


def test_models_of_one_family_pass_and_others_are_refused_with_both_names():
    a, ckpt = open_model(zoo.path("demo_sd1_single")), open_model(zoo.path("demo_sd1_ckpt"))
    require_same_family([a, ckpt], ["A", "B"])
    xl = open_model(zoo.path("demo_sdxl_single"))
    with pytest.raises(IncompatibleModelError) as err:
        require_same_family([a, xl], ["A", "B"])
    assert str(a.path) in str(err.value) and str(xl.path) in str(err.value)
    assert "demo_sd1" in str(err.value) and "demo_sdxl" in str(err.value)


def test_adapters_and_embeddings_are_no_models():
    with pytest.raises(IncompatibleModelError, match="LoRA argument"):
        require_model(open_model(zoo.path("demo_lora_striped")), "A")
    with pytest.raises(IncompatibleModelError, match="textual inversion"):
        require_model(open_model(zoo.path("demo_ti_checker_kohya")), "A")


def test_the_recipe_holds_the_operation_and_each_sources_hash(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    a = open_model(zoo.path("demo_sd1_single"))
    meta = recipe_metadata("merge", {"alpha": 0.5}, [(a, "A")], title="t", extra={"x": "y"})
    made = recipe_of(meta)
    assert made["operation"] == "merge" and made["parameters"] == {"alpha": 0.5}
    assert made["sources"][0]["sha256"] == hashlib.sha256(a.path.read_bytes()).hexdigest().upper()
    assert meta["x"] == "y" and json.loads(meta[RECIPE_KEY]) == made
    assert recipe_of({}) is None


def test_folders_are_refused_with_the_conversion_to_run():
    with pytest.raises(IncompatibleModelError, match="labkit convert"):
        require_model(open_model(zoo.path("demo_sd1")), "A")
