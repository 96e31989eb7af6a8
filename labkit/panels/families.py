"""The families panel: two models (a family's key table, a demo file or a typed path) side by
side, what made for one would not fit the other, and their parameters per part."""

from __future__ import annotations

import html

import ipywidgets as widgets

from labkit.families import compare as C
from labkit.families.tables import family_parts, layout_names, parts
from labkit.panels.common import (
    PATH_CHOICE,
    Picker,
    demo_options,
    image_widget,
    run_into,
    show_png,
    table_html,
)
from labkit.stats.figures import PART_COLOURS, family_parameters_figure, to_png

TABLE = "table:"  # dropdown values of the key tables, beside the demo files' names
DEMO_KINDS = (*C.CHECKPOINT_KINDS, *C.ADAPTER_KINDS)


def model_options() -> list[tuple[str, str]]:
    """Dropdown (label, value) pairs: the real key tables (data/layouts), then the demo
    checkpoints and adapters, labelled with their base."""
    tables = [(f"{C.TABLE_LABELS.get(n, n)} (key table)", TABLE + n) for n in layout_names()]
    return tables + demo_options(DEMO_KINDS, None)


def chosen(picker: Picker) -> C.Model:
    """The model a picker names: a typed path, else a key table or a demo file.
    Raises LabkitError when it names none or it cannot be opened."""
    typed = picker.path.value.strip()
    if not typed and picker.choice.value.startswith(TABLE):
        return C.from_key_table(picker.choice.value.removeprefix(TABLE))
    path = picker.resolve()
    return C.from_file(path, None if typed else picker.choice.value)


def distinct(a: C.Model, b: C.Model) -> tuple[C.Model, C.Model]:
    """The two models, labelled "A: ..." and "B: ..." when their labels are the same."""
    if a.label != b.label:
        return a, b
    return a._replace(label=f"A: {a.label}"), b._replace(label=f"B: {b.label}")


def parts_html(model: C.Model) -> str:
    """One model's parts (labkit.families.tables.parts) under its label, "-" for widths not read; the
    key prefixes are in the comparison above."""
    frame = parts(model.table).drop(columns="prefix")
    frame["parameters"] = frame["parameters"].map(lambda n: f"{n / 1e6:,.2f}M")
    frame = frame.astype(object).where(frame.notna(), "-").replace("", "-")
    return f"<b>{html.escape(model.label)}</b>{table_html(frame)}"


class FamiliesPanel:
    """The families panel's widgets and wiring; `.widget` is what a notebook shows."""

    def __init__(self, a: str | None = None, b: str | None = None):
        options = model_options()
        tables = set(layout_names())
        self.a, self.b = (Picker(label, options, TABLE + v if v in tables else v, "model",
                                 placeholder="a model file or folder")
                          for label, v in (("Model A", a), ("Model B", b)))
        self.compare = widgets.Button(description="Compare", icon="columns",
                                      button_style="primary")
        self.error = widgets.HTML()
        self.verdict = widgets.HTML()
        self.table = widgets.HTML()
        self.parts = tuple(widgets.HTML(layout=widgets.Layout(width="50%", padding="0 12px 0 0"))
                           for _ in "ab")
        self.figure = image_widget()
        self.out = widgets.Output()
        for part, name in ((self.verdict, "verdict"), (self.table, "table"),
                           (self.figure, "figure")):
            part.add_class(f"labkit-families-{name}")
        self.widget = widgets.VBox([
            widgets.HTML("<h3>Compare two models</h3>"), self.a.widget, self.b.widget,
            self.compare, self.error, self.verdict, self.table,
            widgets.HBox(self.parts),
            self.figure, self.out])
        for picker in (self.a, self.b):
            picker.path.continuous_update = False  # a typed path counts once typed (Enter)
            picker.path.observe(lambda _: self.show(), names="value")
            picker.choice.observe(lambda change, p=picker: self._choose(p, change["new"]),
                                  names="value")
        self.compare.on_click(lambda _: self.show())
        self.show()

    def _choose(self, picker: Picker, choice: str) -> None:
        """A model picked in a dropdown replaces a typed path (clearing it shows the pair)."""
        if choice != PATH_CHOICE and picker.path.value:
            picker.path.value = ""
        else:
            self.show()

    def show(self) -> None:
        """Open both models and show them side by side; an error goes to the red box."""
        for part in (self.verdict, self.table, *self.parts):
            part.value = ""
        show_png(self.figure, b"")  # hidden: no broken-image icon
        models = run_into(self.out, self.error, lambda: (chosen(self.a), chosen(self.b)))
        if models is None:
            return
        a, b = distinct(*models)
        words = C.verdict(a, b)
        self.verdict.value = f"<b>{html.escape(words)}</b>" if words else ""
        self.table.value = table_html(C.compare_table([a, b]).reset_index())
        for part, model in zip(self.parts, (a, b), strict=True):
            part.value = parts_html(model)
        frame = family_parts({a.label: a.table, b.label: b.table})
        if frame["part"].isin(PART_COLOURS).any():  # an embedding has no part to draw
            show_png(self.figure, to_png(family_parameters_figure(frame)))


def families_panel(a: str | None = "demo_sd1_single",
                   b: str | None = "demo_sdxl_single") -> widgets.Widget:
    """Compare two models, each a real family's key table (e.g. "sdxl_base"), a demo checkpoint
    or adapter, or a path: their identity, widths, key prefixes and parts side by side, what of
    one would not fit the other, and their parameters per part."""
    return FamiliesPanel(a, b).widget
