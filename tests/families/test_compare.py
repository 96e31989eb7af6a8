"""Two models side by side (labkit.families.compare): their rows, and the one-line verdict of what
made for one would not fit the other, on the demo files and the real key tables."""

from __future__ import annotations

import pytest

from labkit import zoo
from labkit.errors import NotAModelError
from labkit.families import compare as C
from labkit.identify.identity import Identity

DEMO = ("demo_sd1_single", "demo_sdxl_single", "demo_sd1", "demo_lora_striped",
        "demo_lora_striped_peft", "demo_lora_striped_xl", "demo_loha_outlined",
        "demo_ti_checker_xl")
TABLES = ("sd15", "sd21", "sdxl_base", "sdxl_refiner", "sd3_medium", "flux_dev",
          "sd15_lora_kohya", "sd15_vae")


@pytest.fixture(scope="module")
def models() -> dict[str, C.Model]:
    found = {name: C.from_file(zoo.path(name), name) for name in DEMO}
    found.update({name: C.from_key_table(name) for name in TABLES})
    return found


def test_key_tables_are_labelled_as_in_notebook_07(models):
    assert models["sdxl_base"].label == "SDXL" and models["sd15"].label == "SD 1.5"
    assert models["sd15_lora_kohya"].label == "sd15_lora_kohya"
    assert models["flux_dev"].identity.base == "flux_dev"


def test_a_file_is_labelled_by_its_name_and_a_bad_path_raises(tmp_path):
    assert C.from_file(zoo.path("demo_sd1_single")).label == "demo_sd1.safetensors"
    with pytest.raises(NotAModelError, match="missing.safetensors"):
        C.from_file(tmp_path / "missing.safetensors")


def test_two_checkpoints_side_by_side(models):
    frame = C.compare_table([models["demo_sd1_single"], models["demo_sdxl_single"]])
    assert list(frame.columns) == ["demo_sd1_single", "demo_sdxl_single"]
    sd1, xl = frame["demo_sd1_single"], frame["demo_sdxl_single"]
    assert (sd1["base"], xl["base"]) == ("demo_sd1", "demo_sdxl")
    assert (sd1["context width"], xl["context width"]) == (32, 80)
    assert (sd1["text encoders"], xl["text encoders"]) == ("CLIP 32", "CLIP 32 + OpenCLIP 48")
    assert (sd1["pooled text"], xl["pooled text"], xl["size/crop numbers"]) == (0, 48, 48)
    assert sd1["keys: text encoder"] == "cond_stage_model.transformer.text_model."
    assert xl["keys: text encoder"] == "conditioner.embedders.0.transformer.text_model."
    assert (sd1["keys: text encoder 2"], xl["keys: text encoder 2"]) == (
        "-", "conditioner.embedders.1.model.")
    assert list(frame.index[-4:]) == ["keys: text encoder", "keys: text encoder 2",
                                      "keys: denoiser", "keys: VAE"]


def test_an_adapter_is_read_by_the_modules_it_patches(models):
    frame = C.compare_table([models["demo_lora_striped_xl"], models["flux_dev"]])
    lora, flux = frame["demo_lora_striped_xl"], frame["Flux.1 dev"]
    assert (lora["kind"], lora["context width"], lora["text encoders"]) == ("lora", 80, "32 + 48")
    assert (lora["keys: text encoder 2"], lora["keys: denoiser"]) == ("lora_te2_", "lora_unet_")
    assert lora["latent channels"] == "-" and lora["denoiser"] == "-"
    assert (flux["denoiser"], flux["context width"], flux["keys: denoiser"]) == (
        "Flux transformer", 4096, "(no prefix)")


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("demo_sd1_single", "demo_sdxl_single",
     "A demo_sd1 LoRA does not fit demo_sdxl: context 32 vs 80, lora_te_ vs lora_te1_/lora_te2_."),
    ("sdxl_base", "sdxl_refiner", "A sdxl LoRA does not fit sdxl_refiner: context 2048 vs 1280, "
                                  "lora_te1_/lora_te2_ vs lora_te_."),
    ("sd15", "sd21", "A sd1 LoRA does not fit sd2: context 768 vs 1024, text encoders 768 vs 1024."),
    ("sd3_medium", "flux_dev",
     "A sd3 LoRA does not fit flux_dev: MMDiT transformer vs Flux transformer."),
    ("demo_sd1", "demo_sd1_single", "Both are demo_sd1: a demo_sd1 LoRA fits."),
    # an adapter and a checkpoint, in either order
    ("demo_sdxl_single", "demo_lora_striped_peft",
     "This demo_sd1 LoRA does not fit demo_sdxl: context 32 vs 80, text encoders 32 vs 32 + 48."),
    ("sd15_lora_kohya", "sdxl_base",
     "This sd1 LoRA does not fit sdxl: context 768 vs 2048, text encoders 768 vs 768 + 1280."),
    ("demo_lora_striped_xl", "demo_sdxl_single", "Both are demo_sdxl: this demo_sdxl LoRA fits."),
    # a LoHa's keys hold no telling width: its base comes from its metadata
    ("demo_loha_outlined", "demo_sdxl_single",
     "This demo_sd1 LoHa was made for demo_sd1 (told by metadata), not for demo_sdxl."),
    # no verdict: two adapters, an embedding, a VAE whose base is not told
    ("demo_lora_striped", "sd15_lora_kohya", ""),
    ("demo_ti_checker_xl", "demo_sd1_single", ""),
    ("sd15_vae", "sd15", ""),
])
def test_verdict(models, a, b, expected):
    assert C.verdict(models[a], models[b]) == expected


def test_same_widths_of_other_bases_share_their_adapters(models):
    # Playground v2.5 is built like SDXL: only its metadata tells it apart
    sdxl = models["sdxl_base"]
    playground = sdxl._replace(identity=Identity("checkpoint", "playground"))
    assert C.verdict(sdxl, playground) == ("sdxl and playground share their widths: a sdxl LoRA "
                                           "loads into playground, though it was trained for "
                                           "the other.")


def test_blanks_shows_missing_values_as_blanks():
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"a": [1.5, np.nan], "b": pd.array([2, None], dtype="Int64"),
                          "c": ["x", None]})
    shown = C.blanks(frame)
    assert shown.to_numpy().tolist() == [[1.5, 2, "x"], ["", "", ""]]
    html = shown.to_html()
    assert "NaN" not in html and "&lt;NA&gt;" not in html and "None" not in html


def _last_value(source: str, names: dict):
    """Run a notebook cell's source; the value of its last line, as the notebook shows it."""
    import ast

    tree = ast.parse(source)
    last = tree.body.pop() if isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), names)  # noqa: S102 - the notebook's own cell
    return None if last is None else eval(compile(ast.Expression(last.value), "<cell>", "eval"),
                                          names)


def test_notebook_07_tables_show_blanks_where_its_text_promises_them():
    import json
    from pathlib import Path

    notebook = Path(__file__).resolve().parents[2] / "notebooks" / "07_model_families.ipynb"
    cells = ["".join(c["source"]) for c in json.loads(notebook.read_text())["cells"]
             if c["cell_type"] == "code"]
    names: dict = {}
    _last_value(cells[0], names)  # the imports and the tables
    shown = [_last_value(c, names)._repr_html_() for c in cells
             if "family_table(tables)" in c or "levels.pivot" in c]
    assert len(shown) == 3
    assert all("NaN" not in html and "&lt;NA&gt;" not in html for html in shown)
