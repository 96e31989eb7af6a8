"""The generate panel: a click makes an image; a bad path shows the red box."""

from __future__ import annotations

import ipywidgets as widgets
import pytest
import torch

from labkit.panels.common import PATH_CHOICE
from labkit.panels.generate import generate_panel
from tests.tiny_models import save_tiny

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a busy 2-core machine runs faster alone
    yield save_tiny(tmp_path_factory.mktemp("tiny") / "sd1", "sd1")
    torch.set_num_threads(threads)


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
    p["prompt"].value = "a blue square"
    p["steps"].value = 5
    p["generate"].click()
    assert p["error"].value == ""
    assert bytes(p["images"].value).startswith(PNG)
    assert bytes(p["strip"].value).startswith(PNG)
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
