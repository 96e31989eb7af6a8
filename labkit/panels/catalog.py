"""The catalog panel: a folder catalogued (a progress bar while files are read), the table
filtered by kind and base, and the counts by base and kind as a figure."""

from __future__ import annotations

import html
import time

import ipywidgets as widgets
import pandas as pd

from labkit.panels.common import image_widget, run_from_button, run_into, show_png, table_html

SHOWN_ROWS = 200


def default_folder() -> str:
    """The demo world's data folder (zoo.data_dir()), the panel's first folder."""
    from labkit import zoo

    return str(zoo.data_dir())


class CatalogPanel:
    """The catalog panel's widgets and wiring; `.widget` is what a notebook shows."""

    def __init__(self, folder: str | None = None, hashes: bool = False):
        self.frame: pd.DataFrame | None = None
        self.folder = widgets.Text(value=folder or default_folder(), description="Folder",
                                   placeholder="a folder of model files",
                                   layout=widgets.Layout(width="70%"))
        self.hashes = widgets.Checkbox(value=hashes, description="Hashes (reads every byte)",
                                       indent=False)
        self.go = widgets.Button(description="Catalog", icon="list", button_style="primary")
        self.kinds = widgets.SelectMultiple(description="Kinds", rows=6)
        self.bases = widgets.SelectMultiple(description="Bases", rows=6)
        self.status, self.error, self.table = widgets.HTML(), widgets.HTML(), widgets.HTML()
        self.figure = image_widget("labkit-catalog-figure")
        self.out = widgets.Output()
        for part, name in ((self.status, "status"), (self.table, "table")):
            part.add_class(f"labkit-catalog-{name}")
        self.filters = widgets.HBox([self.kinds, self.bases,
                                     widgets.HTML("<i>Select none for all; ctrl/shift-click "
                                                  "for several.</i>")])
        self.filters.layout.display = "none"
        self.widget = widgets.VBox([
            widgets.HTML("<h3>Catalog a folder</h3>"),
            widgets.HBox([self.folder, self.hashes]), self.go, self.out, self.status,
            self.error, self.filters, self.table, self.figure])
        self.widget.add_class("labkit-catalog")
        self.go.on_click(lambda b: run_from_button(b, self.out, self.error, self.status,
                                                   self._catalog))
        for select in (self.kinds, self.bases):
            select.observe(lambda _: run_into(self.out, self.error, self.show), names="value")

    def _catalog(self) -> None:
        """Catalog the folder (progress bar in the panel), then offer its kinds and bases."""
        from labkit.inventory import catalog
        from labkit.inventory import figures as F

        self.frame, self.table.value, self.status.value = None, "", "<i>Cataloguing...</i>"
        self.filters.layout.display = "none"
        show_png(self.figure, b"")
        self.out.clear_output()
        started = time.perf_counter()
        frame = catalog(self.folder.value.strip(), hashes=self.hashes.value, progress=True)
        seconds = time.perf_counter() - started
        self.kinds.options, self.bases.options = F.choices(frame, "kind"), F.choices(frame, "base")
        # (no redraw while the options change: self.frame is still None)
        self.frame = frame
        self.filters.layout.display = "" if len(frame) else "none"
        self.show()
        self.status.value = (f"{len(frame)} model files and folders in {seconds:.1f} s "
                             f"(unchanged files come from the cache).")

    def show(self) -> None:
        """The rows the filters keep, and their counts by base and kind."""
        from labkit.inventory import figures as F
        from labkit.stats.figures import to_png

        if self.frame is None:
            return
        rows = F.filtered(self.frame, self.kinds.value, self.bases.value)
        if rows.empty:
            self.table.value = (f"<i>No model files in {html.escape(self.folder.value)}"
                                + (" with these filters" if len(self.frame) else "") + ".</i>")
            show_png(self.figure, b"")
            return
        self.table.value = (f"<b>{len(rows)} of {len(self.frame)} rows</b>"
                            + table_html(F.shown_table(rows), SHOWN_ROWS))
        show_png(self.figure, to_png(F.counts_figure(rows, kinds=self.kinds.options)))


def catalog_panel(folder: str | None = None, hashes: bool = False) -> widgets.Widget:
    """Catalog a folder of model files (default the demo world's data/): the table, filters by
    kind and base, and a figure of counts by base and kind."""
    return CatalogPanel(folder, hashes).widget
