"""The demo world: tokenizer, manifest, the toy recipe end to end, and the committed model's quality."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from labkit.errors import NotAModelError
from labkit.zoo import TOKENIZER, manifest
from labkit.zoo.manifest import ENTRIES
from labkit.zoo.tokenizer import derive, load_tokenizer, write_tokenizer_folder

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def test_tokenizer_gives_sd15_ids():
    from transformers import CLIPTokenizer

    assert load_tokenizer(TOKENIZER)("a photo of a cat").input_ids == CAT_IDS
    folder = CLIPTokenizer.from_pretrained(str(TOKENIZER))
    assert folder("a photo of a cat").input_ids == CAT_IDS
    assert folder.model_max_length == 77


def test_derive_orders_bytes_then_merges_then_specials():
    vocab, merges = derive(["#version", "a b", "ab c", "x y"])
    assert len(vocab) == 512 + 3 + 2
    assert vocab["a"] < vocab["a</w>"] < vocab["ab"] < vocab["abc"] < vocab["<|startoftext|>"]
    assert vocab["<|endoftext|>"] == len(vocab) - 1
    assert merges == ["a b", "ab c", "x y"]


def test_write_tokenizer_folder_refuses_a_wrong_file(tmp_path):
    bad = tmp_path / "bpe.txt.gz"
    bad.write_bytes(gzip.compress(b"#version\na b\n"))
    with pytest.raises(NotAModelError, match="expected 49408"):
        write_tokenizer_folder(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_toy_recipe_runs_end_to_end(tmp_path):
    from labkit.zoo.build import toy_build

    figures = toy_build(tmp_path)
    entries = manifest(tmp_path)
    assert {e["name"] for e in entries} == set(ENTRIES)
    for e in entries:
        assert (tmp_path / e["path"]).exists()
    assert 0.0 <= figures["base"]["colour_accuracy"] <= 1.0
    assert len(figures["lora_curve"]["energy"]) == 5
    assert "Colour accuracy" in (tmp_path / "README.md").read_text()


def test_toy_recipe_resumes_from_its_checkpoints(tmp_path):
    from labkit.zoo.build import TOY_RECIPE, train_base

    first = train_base(TOY_RECIPE, tmp_path, progress=False)
    again = train_base(TOY_RECIPE, tmp_path, progress=False)
    assert first.figures == again.figures
    for (k, a), b in zip(first.unet.state_dict().items(), again.unet.state_dict().values(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), k


