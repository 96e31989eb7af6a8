"""The stats panel: one model's tensors by the numbers, one tensor's histogram, and two models
compared tensor by tensor and block by block."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

import ipywidgets as widgets
import pandas as pd

from labkit.panels.common import demo_names, image_widget, run_into, show_png, table_html
from labkit.stats import figures as stats_plots
from labkit.stats import per_tensor as stats

if TYPE_CHECKING:
    from labkit.files.model_file import ModelFile

STATS_SORT = ("name", "component", "block", "dtype", "numel", "bytes", "mean", "std", "abs_max",
              "l2_norm", "zero_fraction", "nan_count", "inf_count")
COMPARE_SORT = ("name", "block", "status", "max_abs_diff", "rel_diff", "cosine")
MAX_ROWS = 300
SCROLL = {"max_height": "360px", "overflow": "auto"}  # long tables scroll inside the panel
HINT = "<i>Pick a demo file or type a path, then click Compute.</i>"


def shown(frame: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: floats to 4 significant digits, tuples as AxB."""
    def cell(v: object) -> object:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        if isinstance(v, tuple):
            return "x".join(map(str, v)) or "scalar"
        return v

    return frame.apply(lambda col: col.map(cell))


class ModelPicker:
    """A demo-file dropdown that fills a path box."""

    def __init__(self, label: str, path: str | None, names: list[str]):
        self.path = widgets.Text(value=path or "", description=label,
                                 placeholder="path to a model file or folder",
                                 layout=widgets.Layout(width="55%"))
        self.demo = widgets.Dropdown(options=[("demo files…", "")] + [(n, n) for n in names],
                                     value="", layout=widgets.Layout(
                                         width="230px", display="" if names else "none"))
        self.demo.observe(self._pick, names="value")
        self.widget = widgets.HBox([self.path, self.demo])

    def _pick(self, change: dict) -> None:
        if change["new"]:
            from labkit import zoo
            self.path.value = str(zoo.path(change["new"]))


