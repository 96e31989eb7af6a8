"""The welcome panel: check the set-up with one click."""

from __future__ import annotations

import ipywidgets as widgets

from labkit.generate.setup_check import doctor
from labkit.panels.common import table_html


def welcome_panel() -> widgets.VBox:
    """A button that runs the set-up checks and shows them as a table with a one-line verdict."""
    button = widgets.Button(description="Check my set-up", icon="stethoscope",
                            button_style="primary")
    verdict = widgets.HTML("<i>Click the button to check Python, the libraries, the device and "
                           "the demo files.</i>")
    table = widgets.HTML()

    def on_click(_: widgets.Button) -> None:
        checks = doctor()
        failed = checks.loc[~checks["ok"], "check"].tolist()
        verdict.value = ("<b style='color:#057a55'>All set: the lab is ready.</b>" if not failed
                         else f"<b style='color:#c81e1e'>Needs attention: {', '.join(failed)}</b>")
        table.value = table_html(checks)

    button.on_click(on_click)
    return widgets.VBox([widgets.HTML("<h3>labkit set-up check</h3>"), button, verdict, table])
