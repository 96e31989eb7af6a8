"""Pieces every panel shares: showing a table, a figure or an error in an Output."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import pandas as pd

from labkit.errors import LabkitError

ERROR_STYLE = ("background:#fde8e8;border:1px solid #e02424;color:#9b1c1c;"
               "padding:6px 10px;border-radius:4px")


def error_html(error: Exception) -> str:
    """An error as a red box of plain words."""
    return f'<div class="labkit-error" style="{ERROR_STYLE}">{html.escape(str(error))}</div>'


def table_html(frame: pd.DataFrame, max_rows: int = 200) -> str:
    """A DataFrame as compact HTML."""
    return frame.to_html(index=False, max_rows=max_rows, classes="labkit-table", border=0)


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
