"""The model-surgery panel: merge two checkpoints, bake a LoRA in, extract a LoRA from two
checkpoints or resize one, into a temporary folder; the report as a table, a figure, and
pictures of the result beside its sources."""

from __future__ import annotations

import html
import tempfile
import time
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from labkit.panels.common import (
    CHECKPOINTS,
    Picker,
    demo_names,
    demo_options,
    image_widget,
    run_from_button,
    show_png,
    table_html,
)

OPERATIONS = ("merge", "bake", "extract", "resize")
VARIANT = "demo_sd1 + striped, baked"  # model B's default: made on first use
FINETUNE = "demo_sd1_outlined, a full fine-tune"  # model B's other lesson model: made on first use
ADAPTER_KINDS = ("lora", "loha", "lokr")
FIXED = "fixed rank"
DYNAMIC = (FIXED, "sv_ratio", "sv_fro", "sv_cumulative")
CELL_PX = 128  # the demo model draws 64 px: each picture enlarged, without smoothing


def _shown(items: list[widgets.Widget], on: bool) -> None:
    for item in items:
        item.layout.display = "" if on else "none"


class SurgeryPanel:
    """The surgery panel's widgets and wiring; `.widget` is what a notebook shows."""

    def __init__(self, model: str | None = "demo_sd1_single", lora: str | None = "demo_lora_striped",
                 operation: str = "merge"):
        self.folder = Path(tempfile.mkdtemp(prefix="labkit-surgery-"))
        self.runs = 0
        checkpoints = [(n, n) for n in demo_names(CHECKPOINTS)]
        self.operation = widgets.ToggleButtons(options=OPERATIONS, value=operation,
                                               description="Operation")
        self.a = Picker("Model A", checkpoints, model, "model A")
        self.b = Picker("Model B", [(VARIANT, VARIANT), (FINETUNE, FINETUNE), *checkpoints],
                        VARIANT, "model B")
        self.c = Picker("Model C", checkpoints, None, "model C", optional=True)
        self.lora = Picker("LoRA", demo_options(ADAPTER_KINDS, None), lora, "LoRA")
        self.mode = widgets.Dropdown(options=["weighted", "add_difference"], description="Mode")
        self.alpha = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05,
                                         description="Alpha (B)")
        self.blocks = widgets.Text(description="Blocks", placeholder="e.g. IN*=1,OUT*=0 (optional)",
                                   layout=widgets.Layout(width="55%"))
        self.strength = widgets.FloatSlider(value=1.0, min=-1.0, max=2.0, step=0.05,
                                            description="Strength")
        self.rank = widgets.IntSlider(value=4, min=1, max=32, description="Rank")
        self.dynamic = widgets.Dropdown(options=DYNAMIC, description="Rank rule")
        self.ratio = widgets.BoundedFloatText(value=0.9, min=0.01, max=100.0, step=0.05,
                                              description="Ratio")
        self.pictures = widgets.Checkbox(value=True, description="Draw pictures (8 steps)")
        self.run = widgets.Button(description="Run", icon="cut", button_style="primary")
        self.status, self.error, self.report = widgets.HTML(), widgets.HTML(), widgets.HTML()
        self.figure = image_widget("labkit-surgery-figure")
        self.images = image_widget("labkit-surgery-images")
        self.out = widgets.Output()
        for part, name in ((self.status, "status"), (self.report, "report")):
            part.add_class(f"labkit-surgery-{name}")
        self.groups = {
            "a": [self.a.widget], "b": [self.b.widget], "c": [self.c.widget],
            "lora": [self.lora.widget],
            "merge": [widgets.HBox([self.mode, self.alpha]), self.blocks],
            "bake": [self.strength], "rank": [widgets.HBox([self.rank, self.dynamic, self.ratio])]}
        self.widget = widgets.VBox([
            widgets.HTML("<h3>Model surgery</h3>"), self.operation,
            *(w for ws in self.groups.values() for w in ws),
            widgets.HBox([self.run, self.pictures]), self.out, self.status, self.error,
            self.report, self.figure, self.images])
        self.widget.add_class("labkit-surgery")
        for control in (self.operation, self.mode):
            control.observe(lambda _: self._layout(), names="value")
        self.run.on_click(lambda b: run_from_button(b, self.out, self.error, self.status,
                                                    self._work))
        self._layout()

    def _layout(self) -> None:
        """Show the inputs the chosen operation takes, and nothing else."""
        op = self.operation.value
        needs = {"merge": {"a", "b", "merge"}, "bake": {"a", "lora", "bake"},
                 "extract": {"a", "b", "rank"}, "resize": {"a", "lora", "rank"}}[op]
        if op == "merge" and self.mode.value == "add_difference":
            needs = needs | {"c"}
        for name, items in self.groups.items():
            _shown(items, name in needs)
        self.a.choice.description = "Base" if op == "extract" else "Model A"
        self.b.choice.description = "Tuned" if op == "extract" else "Model B"
        if op == "resize":
            self.a.choice.description = "Draw on"

    def model_b(self) -> Path:
        """Model B: the baked demo variant or the demo's full fine-tune (each made once in the
        panel's folder), or a picked file."""
        from labkit.surgery.demo import outlined_finetune, striped_variant

        made = {VARIANT: ("Baking the demo LoRA into demo_sd1", striped_variant),
                FINETUNE: ("Putting the fine-tuned UNet into demo_sd1", outlined_finetune)}
        if not self.b.path.value.strip() and self.b.choice.value in made:
            what, make = made[self.b.choice.value]
            self.status.value = f"<i>{what} (once)...</i>"
            return make(self.folder)
        return self.b.resolve()

    def _output(self, op: str) -> Path:
        """A new file in the panel's temporary folder: a source is never overwritten."""
        self.runs += 1
        return self.folder / f"{op}_{self.runs:02d}.safetensors"

    def _rank_rule(self) -> dict[str, Any]:
        dynamic = None if self.dynamic.value == FIXED else self.dynamic.value
        return {"rank": self.rank.value, "dynamic": dynamic,
                "ratio": self.ratio.value if dynamic else None}

    def _work(self) -> None:
        """Run the chosen operation, then show its report, figure and pictures."""
        from labkit import surgery
        from labkit.surgery import figures as F

        for part in (self.report, self.status):
            part.value = ""
        self.out.clear_output()
        show_png(self.figure, b"")
        show_png(self.images, b"")
        op, a, started = self.operation.value, self.a.resolve(), time.perf_counter()
        if op == "merge":
            b = self.model_b()
            c = self.c.resolve() if self.mode.value == "add_difference" else None
            self.status.value = "<i>Merging, one tensor at a time...</i>"
            report = surgery.merge(a, b, c, out=self._output(op), mode=self.mode.value,
                                   alpha=self.alpha.value, blocks=self.blocks.value or None)
            table, fig = F.merge_actions(report), F.block_alpha_figure(report)
            shots = [("A", a, None), (f"merge X={self.alpha.value:g}", report.attrs["output"], None),
                     ("B", b, None)]
        elif op == "bake":
            lora = self.lora.resolve()
            self.status.value = "<i>Baking the LoRA in, module by module...</i>"
            report = surgery.bake(a, lora, out=self._output(op), strength=self.strength.value)
            table, fig = F.bake_blocks(report), F.bake_figure(report)
            shots = [("A", a, None), (f"baked S={self.strength.value:g}", report.attrs["output"],
                                      None)]
        elif op == "extract":
            tuned = self.model_b()
            self.status.value = "<i>Extracting: one SVD per module...</i>"
            report = surgery.extract_lora(a, tuned, out=self._output(op), **self._rank_rule())
            table, fig = F.energy_table(report), F.energy_figure(report)
            shots = [("tuned", tuned, None), ("base + extracted", a, report.attrs["output"])]
        else:
            lora = self.lora.resolve()
            self.status.value = "<i>Resizing: one SVD per module...</i>"
            report = surgery.resize_lora(lora, out=self._output(op), **self._rank_rule())
            table, fig = F.energy_table(report), F.energy_figure(report)
            shots = [("original LoRA", a, lora), ("resized", a, report.attrs["output"])]
        self._show(op, report, table, fig, time.perf_counter() - started)
        if self.pictures.value:
            self._draw(shots)

    def _show(self, op: str, report: Any, table: Any, fig: Any, seconds: float) -> None:
        from labkit.stats.figures import to_png

        out = Path(report.attrs["output"])
        self.report.value = (f"<b>{html.escape(op)}</b> wrote <code>{html.escape(str(out))}</code>"
                             f" ({out.stat().st_size / 1e6:.2f} MB, {len(report)} report rows)"
                             + table_html(table, 60))
        show_png(self.figure, to_png(fig))
        self.status.value = f"Done in {seconds:.1f} s."

    def _draw(self, shots: list[tuple[str, Any, Any]]) -> None:
        """One picture per (label, checkpoint, LoRA or None), same seed, side by side."""
        from labkit.generate.grids import image_grid
        from labkit.panels.generate import png_bytes
        from labkit.surgery.demo import preview

        done = self.status.value
        images = []
        for i, (label, model, lora) in enumerate(shots):
            self.status.value = f"<i>Drawing {i + 1} of {len(shots)}: {html.escape(label)}...</i>"
            images.append(preview(model, lora))
        show_png(self.images, png_bytes(image_grid(images, 1, len(images),
                                                   col_labels=[s[0] for s in shots],
                                                   cell_px=CELL_PX)))
        self.status.value = f"{done} Pictures: same prompt and seed, 8 steps."


def surgery_panel(model: str | None = "demo_sd1_single", lora: str | None = "demo_lora_striped",
                  operation: str = "merge") -> widgets.Widget:
    """Merge two checkpoints (weighted or add difference, per-block alphas), bake a LoRA in,
    extract a LoRA from two checkpoints or resize one, into a temporary folder; shows the
    report, a figure and the result's pictures beside its sources'."""
    return SurgeryPanel(model, lora, operation).widget
