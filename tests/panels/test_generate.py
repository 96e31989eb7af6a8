"""The generate panel: a click makes an image with either demo world (SDXL's second prompt too);
a bad path shows the red box."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

from labkit.panels.common import PATH_CHOICE, png_size
from labkit.panels.generate import generate_panel
from tests.fixtures.lora_samples import single_thread
from tests.fixtures.tiny_models import save_tiny

PNG = b"\x89PNG\r\n\x1a\n"
one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "sd1", "sd1")


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def _find(panel, cls, description=None):
    found = [w for w in _walk(panel) if isinstance(w, cls)
             and (description is None or w.description == description)]
    assert found, f"no {cls.__name__} {description!r}"
    return found


def _parts(panel):
    images, strip = _find(panel, widgets.Image)
    return {
        "picker": _find(panel, widgets.Dropdown, "Model")[0],
        "path": _find(panel, widgets.Text, "Path")[0],
        "prompt": _find(panel, widgets.Text, "Prompt")[0],
        "seed": _find(panel, widgets.BoundedIntText, "Seed")[0],
        "dice": next(w for w in _find(panel, widgets.Button) if w.tooltip == "roll a random seed"),
        "steps": _find(panel, widgets.IntSlider, "Steps")[0],
        "generate": _find(panel, widgets.Button, "Generate")[0],
        "bar": _find(panel, widgets.IntProgress)[0],
        "error": next(w for w in _find(panel, widgets.HTML) if "labkit-error-box" in w._dom_classes),
        "images": images,
        "strip": strip,
    }


def test_generate_shows_an_image_progress_and_a_strip(tiny):
    panel = generate_panel(model=str(tiny))
    p = _parts(panel)
    assert p["path"].value == str(tiny)
    assert p["images"].layout.display == p["strip"].layout.display == "none"  # no broken icon
    p["prompt"].value = "a blue square"
    p["steps"].value = 5
    p["generate"].click()
    assert p["error"].value == ""
    assert bytes(p["images"].value).startswith(PNG)
    assert bytes(p["strip"].value).startswith(PNG)
    for image in (p["images"], p["strip"]):  # at its own size, not stretched to the panel
        assert image.layout.display == ""
        assert image.layout.width == f"{png_size(image.value)[0]}px"
    assert p["bar"].value == p["bar"].max == 5


def test_a_bad_path_shows_the_red_box(tmp_path):
    p = _parts(generate_panel(model=str(tmp_path / "missing.safetensors")))
    p["generate"].click()
    assert "labkit-error" in p["error"].value
    assert "missing.safetensors" in p["error"].value
    assert bytes(p["images"].value) == b""


def test_no_model_chosen_says_so():
    p = _parts(generate_panel())
    p["picker"].value = PATH_CHOICE
    p["path"].value = ""
    p["generate"].click()
    assert "no model chosen" in p["error"].value


def test_the_dice_picks_a_new_seed():
    p = _parts(generate_panel())
    before = p["seed"].value
    p["dice"].click()
    assert p["seed"].value != before


@pytest.mark.parametrize(("name", "pipeline", "encoders"), [
    ("demo_sd1", "StableDiffusionPipeline", "1 text encoder(s), text_encoder (CLIPTextModel)"),
    ("demo_sdxl", "StableDiffusionXLPipeline",
     "2 text encoder(s), text_encoder (CLIPTextModel) and text_encoder_2 "
     "(CLIPTextModelWithProjection)"),
    ("demo_sdxl_single", "StableDiffusionXLPipeline", "2 text encoder(s)"),
])
def test_both_demo_worlds_generate_and_show_their_parts(name, pipeline, encoders):
    panel = generate_panel(model=name)
    p = _parts(panel)
    assert p["picker"].value == name and p["path"].value == ""
    p["steps"].value = 2
    p["generate"].click()
    assert p["error"].value == ""
    assert bytes(p["images"].value).startswith(PNG)
    parts = next(w for w in _walk(panel) if "labkit-generate-parts" in w._dom_classes).value
    assert f"<b>{pipeline}</b>" in parts and encoders in parts and "unet" in parts
    status = next(w for w in _walk(panel) if "labkit-generate-status" in w._dom_classes).value
    assert "64x64" in status


def test_prompt_2_feeds_sdxl_s_second_encoder_and_sd1_says_it_has_one():
    panel = generate_panel(model="demo_sdxl")
    p = _parts(panel)
    prompt_2 = _find(panel, widgets.Text, "Prompt 2")[0]
    p["steps"].value = 2
    p["generate"].click()
    same = bytes(p["images"].value)
    prompt_2.value = "a green triangle on a black background"
    p["generate"].click()
    assert p["error"].value == "" and bytes(p["images"].value) != same
    p["picker"].value = "demo_sd1"
    p["generate"].click()
    assert "labkit-error" in p["error"].value and "one text encoder" in p["error"].value


def test_the_parts_table_names_the_scheduler_of_the_run_it_sits_under():
    panel = generate_panel(model="demo_sd1")
    p = _parts(panel)
    scheduler = _find(panel, widgets.Dropdown, "Scheduler")[0]
    parts = next(w for w in _walk(panel) if "labkit-generate-parts" in w._dom_classes)
    p["steps"].value = 2
    for name, cls in [("ddim", "DDIMScheduler"), ("euler", "EulerDiscreteScheduler")]:
        scheduler.value = name
        p["generate"].click()
        assert p["error"].value == ""
        assert cls in parts.value


def test_the_scheduler_menu_labels_the_ones_that_fail_on_the_demos():
    from labkit.generate.sampling import DEMO_CAVEATS, SCHEDULERS

    menu = _find(generate_panel(), widgets.Dropdown, "Scheduler")[0]
    assert [value for _, value in menu.options] == list(SCHEDULERS)
    labels = dict((value, label) for label, value in menu.options)
    assert DEMO_CAVEATS and all(DEMO_CAVEATS[n] in labels[n] for n in DEMO_CAVEATS)
    assert labels["euler"] == "euler"
