"""The LoRA panel: anatomy table and figures, a labelled strength grid, the adapters offered for
the chosen model's base (SD1- or SDXL-style), errors in the red box."""

from __future__ import annotations

import io

import ipywidgets as widgets
import pytest
from PIL import Image

from labkit.panels.common import NONE_CHOICE, PATH_CHOICE, png_size
from labkit.panels.lora import lora_panel, seeds_of, strengths_of
from tests.fixtures.lora_samples import single_thread, write_adapter, write_ti
from tests.fixtures.tiny_models import save_tiny

PNG = b"\x89PNG\r\n\x1a\n"
one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("lora_panel")
    folder = save_tiny(root / "sd1", "sd1")
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    return {"model": folder, "lora": write_adapter(root / "lora.safetensors", pipe, "lora"),
            "loha": write_adapter(root / "loha.safetensors", pipe, "loha"),
            "ti": write_ti(root / "ti.safetensors")}


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def _one(panel, cls, description=None):
    found = [w for w in _walk(panel) if isinstance(w, cls)
             and (description is None or w.description == description)]
    assert found, f"no {cls.__name__} {description!r}"
    return found[0]


def _parts(panel):
    paths = [w for w in _walk(panel) if isinstance(w, widgets.Text) and w.description == "Path"]
    return {
        "model": paths[0], "lora": paths[1], "compare": paths[2],
        "show": _one(panel, widgets.Button, "Show anatomy"),
        "make": _one(panel, widgets.Button, "Make grid"),
        "strengths": _one(panel, widgets.FloatRangeSlider, "Strengths"),
        "step": _one(panel, widgets.BoundedFloatText, "Step"),
        "prompts": _one(panel, widgets.Textarea, "Prompts"),
        "seeds": _one(panel, widgets.Text, "Seeds"),
        "steps": _one(panel, widgets.IntSlider, "Steps"),
        "grid": next(w for w in _walk(panel) if "labkit-lora-grid" in w._dom_classes),
        "error": next(w for w in _walk(panel) if isinstance(w, widgets.HTML)
                      and "labkit-error-box" in w._dom_classes),
        "anatomy": next(w for w in _walk(panel) if "labkit-lora-anatomy" in w._dom_classes),
    }


def test_anatomy_shows_the_table_and_four_figures(world):
    panel = lora_panel(model=str(world["model"]), lora=str(world["lora"]))
    p = _parts(panel)
    assert p["lora"].value == str(world["lora"])
    assert p["grid"].layout.display == "none"  # no broken-image icon before the first grid
    p["show"].click()
    assert p["error"].value == ""
    html = p["anatomy"].value
    assert "labkit-table" in html and "7 modules" in html and "OUT03" in html
    figures = [w for w in _walk(panel) if isinstance(w, widgets.Image) and w is not p["grid"]]
    assert len(figures) == 4 and all(bytes(f.value).startswith(PNG) for f in figures)
    assert all(f.layout.width == f"{png_size(f.value)[0]}px" for f in figures)  # not stretched


def test_a_grid_of_two_loras_by_strength_and_seed(world):
    p = _parts(lora_panel(model=str(world["model"]), lora=str(world["lora"])))
    p["compare"].value = str(world["loha"])
    p["strengths"].value = (0.0, 1.0)
    p["step"].value = 0.5
    p["seeds"].value = "1, 2"
    p["steps"].value = 2
    p["make"].click()
    assert p["error"].value == ""
    grid = Image.open(io.BytesIO(p["grid"].value))
    assert p["grid"].layout.display == "" and p["grid"].layout.width == f"{grid.width}px"
    assert grid.width >= 6 * 128 and grid.height >= 2 * 128  # 2 LoRAs x 3 strengths, 2 seeds


def test_errors_go_to_the_red_box(world):
    p = _parts(lora_panel(model=str(world["model"]), lora=str(world["ti"])))
    p["show"].click()
    assert "labkit-error" in p["error"].value and "textual inversion" in p["error"].value
    p["lora"].value = str(world["lora"])
    p["seeds"].value = "one"
    p["make"].click()
    assert "whole numbers" in p["error"].value
    p["seeds"].value = "1"
    p["step"].value = 0.05
    p["prompts"].value = "a\nb\nc"
    p["make"].click()
    assert "at most" in p["error"].value


def test_no_lora_chosen_says_so():
    panel = lora_panel(lora=None)
    p = _parts(panel)
    _one(panel, widgets.Dropdown, "LoRA").value = PATH_CHOICE
    p["lora"].value = ""
    p["show"].click()
    assert "no LoRA chosen" in p["error"].value


def test_strength_and_seed_parsing():
    assert strengths_of(0.0, 1.0, 0.25) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert strengths_of(0.5, 1.5, 0.4) == [0.5, 0.9, 1.3]
    assert seeds_of("1, 2 3") == [1, 2, 3]


def _names(dropdown):
    return [name for _, name in dropdown.options]


def _labels(dropdown):
    return [label for label, _ in dropdown.options]


def test_the_adapters_offered_follow_the_model_s_base():
    panel = lora_panel(model="demo_sd1")
    model = _one(panel, widgets.Dropdown, "Model")
    lora, compare = _one(panel, widgets.Dropdown, "LoRA"), _one(panel, widgets.Dropdown, "Compare")
    assert {"demo_lora_striped", "demo_loha_outlined"} <= set(_names(lora))
    assert "demo_lora_striped_xl" not in _names(lora) and lora.value == "demo_lora_striped"
    model.value = "demo_sdxl"
    assert _names(lora) == ["demo_lora_striped_xl", PATH_CHOICE]
    assert lora.value == "demo_lora_striped_xl" and compare.value == NONE_CHOICE
    assert "made for <b>demo_sdxl</b>" in " ".join(w.value for w in _walk(panel)
                                                   if isinstance(w, widgets.HTML))
    _parts(panel)["model"].value = "/some/model.safetensors"  # a model the manifest does not know
    assert {"demo_lora_striped_xl (demo_sdxl)", "demo_lora_striped (demo_sd1)"} <= set(_labels(lora))
    assert lora.value == "demo_lora_striped_xl"


def test_the_sdxl_lora_shows_its_anatomy_and_makes_a_grid():
    p = _parts(lora_panel(model="demo_sdxl", lora="demo_lora_striped_xl"))
    p["show"].click()
    assert p["error"].value == ""
    assert "lora for demo_sdxl" in p["anatomy"].value and "Not for the chosen" not in p["anatomy"].value
    p["strengths"].value, p["step"].value, p["steps"].value = (0.0, 1.0), 1.0, 2
    p["make"].click()
    assert p["error"].value == ""
    assert Image.open(io.BytesIO(p["grid"].value)).width >= 2 * 128


@pytest.mark.parametrize(("model", "lora", "families"), [
    ("demo_sdxl", "demo_lora_striped", ("for demo_sd1", "pipeline is demo_sdxl")),
    ("demo_sd1", "demo_lora_striped_xl", ("for demo_sdxl", "pipeline is demo_sd1")),
])
def test_a_lora_of_the_other_family_is_refused_in_plain_words(model, lora, families):
    from labkit import zoo
    p = _parts(lora_panel(model=model, lora=lora))
    assert p["lora"].value == str(zoo.path(lora))  # not offered: it comes in by its path
    p["show"].click()
    assert p["error"].value == "" and "Not for the chosen model" in p["anatomy"].value
    p["steps"].value = 1
    p["make"].click()
    assert "labkit-error" in p["error"].value and "Traceback" not in p["error"].value
    assert all(f in p["error"].value for f in families)
    assert p["grid"].value == b""
