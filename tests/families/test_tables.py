"""Model families side by side: real key tables (shipped in data/layouts) and the demo files."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest
import torch

from labkit import zoo
from labkit.errors import LabkitError
from labkit.families import tables as families
from labkit.files.opener import open_model
from labkit.generate import pipelines
from labkit.stats import figures as stats_plots
from tests.fixtures.layout_files import LAYOUT_NAMES, load_layout

CLIP_L_PARAMS = 123_060_480  # CLIP ViT-L/14's text model, as published
SD15_UNET_PARAMS = 859_520_964
SDXL_UNET_PARAMS = 2_567_463_684


@pytest.fixture(scope="module")
def tables() -> dict:
    return families.family_tables()


def part(table, name: str) -> pd.Series:
    frame = families.parts(table)
    return frame.set_index("part").loc[name]


# ---------------------------------------------------------------- the shipped key tables

@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_shipped_key_tables_are_the_real_layouts(name):
    shipped = families.key_table(name)
    assert list(shipped.items()) == list(load_layout(name).items())


def test_shipped_key_tables_are_all_there_and_small():
    assert families.layout_names() == LAYOUT_NAMES
    size = sum(p.stat().st_size for p in families.layouts_dir().glob("*.json.gz"))
    assert size < 200_000


def test_unknown_key_table_names_the_known_ones():
    with pytest.raises(LabkitError, match="sdxl_base"):
        families.key_table("sd4")


def test_damaged_key_table_raises_a_lab_error(tmp_path, monkeypatch):
    (tmp_path / "zoo.json").write_text('{"version": 1, "files": []}')
    (tmp_path / "layouts").mkdir()
    (tmp_path / "layouts" / "broken.json.gz").write_bytes(gzip.compress(b'{"tensors": [1, 2]}'))
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path))  # the key tables are read from data_dir()
    with pytest.raises(LabkitError, match="could not be read") as e:
        families.key_table("broken")
    assert e.value.path == str(tmp_path / "layouts" / "broken.json.gz")


# ---------------------------------------------------------------- parts of one model

def test_parts_of_sd15_are_clip_l_unet_and_vae_with_their_published_sizes():
    frame = families.parts(families.key_table("sd15"))
    assert list(frame["part"]) == ["text encoder", "denoiser", "VAE"]
    assert list(frame["width"]) == [768, 768, 4]
    assert list(frame["parameters"][:2]) == [CLIP_L_PARAMS, SD15_UNET_PARAMS]
    assert frame["tensors"].sum() == len(families.key_table("sd15"))


def test_parts_of_sdxl_have_a_second_wider_encoder_and_a_2048_context():
    table = families.key_table("sdxl_base")
    te2 = part(table, "text encoder 2")
    assert (te2["architecture"], te2["width"]) == ("OpenCLIP text encoder", 1280)
    assert te2["prefix"] == "conditioner.embedders.1.model."
    unet = part(table, "denoiser")
    assert (unet["width"], unet["parameters"]) == (2048, SDXL_UNET_PARAMS)
    assert part(table, "text encoder")["parameters"] == CLIP_L_PARAMS  # SD1.5's encoder again


def test_a_bare_flux_file_is_one_transformer_denoiser():
    frame = families.parts(families.key_table("flux_dev"))
    assert frame[["part", "architecture", "prefix", "width"]].values.tolist() == [
        ["denoiser", "Flux transformer", "", 4096]]
    assert frame["parameters"].item() == pytest.approx(11.9e9, rel=0.01)


def test_sd3_has_an_mmdit_and_a_16_channel_vae():
    frame = families.parts(families.key_table("sd3_medium")).set_index("part")
    assert frame.loc["denoiser", "architecture"] == "MMDiT transformer"
    assert frame.loc["VAE", "width"] == 16


def test_the_demo_sdxl_parts_agree_in_folder_and_single_file():
    folder = families.parts(open_model(zoo.path("demo_sdxl")).table).set_index("part")
    single = families.parts(open_model(zoo.path("demo_sdxl_single")).table).set_index("part")
    assert list(folder.index) == list(single.index) == [
        "text encoder", "text encoder 2", "denoiser", "VAE"]
    assert list(folder["width"]) == list(single["width"]) == [32, 48, 80, 4]
    assert folder.loc["denoiser", "prefix"] == "unet/"
    for name in ("denoiser", "VAE"):
        assert folder.loc[name, "parameters"] == single.loc[name, "parameters"]


# ---------------------------------------------------------------- conditioning widths

@pytest.mark.parametrize("name, widths", [
    ("sd15", {"context": 768, "added": 0, "pooled": 0, "micro": 0}),
    ("sd21", {"context": 1024, "added": 0, "pooled": 0, "micro": 0}),
    ("sdxl_base", {"context": 2048, "added": 2816, "pooled": 1280, "micro": 6 * 256}),
    ("sdxl_refiner", {"context": 1280, "added": 2560, "pooled": 1280, "micro": 5 * 256}),
    ("sd3_medium", {"context": 4096, "added": 2048, "pooled": 2048, "micro": 0}),
    ("flux_dev", {"context": 4096, "added": 768, "pooled": 768, "micro": 0}),
])
def test_conditioning_widths_of_real_families(name, widths):
    assert families.conditioning_widths(families.key_table(name)) == widths


@pytest.mark.parametrize("name", ["demo_sdxl", "demo_sdxl_single"])
def test_conditioning_widths_of_the_demo_sdxl_in_both_layouts(name):
    widths = families.conditioning_widths(open_model(zoo.path(name)).table)
    assert widths == {"context": 80, "added": 96, "pooled": 48, "micro": 6 * 8}


# ---------------------------------------------------------------- families side by side

def test_family_table_identifies_every_family_and_reads_its_widths(tables):
    frame = families.family_table(tables)
    assert list(frame.index) == list(tables)
    assert list(frame["identified as"]) == ["sd1", "sd2", "sdxl", "sd3", "flux_dev", "demo_sd1",
                                            "demo_sdxl"]
    assert list(frame["context width"]) == [768, 1024, 2048, 4096, 4096, 32, 80]
    assert frame.loc["SDXL", "text encoders"] == "CLIP 768 + OpenCLIP 1280"
    assert frame.loc["demo SDXL", "text encoders"] == "CLIP 32 + OpenCLIP 48"
    assert "T5-XXL" in frame.loc["Flux.1 dev", "text encoders"]
    assert pd.isna(frame.loc["SD3 medium", "text encoders (M)"])
    assert frame.loc["SD 1.5", "denoiser (M)"] == round(SD15_UNET_PARAMS / 1e6, 2)


def test_layout_prefixes_show_where_each_family_keeps_the_same_part(tables):
    frame = families.layout_prefixes(tables)
    assert list(frame.index) == ["text encoder", "text encoder 2", "denoiser", "VAE"]
    assert frame.loc["text encoder", "SD 1.5"] == "cond_stage_model.transformer.text_model."
    assert frame.loc["text encoder", "SDXL"] == "conditioner.embedders.0.transformer.text_model."
    assert frame.loc["text encoder 2", "SD 1.5"] == "-"
    assert frame.loc["denoiser", "Flux.1 dev"] == "(no prefix)"
    # the demo single files are written in their real family's original layout
    assert frame["demo SD1"].equals(frame["SD 1.5"].rename("demo SD1"))
    assert frame["demo SDXL"].equals(frame["SDXL"].rename("demo SDXL"))


def test_unet_levels_show_sdxl_without_attention_on_top_and_deeper_transformers(tables):
    levels = families.unet_levels(tables)
    layers = levels.groupby("family", sort=False)["transformer layers"].apply(list).to_dict()
    assert layers == {"SD 1.5": [1, 1, 1, 0], "SD 2.1": [1, 1, 1, 0], "SDXL": [0, 2, 10],
                      "demo SD1": [1, 0], "demo SDXL": [0, 2]}
    channels = levels.groupby("family", sort=False)["channels"].apply(list).to_dict()
    assert channels["SDXL"] == [320, 640, 1280] and channels["demo SDXL"] == [32, 64]


def test_unet_levels_read_diffusers_names_too():
    folder = {"demo SDXL folder": open_model(zoo.path("demo_sdxl")).table}
    assert families.unet_levels(folder)["transformer layers"].tolist() == [0, 2]


def test_lora_layout_shows_one_encoder_prefix_against_two_and_their_widths():
    frame = families.lora_layout({
        "demo SD1": open_model(zoo.path("demo_lora_striped")).table,
        "demo SDXL": open_model(zoo.path("demo_lora_striped_xl")).table,
        "SD 1.5": families.key_table("sd15_lora_kohya"),
        "SDXL": families.key_table("sdxl_lora_kohya")})
    widths = {(f, p): w for f, p, w in frame[["file", "prefix", "width"]].values}
    assert widths == {("demo SD1", "lora_te_"): 32, ("demo SD1", "lora_unet_"): 32,
                      ("demo SDXL", "lora_te1_"): 32, ("demo SDXL", "lora_te2_"): 48,
                      ("demo SDXL", "lora_unet_"): 80,
                      ("SD 1.5", "lora_te_"): 768, ("SD 1.5", "lora_unet_"): 768,
                      ("SDXL", "lora_te1_"): 768, ("SDXL", "lora_te2_"): 1280,
                      ("SDXL", "lora_unet_"): 2048}
    assert set(frame.loc[frame["prefix"] == "lora_te2_", "patches"]) == {"text encoder 2"}


def test_parameters_figure_has_one_bar_per_part_at_its_count(tables, output_dir):
    frame = families.family_parts(tables)
    fig = stats_plots.family_parameters_figure(frame)
    ax = fig.axes[0]
    shown = frame[frame["part"].isin(stats_plots.PART_COLOURS)]
    assert sorted(p.get_height() for p in ax.patches) == sorted(shown["parameters"])
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == list(tables)
    (output_dir / "family_parameters.png").write_bytes(stats_plots.to_png(fig))


# ---------------------------------------------------------------- the demo pipelines' conditioning

@pytest.fixture(scope="module")
def pipes() -> dict:
    return {name: pipelines.load_pipeline(zoo.path(name), device="cpu", progress=False)
            for name in ("demo_sd1", "demo_sdxl")}


PROMPT = "a red circle on a white background"


def test_conditioning_shapes_of_both_demo_pipelines(pipes):
    frame = families.conditioning(pipes, PROMPT)
    shapes = {(p, i): s for p, i, s in frame[["pipeline", "input", "shape"]].values}
    assert shapes == {("demo_sd1", "encoder_hidden_states"): (1, 77, 32),
                      ("demo_sdxl", "encoder_hidden_states"): (1, 77, 80),
                      ("demo_sdxl", "text_embeds"): (1, 48),
                      ("demo_sdxl", "time_ids"): (1, 6)}
    made = frame.set_index("input").loc["time_ids", "made of"]
    assert made.endswith("(64, 64, 0, 0, 64, 64)")


def test_sdxl_context_is_both_penultimate_states_side_by_side(pipes):
    pipe = pipes["demo_sdxl"]
    got = families.conditioning_tensors(pipe, PROMPT)
    states = []
    with torch.no_grad():
        for tok, enc in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
            ids = tok(PROMPT, padding="max_length", max_length=tok.model_max_length,
                      truncation=True, return_tensors="pt").input_ids
            states.append(enc(ids, output_hidden_states=True).hidden_states[-2])
    assert torch.equal(got["encoder_hidden_states"], torch.cat(states, dim=-1))


def test_an_sd1_lora_on_the_sdxl_pipeline_is_refused_naming_both(pipes):
    from labkit import lora
    with pytest.raises(LabkitError) as e:
        lora.apply(pipes["demo_sdxl"], zoo.path("demo_lora_striped"))
    assert "demo_sd1" in str(e.value) and "demo_sdxl" in str(e.value)
