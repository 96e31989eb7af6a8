"""The SDXL-style demo: its recipe at toy scale, its conditioning, and the committed files."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open

from labkit import open_model
from labkit.zoo import manifest, path
from labkit.zoo.registry import ENTRIES, base_of
from labkit.zoo.xl.build import NAMES

XL = sorted(NAMES.values())


# ---------------------------------------------------------------- the recipe at toy scale

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from labkit.zoo.registry import write_manifest
    from labkit.zoo.xl.build import build_xl
    from labkit.zoo.xl.recipe import TOY_XL

    out = tmp_path_factory.mktemp("xl")
    sd1_file = out / "sd1.txt"
    sd1_file.write_text("stands in for an SD1-style file")
    write_manifest(out, {"demo_sd1_vae": sd1_file})
    return out, build_xl(out, out / "work", TOY_XL, progress=False)


@pytest.mark.slow
def test_toy_build_adds_the_sdxl_files_to_the_manifest_and_keeps_the_others(toy):
    out, figures = toy
    entries = {e["name"]: e for e in manifest(out)}
    assert set(entries) == {"demo_sd1_vae", *XL}
    assert entries["demo_sd1_vae"]["base"] == "demo_sd1"
    for name in XL:
        assert entries[name]["base"] == "demo_sdxl"
        assert (out / entries[name]["path"]).exists()
    assert 0.0 <= figures["base"]["colour_accuracy"] <= 1.0
    assert figures["base"]["n_prompts"] == 48


@pytest.mark.slow
def test_toy_folder_has_sdxl_parts_and_padding(toy):
    out, _ = toy
    folder = out / "demo_sdxl"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    te2 = json.loads((folder / "text_encoder_2" / "config.json").read_text())
    assert te2["architectures"] == ["CLIPTextModelWithProjection"]
    assert json.loads((folder / "tokenizer_2" / "tokenizer_config.json").read_text())["pad_token"] == "!"
    assert json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())["pad_token"] == "<|endoftext|>"


@pytest.mark.slow
def test_sdxl_kohya_names_follow_the_original_blocks_and_two_encoders(toy):
    out, _ = toy
    with safe_open(str(out / "lora" / "striped_lora_xl.safetensors"), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    prefixes = {k.split("_")[0] + "_" + k.split("_")[1] for k in keys}
    assert prefixes == {"lora_te1", "lora_te2", "lora_unet"}
    unet = [k for k in keys if k.startswith("lora_unet_")]
    assert unet and all(k.startswith(("lora_unet_input_blocks_", "lora_unet_middle_block_",
                                      "lora_unet_output_blocks_")) for k in unet)
    assert not any("text_model_text_model" in k for k in keys)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["ss_network_module"] == "networks.lora"


# ---------------------------------------------------------------- conditioning

def test_conditioning_concatenates_penultimate_states_and_zeroes_dropped_captions():
    from labkit.zoo import TOKENIZER
    from labkit.zoo.recipe.models import TOY_TEXT, make_text_encoder
    from labkit.zoo.recipe.tokenizer import load_tokenizer
    from labkit.zoo.xl.conditioning import TIME_IDS, XLConditioner
    from labkit.zoo.xl.models import TOY_TEXT_2, make_text_encoder_2

    te1, te2 = make_text_encoder(TOY_TEXT, 0), make_text_encoder_2(TOY_TEXT_2, 0)
    toks = [load_tokenizer(TOKENIZER), load_tokenizer(TOKENIZER, pad_token="!")]
    caps = ["a red circle on a white background", ""]
    kw = XLConditioner(toks, [te1, te2])(caps)
    hidden, added = kw["encoder_hidden_states"], kw["added_cond_kwargs"]
    assert hidden.shape == (2, 77, TOY_TEXT["hidden_size"] + TOY_TEXT_2["hidden_size"])
    ids = toks[0](caps[:1], padding="max_length", max_length=77, return_tensors="pt").input_ids
    first = te1(ids, output_hidden_states=True).hidden_states[-2][0]
    assert torch.allclose(hidden[0, :, : TOY_TEXT["hidden_size"]], first)
    assert added["text_embeds"].shape == (2, TOY_TEXT_2["projection_dim"])
    assert added["time_ids"][0].tolist() == list(TIME_IDS)
    assert hidden[1].abs().sum() == 0 and added["text_embeds"][1].abs().sum() == 0
    uncached = XLConditioner(toks, [te1, te2], cache=False)(caps)
    assert torch.allclose(uncached["encoder_hidden_states"], hidden)


def test_second_tokenizer_pads_with_exclamation_marks():
    from labkit.zoo import TOKENIZER
    from labkit.zoo.recipe.tokenizer import load_tokenizer

    ids = load_tokenizer(TOKENIZER, pad_token="!")("a red circle", padding="max_length",
                                                   max_length=77).input_ids
    assert ids[:5] == [49406, 320, 736, 7117, 49407] and set(ids[5:]) == {0}


# ---------------------------------------------------------------- the committed files

def test_manifest_lists_both_worlds():
    names = {e["name"]: e for e in manifest()}
    assert set(names) == set(ENTRIES)
    assert {n for n in names if base_of(n) == "demo_sdxl"} == set(XL)


@pytest.fixture(scope="module")
def pipe():
    from labkit.zoo.xl.build import load_xl_pipeline

    return load_xl_pipeline(path("demo_sdxl"))


@pytest.mark.slow
def test_committed_model_follows_colour_prompts(pipe):
    from labkit.zoo.evaluate import base_quality

    q = base_quality(pipe, n_seeds=2)
    assert q["n_prompts"] >= 24
    assert q["colour_accuracy"] >= 0.7


def test_committed_unet_has_sdxl_conditioning(pipe):
    cfg = pipe.unet.config
    assert cfg.addition_embed_type == "text_time"
    assert cfg.cross_attention_dim == (pipe.text_encoder.config.hidden_size
                                       + pipe.text_encoder_2.config.hidden_size)
    assert cfg.down_block_types[0] == "DownBlock2D"  # no attention on the first level
    assert pipe.tokenizer_2.pad_token == "!"


@pytest.mark.slow
def test_committed_lora_draws_stripes_growing_with_strength(pipe):
    from labkit.zoo.metrics import style_score
    from labkit.zoo.sample import colour_prompts, generate
    from labkit.zoo.xl.build import lab_lora_applied

    prompts, _, seeds = colour_prompts(1, "striped")
    without = style_score(generate(pipe, prompts[:8], seeds[:8]), "striped")
    energy = []
    for strength in (0.5, 1.0):
        with lab_lora_applied(pipe, path("demo_lora_striped_xl"), strength) as lp:
            energy.append(style_score(generate(lp, prompts[:8], seeds[:8]), "striped"))
    assert without < energy[0] < energy[1]
    assert energy[1] > 2 * without


@pytest.mark.slow
def test_committed_ti_has_both_vectors_and_draws_checkerboards(pipe):
    from labkit.zoo.metrics import style_score
    from labkit.zoo.recipe.adapters import TI_TOKEN
    from labkit.zoo.sample import colour_prompts, generate
    from labkit.zoo.xl.build import sdxl_embedding_loaded

    file = path("demo_ti_checker_xl")
    shapes = {k: tuple(info.shape) for k, info in open_model(file).table.items()}
    assert shapes == {"clip_l": (1, 32), "clip_g": (1, 48)}
    prompts, _, seeds = colour_prompts(1)
    without = style_score(generate(pipe, prompts[:8], seeds[:8]), "checker")
    with sdxl_embedding_loaded(pipe, file, TI_TOKEN) as tp:
        with_token = style_score(generate(tp, [f"{p}, {TI_TOKEN}" for p in prompts[:8]], seeds[:8]),
                                 "checker")
    assert with_token > 2 * without


def test_single_file_is_sdxl_original_layout_and_converts_back_exactly(tmp_path):
    from labkit.convert import forms as convert
    from tests.convert.test_forms import assert_same_components

    roots = {".".join(k.split(".")[:3]) for k in open_model(path("demo_sdxl_single")).table}
    assert {"conditioner.embedders.0", "conditioner.embedders.1", "model.diffusion_model.input_blocks",
            "first_stage_model.encoder.down"} <= roots
    back = convert.single_file_to_folder(path("demo_sdxl_single"), tmp_path / "back",
                                         config_folder=path("demo_sdxl"))
    assert_same_components(path("demo_sdxl"), back)


def test_sample_grid_png_is_written(output_dir):
    from PIL import Image

    from labkit.zoo.sample import colour_prompts, generate, grid
    from labkit.zoo.xl.build import load_xl_pipeline

    pipe = load_xl_pipeline(path("demo_sdxl"))
    prompts, _, seeds = colour_prompts(1)
    img = grid([generate(pipe, prompts[:12], seeds[:12]), generate(pipe, prompts[12:], seeds[12:])])
    Image.fromarray(img).save(output_dir / "demo_sdxl_samples.png")
    assert img.shape[0] > 100 and np.ptp(img) > 100


def test_build_without_the_sd1_demo_says_to_build_it_first(tmp_path, capsys):
    from labkit.zoo.__main__ import main

    (tmp_path / "sd1" / "vae").mkdir(parents=True)
    (tmp_path / "sd1" / "vae" / "config.json").write_text("{}")
    with pytest.MonkeyPatch.context() as mp:
        import labkit.zoo.xl.recipe as xr

        mp.setattr(xr, "FULL_XL", replace(xr.FULL_XL, sd1_folder=tmp_path / "sd1"))
        code = main(["build", "--sdxl", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2
    assert "reuses the SD1-style demo's text_encoder," in err
    assert "python -m labkit.zoo build" in err
    assert not (tmp_path / "out").exists()
