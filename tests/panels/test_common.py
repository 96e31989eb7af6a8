"""The pieces every panel shares: tables whose headers sit over their columns, blanks for missing
values, a box that scrolls; images at their own size, hidden while empty."""

from __future__ import annotations

import io

import ipywidgets as widgets
import numpy as np
import pandas as pd
from PIL import Image

from labkit.panels.common import figure_image, image_widget, png_size, show_png, table_html


def png_of(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buf, format="PNG")
    return buf.getvalue()


def test_a_table_scrolls_in_its_box_with_headers_over_their_columns():
    html = table_html(pd.DataFrame({"check": ["device"], "note": ["a long note " * 20]}))
    assert "<div class='labkit-scroll'>" in html and "overflow-x:auto" in html
    assert "text-align: right" not in html  # pandas' default right-aligned header row
    assert ".labkit-scroll .labkit-table th,.labkit-scroll .labkit-table td{text-align:left" in html
    assert "padding:" in html  # columns do not run together


def test_missing_values_are_blank():
    frame = pd.DataFrame({"a": [1.0, np.nan], "b": pd.array([1, None], dtype="Int64"),
                          "c": ["x", None]})
    html = table_html(frame)
    assert "NaN" not in html and "&lt;NA&gt;" not in html and "None" not in html
    assert html.count("<td></td>") == 3


def test_an_image_is_hidden_until_it_has_a_picture():
    image = image_widget("labkit-x")
    assert image.value == b"" and image.layout.display == "none"
    assert "labkit-x" in image._dom_classes


def test_an_image_shows_at_its_own_size_never_stretched():
    image = image_widget()
    show_png(image, png_of(384, 208))
    assert png_size(image.value) == (384, 208)
    assert image.layout.display == "" and image.layout.width == "384px"
    assert image.layout.max_width == "100%" and image.layout.height == "auto"
    show_png(image, png_of(64, 64), width=256)
    assert image.layout.width == "256px"
    show_png(image, b"")
    assert image.value == b"" and image.layout.display == "none"


def test_a_figure_image_is_shown_at_its_size():
    image = figure_image(png_of(300, 100))
    assert isinstance(image, widgets.Image) and image.layout.width == "300px"
