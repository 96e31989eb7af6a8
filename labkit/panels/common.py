"""Pieces every panel shares: the demo files on offer, showing a table, an image or an error,
running a button's work."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd

from labkit.errors import LabkitError

ERROR_STYLE = ("background:#fde8e8;border:1px solid #e02424;color:#9b1c1c;"
               "padding:6px 10px;border-radius:4px")
PATH_CHOICE = "(the path below)"
NONE_CHOICE = "(none)"
CHECKPOINTS = ("checkpoint",)  # the manifest kind of the models a pipeline loads
# Tables: headers over their columns, cells apart, and a wide table scrolls in its box.
TABLE_CSS = ("<style>.labkit-scroll{overflow-x:auto;max-width:100%}"
             ".widget-html-content:has(>.labkit-scroll){min-width:0;max-width:100%}"
             ".labkit-table{border-collapse:collapse;font-size:12px;line-height:1.4}"
             ".labkit-scroll .labkit-table th,.labkit-scroll .labkit-table td{text-align:left;"
             "vertical-align:top;padding:2px 14px 2px 4px;border-bottom:1px solid #e5e7eb}"
             ".labkit-scroll .labkit-table th{white-space:nowrap;border-bottom:1px solid #9ca3af}"
             ".labkit-scroll .labkit-table td{max-width:48em;overflow-wrap:break-word}</style>")


def demo_entries() -> list[dict]:
    """The demo world's manifest entries, or [] when it is not there."""
    try:
        from labkit import zoo
        return zoo.manifest()
    except (ImportError, LabkitError):
        return []


def demo_names(kinds: tuple[str, ...] | None = None, base: str | None = None) -> list[str]:
    """The names of the demo files of some kinds (every kind for None) made for one base
    (every base for None)."""
    return [e["name"] for e in demo_entries()
            if (kinds is None or e["kind"] in kinds) and (base is None or e.get("base") == base)]


def demo_base(name: str) -> str | None:
    """A demo file's base in the manifest (demo_sd1, demo_sdxl), None for any other name."""
    return next((e.get("base") for e in demo_entries() if e["name"] == name), None)


def demo_options(kinds: tuple[str, ...], base: str | None) -> list[tuple[str, str]]:
    """Dropdown (label, name) pairs for the demo files of some kinds: those made for `base`, or
    for None (a model the manifest does not know) every one, labelled with its base."""
    if base is not None:
        return [(n, n) for n in demo_names(kinds, base)]
    return [(f"{e['name']} ({e.get('base', '?')})", e["name"]) for e in demo_entries()
            if e["kind"] in kinds]


def typed_path(value: str | None, offered: list[str]) -> str:
    """What a path box starts with for a preselected `value`: nothing when the dropdown offers
    it, a demo file's path when the dropdown does not (one for another base), else the value."""
    if value is None or value in offered:
        return ""
    if demo_base(value) is not None:
        from labkit import zoo
        return str(zoo.path(value))
    return str(value)


class Picker:
    """A dropdown of demo files (then "(the path below)", and first "(none)" when optional) and
    a path box; a typed path wins. `what` names the file in "no ... chosen"."""

    def __init__(self, label: str, options: list[tuple[str, str]], value: str | None, what: str,
                 optional: bool = False, path_label: str = "Path",
                 placeholder: str = "a .safetensors file or folder"):
        self.optional, self.what = optional, what
        full = self._with_choices(options)
        names = [name for _, name in full]
        self.choice = widgets.Dropdown(options=full, description=label,
                                       value=value if value in names else names[0])
        self.path = widgets.Text(value=typed_path(value, names), description=path_label,
                                 placeholder=placeholder, layout=widgets.Layout(width="55%"))
        self.widget = widgets.HBox([self.choice, self.path])

    def _with_choices(self, options: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return ([(NONE_CHOICE, NONE_CHOICE)] if self.optional else []) + options \
            + [(PATH_CHOICE, PATH_CHOICE)]

    def offer(self, options: list[tuple[str, str]]) -> None:
        """Offer these demo files as (label, name); the choice stays when still offered, else
        the first of them is chosen."""
        keep = self.choice.value
        self.choice.options = self._with_choices(options)
        names = [name for _, name in self.choice.options]
        self.choice.value = keep if keep in names else next((n for _, n in options), names[0])

    def base(self) -> str | None:
        """The manifest base of the chosen demo file; None for a typed path or no demo file."""
        return None if self.path.value.strip() else demo_base(self.choice.value)

    def resolve(self) -> Path | None:
        """The chosen file (None for "(none)"). Raises LabkitError when nothing is chosen."""
        if self.path.value.strip():
            return Path(self.path.value.strip()).expanduser()
        if self.choice.value == NONE_CHOICE:
            return None
        if self.choice.value == PATH_CHOICE:
            raise LabkitError(f"no {self.what} chosen.",
                              hint=f"Pick a demo file or type the path of a {self.what}.")
        from labkit import zoo
        return zoo.path(self.choice.value)


def error_html(error: Exception) -> str:
    """An error as a red box of plain words."""
    return f'<div class="labkit-error" style="{ERROR_STYLE}">{html.escape(str(error))}</div>'


def table_html(frame: pd.DataFrame, max_rows: int = 200) -> str:
    """A DataFrame as compact HTML: headers left-aligned over their columns, missing values
    blank, in a box that scrolls sideways when the table is wider than the panel."""
    if len(frame):  # NaN is blanked by na_rep, <NA> and None are not
        frame = frame.apply(lambda col: col if col.dtype.kind == "f" or col.notna().all()
                            else col.astype(object).where(col.notna(), ""))
    table = frame.to_html(index=False, max_rows=max_rows, classes="labkit-table", border=0,
                          na_rep="", justify="left")
    return f"{TABLE_CSS}<div class='labkit-scroll'>{table}</div>"


def png_size(png: bytes) -> tuple[int, int]:
    """A PNG's (width, height) in pixels, read from its header."""
    data = bytes(png)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def image_widget(css_class: str | None = None) -> widgets.Image:
    """A PNG Image widget hidden until it has a picture (an empty one shows a broken icon)."""
    image = widgets.Image(format="png", layout=widgets.Layout(display="none"))
    if css_class:
        image.add_class(css_class)
    return image


def show_png(target: widgets.Image, png: bytes, width: int | None = None) -> None:
    """Show a PNG at its own size (or `width` px wide, to scale), never stretched and never
    wider than the panel; empty bytes hide the widget."""
    if not png:
        target.value, target.layout.display = b"", "none"
        return
    w, _ = png_size(png)
    target.value = png
    target.layout.width, target.layout.max_width = f"{width or w}px", "100%"
    target.layout.height, target.layout.display = "auto", ""


def figure_image(png: bytes, css_class: str | None = None) -> widgets.Image:
    """A new Image widget showing a PNG at its own size."""
    image = image_widget(css_class)
    show_png(image, png)
    return image


def run_into(out: widgets.Output, html_widget: widgets.HTML, work: Callable[[], Any]) -> Any:
    """Run `work`, showing a LabkitError in the red box instead of a traceback."""
    html_widget.value = ""
    with out:
        try:
            return work()
        except LabkitError as e:
            html_widget.value = error_html(e)
            return None


def run_from_button(button: widgets.Button, out: widgets.Output, html_widget: widgets.HTML,
                    status: widgets.HTML | widgets.Label, work: Callable[[], Any]) -> Any:
    """Run `work` for a click: the button is off while it runs, and an error clears the status."""
    button.disabled = True
    try:
        result = run_into(out, html_widget, work)
        if html_widget.value:
            status.value = ""
        return result
    finally:
        button.disabled = False
