"""The demo world: tokenizer, manifest, the toy recipe end to end, and the committed model's quality."""

from __future__ import annotations

import gzip
import json
import pickletools
import zipfile

import numpy as np
import pytest

from labkit.errors import LabkitError, NotAModelError
from labkit.zoo import TOKENIZER, manifest, path
from labkit.zoo.finetune import NAME
from labkit.zoo.recipe.tokenizer import derive, load_tokenizer, write_tokenizer_folder
from labkit.zoo.registry import ENTRIES, base_of

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def test_tokenizer_gives_sd15_ids():
    from transformers import CLIPTokenizer

    assert load_tokenizer(TOKENIZER)("a photo of a cat").input_ids == CAT_IDS
    folder = CLIPTokenizer.from_pretrained(str(path("demo_sd1") / "tokenizer"))
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


def test_manifest_entries_exist_and_unknown_names_are_listed():
    entries = manifest()
    names = {e["name"] for e in entries}
    assert {"demo_sd1", "demo_sd1_ckpt", "demo_lora_striped", "demo_ti_checker_a1111"} <= names
    for e in entries:
        assert path(e["name"]).exists(), e
        assert e["base"] == base_of(e["name"])
    with pytest.raises(LabkitError, match="demo_sd1_single"):
        path("no_such_file")


def test_manifest_hashes_match():
    from labkit.zoo.registry import sha256_of

    for e in manifest():
        assert sha256_of(path(e["name"])) == e["sha256"], e["name"]


def test_every_file_opens_and_is_identified_as_the_manifest_says():
    from labkit import open_model
    for e in manifest():
        f = open_model(path(e["name"]))
        assert (f.format, f.kind) == (e["format"], e["kind"]), e["name"]
        assert f.base == e["base"], e["name"]


def _pickle_globals(ckpt) -> set[str]:
    with zipfile.ZipFile(ckpt) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
    return found


def test_ckpt_is_shaped_like_real_sd1_files():
    from labkit import open_model
    ckpt = path("demo_sd1_ckpt")
    assert "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint" in _pickle_globals(ckpt)
    table = open_model(ckpt).table
    assert any(k.startswith("model_ema.") for k in table)
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in table)


@pytest.mark.slow
def test_toy_recipe_runs_end_to_end(tmp_path):
    from labkit.zoo.build import toy_build

    figures = toy_build(tmp_path)
    entries = manifest(tmp_path)
    # every SD1-style file but the fine-tune, which `build --finetune` makes (test_finetune.py)
    assert {e["name"] for e in entries} == {n for n in ENTRIES if base_of(n) == "demo_sd1"} - {NAME}
    assert {e["name"] for e in manifest()} == set(ENTRIES)
    for e in entries:
        assert (tmp_path / e["path"]).exists()
    assert 0.0 <= figures["base"]["colour_accuracy"] <= 1.0
    assert len(figures["lora_curve"]["energy"]) == 5
    assert "Colour accuracy" in (tmp_path / "README.md").read_text()


@pytest.mark.slow
def test_toy_recipe_resumes_from_its_checkpoints(tmp_path):
    from labkit.zoo.build import TOY_RECIPE, train_base

    first = train_base(TOY_RECIPE, tmp_path, progress=False)
    again = train_base(TOY_RECIPE, tmp_path, progress=False)
    assert first.figures == again.figures
    for (k, a), b in zip(first.unet.state_dict().items(), again.unet.state_dict().values(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), k


# ---------------------------------------------------------------- quality of the committed model

@pytest.fixture(scope="module")
def pipe():
    import torch

    from labkit.zoo.sample import load_pipeline

    torch.manual_seed(0)
    return load_pipeline(path("demo_sd1"))


@pytest.mark.slow
def test_base_follows_colour_prompts_and_draws_different_shapes(pipe):
    from labkit.zoo.evaluate import base_quality

    q = base_quality(pipe, n_seeds=2)
    assert q["n_prompts"] >= 48
    assert q["colour_accuracy"] >= 0.8
    assert q["min_shape_difference"] >= 0.05


@pytest.mark.slow
def test_base_draws_the_named_colours_when_the_prompt_ends_in_a_word_it_never_saw(pipe):
    from labkit.zoo.evaluate import word_robustness

    scores = word_robustness(pipe)
    assert {"zebra", "striped", "outlined", "twotone"} <= set(scores)
    assert min(scores.values()) >= 0.75, scores


def test_vae_round_trip_keeps_every_named_colour(pipe):
    from labkit.zoo.evaluate import vae_colour_error

    error = vae_colour_error(pipe.vae)
    assert error["max_error"] <= 25, error  # of 255: a green must not come back near black


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo_lora_striped_peft", "demo_lora_striped"])
def test_lora_effect_grows_with_strength_and_strength_0_keeps_the_base(pipe, name):
    from labkit.zoo.evaluate import lora_curve

    curve = lora_curve(pipe, path(name), "striped", "striped")
    energy = curve["energy"]
    assert all(b > a for a, b in zip(energy, energy[1:], strict=False)), energy
    assert energy[-1] > 3 * energy[0]
    assert curve["colour_accuracy_at_0"] >= 0.8


@pytest.mark.slow
def test_textual_inversion_token_draws_checkerboards(pipe):
    from labkit.zoo.evaluate import embedding_effect
    from labkit.zoo.recipe.adapters import TI_TOKEN

    effect = embedding_effect(pipe, path("demo_ti_checker_diffusers"), TI_TOKEN)
    assert effect["with_token"] > 2 * effect["without_token"]


def test_zoo_json_is_valid_json_with_relative_paths():
    from labkit.zoo import data_dir
    data = json.loads((data_dir() / "zoo.json").read_text())
    assert all(not e["path"].startswith("/") and ".." not in e["path"] for e in data["files"])


def test_both_worlds_fit_the_data_budget():
    from labkit.zoo import data_dir
    total = sum(p.stat().st_size for p in data_dir().rglob("*") if p.is_file())
    assert total <= 90e6, f"data/ holds {total / 1e6:.1f} MB"
