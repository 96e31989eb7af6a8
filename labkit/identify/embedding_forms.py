"""Textual inversions identified: their container forms, and the base from the vector widths.

A textual inversion holds one set of vectors per text encoder it feeds. Files for one encoder
(SD1, SD2) keep it under `string_to_param.*` (ldm, A1111), `emb_params` (kohya) or one
`{token: vector}` key (diffusers). Files for several encoders name each set after the text
model it feeds: `clip_l` (CLIP-L, 768), `clip_g` (OpenCLIP-bigG, 1280), `t5` (T5-XXL, 4096).
Which keys are there tells the pipeline (SDXL, Flux, SD3); the widths tell the base.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import islice
from typing import NamedTuple

from labkit.identify import rules as R
from labkit.identify.told import Identity, told_base
from labkit.tensors import TensorInfo

Table = Mapping[str, TensorInfo]


class PartForm(NamedTuple):
    """A form that names each vector set after the text model it feeds, with the pipeline
    component (diffusers' name) each key feeds; components None: the keys alone do not tell."""

    form: str
    keys: tuple[str, ...]  # in the pipeline's encoder order
    components: tuple[str, ...] | None
    words: str


T5_KEY = "t5"
ONE_ENCODER = "text_encoder"  # the part name of the one-encoder forms
PART_FORMS = (
    # kohya sdxl_train_textual_inversion.py; diffusers train_dreambooth_lora_sdxl_advanced.py
    PartForm("sdxl", R.TI_SDXL_KEYS, ("text_encoder", "text_encoder_2"), "SDXL clip_l + clip_g"),
    # diffusers train_dreambooth_lora_flux_advanced.py --enable_t5_ti
    PartForm("flux", ("clip_l", T5_KEY), ("text_encoder", "text_encoder_2"),
             "Flux clip_l + t5"),
    # SD3's three encoders; no trainer found that writes it (FORMATS.md section 9)
    PartForm("sd3", ("clip_l", "clip_g", T5_KEY),
             ("text_encoder", "text_encoder_2", "text_encoder_3"), "SD3 clip_l + clip_g + t5"),
    # T5 is SD3's third encoder and Flux's second: the key alone names no component
    PartForm("t5", (T5_KEY,), None, "T5-XXL t5 alone"),
)
# The one-encoder forms, in evidence; the diffusers one names its key.
ONE_ENCODER_WORDS = {"a1111": "A1111 string_to_param", "kohya": "emb_params",
                     "diffusers": "diffusers {{token: vector}} ({key!r})"}
# Widths (in the file's part order) of the T5-era forms -> base. "flux": the Flux.1 family,
# dev or schnell (they share every width; metadata may tell which).
# The most vector keys of any form but A1111's (whose keys all share one prefix).
MOST_PART_KEYS = max(len(part.keys) for part in PART_FORMS)
T5_WIDTH_BASES = {(768, 4096): "flux", (768, 1280, 4096): "sd3"}
# Widths of a real text encoder that name no one base, and why.
UNTOLD_WIDTHS = {(4096,): "4096 is T5-XXL's width, and SD3 (its third text encoder) and Flux "
                          "(its second) both use T5-XXL: the widths cannot tell which"}


def _no_ti_form(keys: list[str]) -> bool:
    """True when the first few keys already rule out every TI form: more keys (token ids aside)
    than any form but A1111's holds, and one of them outside A1111's prefix (a model's table is
    told at its first keys, not read whole)."""
    vectors = (k for k in keys if not k.startswith(R.TI_TOKEN_PREFIX))
    first = list(islice(vectors, MOST_PART_KEYS + 1))
    return len(first) > MOST_PART_KEYS and not all(k.startswith(R.TI_A1111_PREFIX) for k in first)


def ti_parts(keys: list[str]) -> tuple[str, list[tuple[str, list[str]]]] | None:
    """(form, [(part, tensor names)]) when the keys are one of the TI forms, else None.

    A part is the pipeline component its vectors feed ("text_encoder", "text_encoder_2", ...),
    or the file's own key where the keys do not tell the component (t5 alone).
    """
    if _no_ti_form(keys):
        return None
    keys = [k for k in keys if not k.startswith(R.TI_TOKEN_PREFIX)]  # ldm's token id, a 0-d tensor
    if keys and all(k.startswith(R.TI_A1111_PREFIX) for k in keys):
        return "a1111", [(ONE_ENCODER, keys)]
    if keys == [R.TI_EMB_PARAMS]:
        return "kohya", [(ONE_ENCODER, keys)]
    for part in PART_FORMS:
        if sorted(keys) == sorted(part.keys):
            return part.form, [(c, [k]) for c, k in zip(part.components or part.keys, part.keys,
                                                         strict=True)]
    if len(keys) == 1 and not keys[0].endswith((".weight", ".bias")):
        return "diffusers", [(ONE_ENCODER, keys)]
    return None


def form_words(form: str, keys: list[str]) -> str:
    """A form in evidence: "emb_params", "Flux clip_l + t5", "diffusers {token: vector} ('<x>')"."""
    parts = {p.form: p.words for p in PART_FORMS}
    return parts.get(form) or ONE_ENCODER_WORDS[form].format(key=keys[-1])


def width_base(widths: tuple[int, ...]) -> str | None:
    """The base the vector widths (in part order) name, or None."""
    return R.TI_WIDTH_BASES.get(widths) or T5_WIDTH_BASES.get(widths)


def width_words(widths: tuple[int, ...]) -> str:
    """What the widths say, for evidence: " -> sdxl", or why they name no base."""
    base = width_base(widths)
    if base:
        return f" -> {base}"
    return f" ({UNTOLD_WIDTHS[widths]})" if widths in UNTOLD_WIDTHS \
        else " (no real text-encoder width)"


def embedding(table: Table, keys: list[str], metadata: Mapping[str, str]) -> Identity | None:
    """Textual inversion in any of its container forms."""
    found = ti_parts(keys)
    if found is None:
        return None
    form, parts = found
    names = [k for _, ks in parts for k in ks]
    vectors = [table[k] for k in names]
    if not all(len(v.shape) == 1 or (len(v.shape) == 2 and v.shape[0] <= R.TI_MAX_VECTORS)
               for v in vectors):
        return None
    widths = tuple(v.shape[-1] for v in vectors)
    counts = [v.shape[0] if len(v.shape) == 2 else 1 for v in vectors]
    evidence = [f"textual inversion ({form_words(form, names)}): {counts[0]} vector(s) of width "
                + " + ".join(map(str, widths)) + width_words(widths)]
    base, variant, source = told_base(width_base(widths), metadata, evidence,
                                       " + ".join(map(str, widths)))
    return Identity("textual_inversion", base, variant, source, evidence)