class StatsPanel:
    """The stats panel's widgets and wiring; `.widget` is what a notebook shows."""

    def __init__(self, path: str | None = None, other: str | None = None):
        names = demo_names()
        self.model: ModelFile | None = None
        self.table = pd.DataFrame()
        self.comparison = pd.DataFrame()
        self.a = ModelPicker("Model", path, names)
        self.b = ModelPicker("Compare", other, names)
        self.compute = widgets.Button(description="Compute", icon="calculator",
                                      button_style="primary")
        self.error = widgets.HTML()
        self.out = widgets.Output()
        self.filter = widgets.Text(placeholder="filter names (substring or regex)",
                                   description="Filter", continuous_update=False)
        self.sort = widgets.Dropdown(options=STATS_SORT, value="name", description="Sort by")
        self.ascending = widgets.ToggleButtons(options=[("ascending", True), ("descending", False)],
                                               value=True, style={"button_width": "90px"})
        self.count = widgets.HTML(HINT)
        self.rows = widgets.HTML(layout=SCROLL)
        self.tensor = widgets.Dropdown(options=[], description="Tensor",
                                       layout=widgets.Layout(width="70%"))
        self.histogram = image_widget()
        self.histogram_of = widgets.HTML()
        self.summary = widgets.HTML()
        self.figures = image_widget()
        self.compare_count = widgets.HTML("<i>Give a second model to compare.</i>")
        self.compare_rows = widgets.HTML(layout=SCROLL)
        self.compare_figure = image_widget()
        for part, name in ((self.rows, "rows"), (self.histogram, "histogram"),
                           (self.histogram_of, "histogram-of"),
                           (self.compare_count, "compare-count"), (self.compare_rows, "compare-rows")):
            part.add_class(f"labkit-stats-{name}")
        self.tabs = widgets.Tab(children=[
            widgets.VBox([self.count, self.rows, self.tensor, self.histogram_of,
                          self.histogram]),
            widgets.VBox([self.summary, self.figures]),
            widgets.VBox([self.compare_count, self.compare_figure, self.compare_rows])])
        for i, title in enumerate(("Tensors", "Components and blocks", "Compare")):
            self.tabs.set_title(i, title)
        self.widget = widgets.VBox([
            widgets.HTML("<h3>Tensor statistics</h3>"), self.a.widget, self.b.widget,
            widgets.HBox([self.compute, self.filter, self.sort, self.ascending]),
            self.error, self.out, self.tabs])
        self.compute.on_click(lambda _: self.run())
        for control in (self.filter, self.sort, self.ascending):
            control.observe(lambda _: self.show_rows(), names="value")
        self.tensor.observe(lambda _: self.show_histogram(), names="value")
        if path:
            self.run()

    def run(self) -> None:
        """Compute the stats of the first model (and the comparison with the second, if given)."""
        self.out.clear_output()
        self.model, self.table, self.comparison = None, pd.DataFrame(), pd.DataFrame()
        for part in (self.rows, self.compare_rows, self.summary):
            part.value = ""
        for image in (self.histogram, self.figures, self.compare_figure):
            show_png(image, b"")
        path, other = self.a.path.value.strip(), self.b.path.value.strip()
        if not path:
            self.count.value = HINT
            return
        self.model = run_into(self.out, self.error, lambda: stats.as_model(path))
        if self.model is None:
            return
        table = run_into(self.out, self.error, lambda: stats.tensor_stats(self.model))
        if table is None:
            return
        self.table = table
        self.summary.value = table_html(stats.by_component(self.table).pipe(shown))
        show_png(self.figures, stats_plots.to_png(stats_plots.component_figure(self.table)))
        self.show_rows()
        if other:
            self.compare(other)

    def compare(self, other: str) -> None:
        """Compare the open model with `other`: counts by status, the figure, the table."""
        comparison = run_into(self.out, self.error,
                              lambda: stats.compare(self.model, other, ema=True))
        if comparison is None:
            return
        self.comparison = comparison
        counts = ", ".join(f"{s}: {n}" for s, n in stats.status_counts(comparison).items() if n)
        self.compare_count.value = f"<b>{len(comparison):,} tensors</b> — {counts}"
        show_png(self.compare_figure,
                 stats_plots.to_png(stats_plots.difference_figure(comparison)))
        self.show_compare_rows()

    def show_rows(self) -> None:
        """Show the rows that pass the filter, sorted; offer their names for the histogram."""
        if self.table.empty:
            return
        rows = stats.select_rows(self.table, self.filter.value.strip(), self.sort.value,
                                 self.ascending.value)
        self.count.value = f"<i>{len(rows):,} of {len(self.table):,} tensors</i>"
        self.rows.value = table_html(shown(rows.drop(columns=["lora_part"])), max_rows=MAX_ROWS)
        names = list(rows["name"][:MAX_ROWS])
        self.tensor.options = names
        self.tensor.value = names[0] if names else None
        self.show_compare_rows()

    def show_compare_rows(self) -> None:
        """The comparison rows that pass the filter, sorted (by name if the column is not one
        of the comparison's)."""
        if self.comparison.empty:
            return
        sort = self.sort.value if self.sort.value in COMPARE_SORT else "name"
        rows = stats.select_rows(self.comparison, self.filter.value.strip(), sort,
                                 self.ascending.value)
        self.compare_rows.value = table_html(shown(rows), max_rows=MAX_ROWS)

    def show_histogram(self) -> None:
        """The histogram of the tensor picked in the dropdown, its name above it."""
        name = self.tensor.value
        show_png(self.histogram, b"")
        self.histogram_of.value = ""
        if self.model is None or not name:
            return
        tensor = run_into(self.out, self.error, lambda: self.model.tensor(name))
        if tensor is not None:
            show_png(self.histogram,
                     stats_plots.to_png(stats_plots.histogram_figure(tensor, name)))
            self.histogram_of.value = f"<i>values of</i> <code>{html.escape(name)}</code>"


def stats_panel(path: str | None = None, other: str | None = None) -> widgets.Widget:
    """Pick one or two models; see per-tensor statistics (filter, sort, histogram of a tensor),
    sizes by component, and the comparison of the two."""
    return StatsPanel(path, other).widget
