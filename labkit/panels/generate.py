"""The generate panel: pick a model, write a prompt, watch the image emerge from noise.
SDXL-style models take a second prompt for their second text encoder."""

from __future__ import annotations

import io
import random
from typing import Any

import ipywidgets as widgets
from PIL import Image

from labkit.generate.grids import image_grid
from labkit.panels.common import (
    CHECKPOINTS,
    Picker,
    demo_names,
    image_widget,
    run_from_button,
    show_png,
    table_html,
)

SIZES = [("native", 0), ("64", 64), ("128", 128), ("256", 256), ("512", 512), ("768", 768),
         ("1024", 1024)]
N_PREVIEWS = 5  # previews in the strip for any number of steps
MIN_CELL_PX = 256  # small images (the demo's 64x64) are shown enlarged
STRIP_CELL_PX = 128
MAX_SEED = 2**31 - 1
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")  # Prompt feeds the first, Prompt 2 the second


def parts_html(pipe: Any) -> str:
    """The loaded pipeline's class, its text encoders (two for SDXL-style models: each prompt
    box feeds one) and its parts table."""
    from labkit.generate.sampling import components_table

    encoders = [f"{name} ({type(getattr(pipe, name)).__name__})" for name in TEXT_ENCODERS
                if getattr(pipe, name, None) is not None]
    return (f"<b>{type(pipe).__name__}</b>: {len(encoders)} text encoder(s), "
            f"{' and '.join(encoders)}" + table_html(components_table(pipe)))


def png_bytes(image: Image.Image) -> bytes:
    """An image as PNG bytes for an ipywidgets.Image."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def show(target: widgets.Image, image: Image.Image) -> None:
    """Put an image into an Image widget at its own pixel size."""
    show_png(target, png_bytes(image))


def generate_panel(model: str | None = None, device: str = "auto") -> widgets.VBox:
    """Model picker, prompt (and a second one for SDXL's second text encoder), seed with a dice,
    steps, guidance, scheduler, size; Generate shows the model's parts, a progress bar, the
    images and a strip of the denoising steps. `model` preselects a demo name or fills the path
    box."""
    from labkit.generate.sampling import scheduler_options

    picker = Picker("Model", [(n, n) for n in demo_names(CHECKPOINTS)], model, "model",
                    placeholder="a .safetensors / .ckpt or a folder")
    prompt = widgets.Text(value="a red circle on a white background", description="Prompt",
                          layout=widgets.Layout(width="80%"))
    prompt_2 = widgets.Text(description="Prompt 2", layout=widgets.Layout(width="80%"),
                            placeholder="SDXL-style models only: the second text encoder's "
                                        "prompt (empty: the same prompt)")
    negative = widgets.Text(description="Negative", placeholder="what to steer away from",
                            layout=widgets.Layout(width="80%"))
    seed = widgets.BoundedIntText(value=0, min=0, max=MAX_SEED, description="Seed")
    dice = widgets.Button(description="", icon="random", tooltip="roll a random seed",
                          layout=widgets.Layout(width="3em"))
    steps = widgets.IntSlider(value=20, min=1, max=100, description="Steps")
    guidance = widgets.FloatSlider(value=7.5, min=0.0, max=20.0, step=0.5, description="Guidance")
    scheduler = widgets.Dropdown(options=scheduler_options(), value="euler",
                                 description="Scheduler")
    size = widgets.Dropdown(options=SIZES, value=0, description="Size")
    count = widgets.IntSlider(value=1, min=1, max=4, description="Images")
    button = widgets.Button(description="Generate", icon="paint-brush", button_style="primary")
    bar = widgets.IntProgress(value=0, min=0, max=1, description="Denoising")
    status = widgets.HTML()
    status.add_class("labkit-generate-status")
    parts = widgets.HTML()
    parts.add_class("labkit-generate-parts")
    error = widgets.HTML()
    error.add_class("labkit-error-box")
    images = image_widget("labkit-generated")  # hidden until the first image
    strip = image_widget("labkit-denoising-strip")
    out = widgets.Output()

    def on_dice(_: widgets.Button) -> None:
        seed.value = random.randint(0, MAX_SEED)

    def work() -> None:
        from labkit.generate import pipelines, sampling
        status.value, parts.value = "<i>Loading the model (once per model)...</i>", ""
        pipe = pipelines.cached_pipeline(picker.resolve(), device=device,
                                         progress=False)
        previews: list[Image.Image] = []

        def on_step(done: int, total: int) -> None:
            bar.max, bar.value = total, done

        def on_preview(_step: int, image: Image.Image) -> None:
            previews.append(image)
            show(strip, image_grid(previews, 1, len(previews), cell_px=STRIP_CELL_PX))

        status.value = "<i>Denoising...</i>"
        bar.value = 0
        result = sampling.generate(
            pipe, prompt.value, negative.value, prompt_2=prompt_2.value, seed=seed.value,
            steps=steps.value, guidance=guidance.value, size=size.value or None,
            scheduler=scheduler.value, n_images=count.value,
            preview_every=max(1, steps.value // N_PREVIEWS),
            on_preview=on_preview, on_step=on_step, progress=False)
        parts.value = parts_html(pipe)  # after the run: it names the scheduler just used
        w, h = result[0].size
        show(images, image_grid(result, 1, len(result),
                                cell_px=MIN_CELL_PX if w < MIN_CELL_PX else None))
        status.value = (f"{len(result)} image(s), {w}x{h}, seed {seed.value}, {steps.value} "
                        f"steps of {scheduler.value}")

    def on_click(_: widgets.Button) -> None:
        run_from_button(button, out, error, status, work)

    dice.on_click(on_dice)
    button.on_click(on_click)
    return widgets.VBox([
        widgets.HTML("<h3>Generate</h3>"),
        picker.widget, prompt, prompt_2, negative,
        widgets.HBox([seed, dice, scheduler]), widgets.HBox([steps, guidance]),
        widgets.HBox([size, count]), widgets.HBox([button, bar]), status, error, parts,
        widgets.HTML("<b>Images</b>"), images,
        widgets.HTML("<b>Denoising steps</b> (the latents decoded along the way)"), strip, out,
    ])
