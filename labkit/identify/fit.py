"""Whether a file fits a pipeline's family: which family a loaded pipeline is, what each family
is built like, and the plain-words error for a file of one family meeting a pipeline of another.

A LoRA or an embedding is trained against one family's text encoders and UNet: SD1-style models
have one text encoder, SDXL-style ones two (and a UNet with text_time conditioning), so a file of
one cannot go into the other. The lab's demo models follow the same split at tiny widths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from labkit.errors import IncompatibleModelError
from labkit.identify import rules as R


class Build(NamedTuple):
    """What a family is built like: its text encoders' widths, in pipeline order, the UNet's
    context width and whether the UNet takes SDXL's text_time conditioning."""

    encoders: tuple[int, ...]
    context: int
    text_time: bool

    @property
    def xl(self) -> bool:
        """SDXL-style: two text encoders or text_time conditioning; else SD1-style."""
        return len(self.encoders) > 1 or self.text_time


BUILDS = {
    "sd1": Build((768,), 768, False),
    "sd2": Build((1024,), 1024, False),
    "sdxl": Build((768, 1280), 2048, True),
    "sdxl_refiner": Build((1280,), 1280, True),
    "playground": Build((768, 1280), 2048, True),
    "demo_sd1": Build((R.DEMO_SD1_WIDTH,), R.DEMO_SD1_WIDTH, False),
    "demo_sdxl": Build(R.DEMO_SDXL_WIDTHS, R.DEMO_SDXL_CONTEXT, True),
}
# How a file for one text encoder, and for two, names its parts; by file form.
FILE_FORMS = {
    "adapter": ("keys lora_te_ / text_encoder. for its encoder",
                "keys lora_te1_ / lora_te2_ (text_encoder. / text_encoder_2.) for its two "
                "encoders, UNet blocks named lora_unet_input_blocks_..."),
    "embedding": ("one set of vectors (string_to_param, emb_params or {token: vector})",
                  "a clip_l + clip_g pair of vectors, one per encoder"),
}
ENCODER_NAMES = ("text_encoder", "text_encoder_2")


def pipeline_build(pipe: Any) -> Build:
    """What a loaded pipeline is built like, measured on its modules."""
    widths = tuple(int(getattr(pipe, name).config.hidden_size) for name in ENCODER_NAMES
                   if getattr(pipe, name, None) is not None)
    config = pipe.unet.config
    return Build(widths, int(config.cross_attention_dim),
                 getattr(config, "addition_embed_type", None) == "text_time")


def pipeline_family(pipe: Any) -> str:
    """The family a pipeline is built like, as labkit.identify.identity tells files: a real context width
    names a real family (sd1, sd2, sdxl, sdxl_refiner); any other width is a demo, SDXL-style
    (demo_sdxl) with two text encoders or text_time, else SD1-style (demo_sd1)."""
    build = pipeline_build(pipe)
    if build.context in R.REAL_CONTEXT_DIMS:
        return R.CONTEXT_BASES[build.context]
    return "demo_sdxl" if build.xl else "demo_sd1"


def describe(build: Build, form: str = "") -> str:
    """A build in words ("SDXL-style: two text encoders, 32 + 48 wide; UNet context 80 with
    text_time"), with how a file of `form` ("adapter", "embedding") names its parts for it."""
    n = len(build.encoders)
    words = (f"{'SDXL' if build.xl else 'SD1'}-style: {'one' if n == 1 else 'two'} text "
             f"encoder{'s' * (n > 1)}, " + " + ".join(map(str, build.encoders))
             + f" wide; UNet context {build.context}"
             + (" with text_time" if build.text_time else ""))
    return f"{words}; {FILE_FORMS[form][n > 1]}" if form else words


def check_family(pipe: Any, base: str, path: str | Path, noun: str, form: str) -> None:
    """Raise IncompatibleModelError, naming both families and how they differ, when a file of a
    known SD1-style family `base` (a `noun` of `form` "adapter" or "embedding") meets an
    SDXL-style pipeline, or the reverse. Files of the pipeline's style pass: their shapes are
    checked one by one where they are loaded."""
    build = pipeline_build(pipe)
    if base not in BUILDS or BUILDS[base].xl == build.xl:
        return
    family = pipeline_family(pipe)
    demo = f" (the demo world's: labkit.generate.demo_config({base!r}))" if base in R.DEMO_BASES \
        else ""
    raise IncompatibleModelError(
        f"this {noun} is for {base} ({describe(BUILDS[base], form)}); the pipeline is {family} "
        f"({describe(build)}).", path,
        hint=f"Use it with a {base} pipeline{demo}, or pick one trained for {family}.")
