"""The LoRA panel: what a LoRA file is made of, and a labelled grid of its strengths."""

from __future__ import annotations

import ipywidgets as widgets

from labkit.errors import LabkitError
from labkit.panels.common import (
    CHECKPOINTS,
    Picker,
    demo_names,
    demo_options,
    figure_image,
    image_widget,
    run_from_button,
    show_png,
    table_html,
)

ADAPTER_KINDS = ("lora", "loha", "lokr", "lycoris_full", "dora")
SHOWN_ROWS = 60
MAX_GRID = 48  # images per grid: past this a click would run for minutes on a CPU


def fit_html(base: str | None) -> str:
    """What the adapter dropdowns offer for a model of `base` (None: a model the demo manifest
    does not know)."""
    if base is None:
        return ("<i>Every demo adapter is offered, with the base it was made for: one made for "
                "another family than the model's is refused when the grid is made.</i>")
    return f"<i>Offered: the demo adapters made for <b>{base}</b>, the chosen model's base.</i>"


def mismatch_html(adapter_base: str, model_base: str | None) -> str:
    """A warning when an adapter was made for another base than the chosen demo model's."""
    if model_base is None or adapter_base in (model_base, "unknown"):
        return ""
    return (f"<p class='labkit-mismatch'><b>Not for the chosen model</b> ({model_base}): this "
            f"file was made for {adapter_base}, so Make grid will refuse it.</p>")


def strengths_of(low: float, high: float, step: float) -> list[float]:
    """low, low + step, ... up to high (both ends included). Raises LabkitError."""
    if step <= 0:
        raise LabkitError("the strength step must be above 0.")
    n = int(round((high - low) / step)) + 1
    return [round(low + i * step, 4) for i in range(max(n, 1)) if low + i * step <= high + 1e-9]


def seeds_of(text: str) -> list[int]:
    """Seeds from "1, 2, 3". Raises LabkitError."""
    try:
        seeds = [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise LabkitError(f"seeds must be whole numbers, got {text!r}.") from None
    if not seeds:
        raise LabkitError("give at least one seed.")
    return seeds


def lora_panel(model: str | None = None, lora: str | None = None, device: str = "auto") -> widgets.VBox:
    """Pick a model and a LoRA (and a second one to compare): its anatomy table and plots, then
    a strengths x prompts/seeds grid made in batched passes. The LoRA dropdowns offer the demo
    adapters made for the chosen demo model's base (SD1-style or SDXL-style). `model` and `lora`
    preselect a demo name or fill the path box."""
    from labkit.lora import figures as lora_plots
    from labkit.stats.figures import to_png

    model_pick = Picker("Model", [(n, n) for n in demo_names(CHECKPOINTS)], model, "model")
    adapters = demo_options(ADAPTER_KINDS, model_pick.base())
    first = Picker("LoRA", adapters, lora, "LoRA")
    second = Picker("Compare", adapters, None, "LoRA to compare", optional=True)
    fit = widgets.HTML(fit_html(model_pick.base()))
    show = widgets.Button(description="Show anatomy", icon="search", button_style="info")
    strengths = widgets.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.5, step=0.05,
                                         description="Strengths")
    step = widgets.BoundedFloatText(value=0.25, min=0.05, max=1.5, step=0.05, description="Step")
    prompts = widgets.Textarea(value="a red circle", description="Prompts",
                               placeholder="one prompt per line",
                               layout=widgets.Layout(width="60%", height="4em"))
    seeds = widgets.Text(value="1", description="Seeds", placeholder="1, 2, 3")
    steps = widgets.IntSlider(value=20, min=1, max=50, description="Steps")
    make = widgets.Button(description="Make grid", icon="th", button_style="primary")
    status = widgets.HTML()
    status.add_class("labkit-lora-status")
    error = widgets.HTML()
    error.add_class("labkit-error-box")
    anatomy = widgets.HTML()
    anatomy.add_class("labkit-lora-anatomy")
    figures = widgets.Box(layout=widgets.Layout(flex_flow="row wrap"))
    grid = image_widget("labkit-lora-grid")  # hidden until the first grid
    out = widgets.Output()

    def show_work() -> None:
        from labkit.lora.reading import anatomy as anatomy_of
        from labkit.lora.reading import open_adapter

        path = first.resolve()
        adapter = open_adapter(path)
        frame, meta = anatomy_of(adapter), adapter.metadata
        note = frame.attrs["note"]
        anatomy.value = (f"<b>{path.name}</b>: {frame.attrs['kind']} for {frame.attrs['base']}, "
                         f"{len(frame)} modules" + (f"; <b>unmatched</b>: {note}" if note else "")
                         + mismatch_html(frame.attrs["base"], model_pick.base())
                         + table_html(lora_plots.rank_alpha(frame))
                         + table_html(lora_plots.training_table(meta))
                         + table_html(frame.drop(columns=["prefix", "shapes"]), SHOWN_ROWS))
        figures.children = [figure_image(to_png(fig), "labkit-lora-figure") for fig in (
            lora_plots.block_norm_figure(frame, f"{path.name}: ‖ΔW‖ per block"),
            lora_plots.spectrum_figure(lora_plots.spectra(path), f"{path.name} "
                                       f"({frame.attrs['kind']}): singular values of ΔW"),
            lora_plots.rank_alpha_figure(frame), lora_plots.tag_figure(meta))]

    def grid_work() -> None:
        from labkit import lora as L
        from labkit.generate import pipelines
        from labkit.panels.generate import png_bytes

        paths = [p for p in (first.resolve(), second.resolve()) if p is not None]
        values = strengths_of(*strengths.value, step.value)
        lines = [p.strip() for p in prompts.value.splitlines() if p.strip()]
        if not lines:
            raise LabkitError("give at least one prompt (one per line).")
        seed_list = seeds_of(seeds.value)
        n = len(paths) * len(values) * len(lines) * len(seed_list)
        if n > MAX_GRID:
            raise LabkitError(f"that grid has {n} images; the panel makes at most {MAX_GRID}.",
                              hint="Use a bigger strength step, fewer prompts or fewer seeds.")
        status.value = "<i>Loading the model (once per model)...</i>"
        pipe = pipelines.cached_pipeline(model_pick.resolve(), device=device, progress=False)
        status.value = f"<i>Making {n} images in batched passes...</i>"
        image = L.xyz_grid(pipe, paths, values, lines, seed_list, steps=steps.value)
        show_png(grid, png_bytes(image))
        status.value = (f"{n} images: rows are prompt #seed, columns LoRA strength; same noise "
                        f"per seed, {steps.value} steps")

    def on_model(_: dict) -> None:
        base = model_pick.base()
        options = demo_options(ADAPTER_KINDS, base)
        first.offer(options)
        second.offer(options)
        fit.value = fit_html(base)

    model_pick.choice.observe(on_model, names="value")
    model_pick.path.observe(on_model, names="value")
    show.on_click(lambda b: run_from_button(b, out, error, status, show_work))
    make.on_click(lambda b: run_from_button(b, out, error, status, grid_work))
    return widgets.VBox([
        widgets.HTML("<h3>LoRA lab</h3>"),
        model_pick.widget, fit, first.widget, second.widget, show, error, anatomy, figures,
        widgets.HTML("<b>Strength grid</b> (like A1111's XYZ plot)"),
        widgets.HBox([strengths, step]), prompts, widgets.HBox([seeds, steps]), make, status,
        grid, out,
    ])
