"""Textual inversion files in their container forms: read them, load them into a pipeline,
take them out again.

A textual inversion ("embedding") is one or a few new rows for a text encoder's token table,
trained so that a new word means a concept. The same vectors travel as an AUTOMATIC1111 (or
original ldm) .pt (`string_to_param`), a kohya `emb_params` .safetensors, a diffusers
`{token: vector}` file, or, for pipelines of several text encoders, one set of vectors per
encoder named after its text model: `clip_l` + `clip_g` (SDXL), `clip_l` + `t5` (Flux),
`clip_l` + `clip_g` + `t5` (SD3). The lab reads every form, and loads the SD1/SD2/SDXL ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from labkit.errors import IncompatibleModelError, LabkitError
from labkit.identify.embedding_forms import ti_parts
from labkit.identify.fit import check_family
from labkit.identify.rules import BASE_NAMES
from labkit.quiet import quiet_libraries

# A pipeline's text encoders, in order, with the tokenizer that feeds each.
ENCODERS = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
# Forms for pipelines the lab cannot run here (no SD3 or Flux pipeline): their family, in words.
UNLOADABLE_FORMS = {"flux": "Flux.1 (dev or schnell: CLIP-L + T5-XXL encoders)",
                    "sd3": "SD3 (CLIP-L + CLIP-G + T5-XXL encoders)",
                    "t5": "SD3 or Flux.1 (a T5-XXL part alone: both use T5-XXL, the width "
                          "cannot tell which)"}
# Where each form keeps the embedding's own name and training steps, first found wins.
NAME_KEYS = ("name", "modelspec.title", "ss_output_name")
STEP_KEYS = ("step", "ss_steps", "global_step")
# A text encoder's width -> the family that uses it.
WIDTH_FAMILIES = {768: "SD1, or SDXL's first encoder", 1024: "SD2", 1280: "SDXL's second encoder",
                  4096: "T5-XXL: SD3's third encoder, Flux's second"}
MULTI_VECTOR = "{token}_{i}"  # diffusers' names for a multi-vector embedding's extra rows


@dataclass
class TextualInversion:
    """The vectors of a textual inversion file, per text encoder, with what the file says of itself.

    `vectors` maps each pipeline component the vectors feed ("text_encoder"; "text_encoder_2"
    for SDXL and Flux; "text_encoder_3" for SD3) to a [n, width] tensor; a T5 part alone, whose
    component the file does not tell, keeps its own key "t5". `parts` maps the same names to
    the file's tensor names.
    """

    path: Path
    form: str  # "a1111", "kohya", "diffusers", "sdxl", "flux", "sd3" or "t5"
    name: str
    token: str
    vectors: dict[str, torch.Tensor]
    base: str = "unknown"
    step: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    parts: dict[str, str] = field(default_factory=dict)

    @property
    def n_vectors(self) -> int:
        """How many tokens the embedding spans in a prompt."""
        return next(iter(self.vectors.values())).shape[0]

    @property
    def loadable(self) -> bool:
        """Whether the lab can load it into a pipeline (SD1, SD2 and SDXL-style forms)."""
        return self.form not in UNLOADABLE_FORMS

    @property
    def widths(self) -> dict[str, int]:
        """Each encoder's vector width."""
        return {enc: int(v.shape[-1]) for enc, v in self.vectors.items()}

    def norms(self) -> dict[str, list[float]]:
        """The length of each vector, per encoder."""
        return {enc: [round(float(n), 4) for n in v.norm(dim=-1)] for enc, v in self.vectors.items()}

    def __repr__(self) -> str:
        widths = " + ".join(str(w) for w in self.widths.values())
        return (f"TextualInversion({self.token!r} from {self.path.name}: {self.form} form, "
                f"{self.n_vectors} vector(s) of width {widths}, base {self.base}, step {self.step})")


def _first(metadata: dict[str, str], keys: tuple[str, ...]) -> str | None:
    return next((metadata[k] for k in keys if metadata.get(k) not in (None, "", "None")), None)


def _as_token(name: str) -> str:
    """A prompt word for a name: kept when it already looks like one (<x>), else put in <...>."""
    if re.fullmatch(r"<[^<>\s]+>", name):
        return name
    return "<" + re.sub(r"\s+", "-", name) + ">"


def read_textual_inversion(path: str | Path) -> TextualInversion:
    """Read a textual inversion in any of its forms (.pt files through labkit.safety.verdicts).

    Raises NotAModelError, CorruptFileError or UnsafeFileError (as labkit.open_model does) and
    IncompatibleModelError when the file is a model of another kind.
    """
    from labkit.files.opener import open_model

    model = open_model(path)
    ident = model.identity
    if ident.kind != "textual_inversion":
        raise IncompatibleModelError(
            f"is a {ident.kind} (base {ident.base}), not a textual inversion.", model.path,
            hint="Give an embedding file: an A1111 .pt, or a .safetensors with emb_params, "
                 "clip_l + clip_g (+ t5), clip_l + t5, t5, or one {token: vector} entry.")
    found = ti_parts(list(model.table))
    assert found is not None, "identify calls it a textual inversion only in a known form"
    form, parts = found
    vectors = {enc: torch.cat([model.tensor(k).detach().float().reshape(-1, model.table[k].shape[-1])
                               for k in ks]) for enc, ks in parts}
    meta = dict(model.metadata)
    name = (parts[0][1][0] if form == "diffusers" else None) or _first(meta, NAME_KEYS) \
        or model.path.stem
    step = _first(meta, STEP_KEYS)
    return TextualInversion(model.path, form, name, _as_token(name), vectors, ident.base,
                            int(float(step)) if step and step.replace(".", "", 1).isdigit() else None,
                            meta, {enc: ", ".join(ks) for enc, ks in parts})


def _encoders(pipe: Any) -> list[tuple[str, str]]:
    return [(tok, enc) for tok, enc in ENCODERS if getattr(pipe, enc, None) is not None]


def _width_error(ti: TextualInversion, enc: str, width: int, pipe_width: int) -> IncompatibleModelError:
    told = (f"{BASE_NAMES[ti.base]} ({ti.base})" if ti.base in BASE_NAMES
            else WIDTH_FAMILIES.get(width, "no model family the lab knows"))
    family = WIDTH_FAMILIES.get(pipe_width, "a width no real SD family uses: a demo or custom model")
    which = "text encoder" if enc == "text_encoder" else "second text encoder"
    return IncompatibleModelError(
        f"{width}-wide vectors are for {told}; this pipeline's {which} is {pipe_width}-wide "
        f"({family}).", ti.path,
        hint="Load it into a pipeline of the family it was trained for, or pick an embedding "
             "trained for this model.")


def check_fits(pipe: Any, ti: TextualInversion) -> None:
    """Raise IncompatibleModelError, in plain words, unless the TI's vectors fit the pipeline:
    a file of another family (SD1-style into SDXL-style or back), another encoder count, or
    other widths, or a family the lab cannot run (SD3, Flux)."""
    if not ti.loadable:
        raise IncompatibleModelError(
            f"this embedding is for {UNLOADABLE_FORMS[ti.form]}: vectors for "
            + " + ".join(f"{v.shape[-1]}-wide {part}" for part, v in zip(ti.parts.values(),
                                                                         ti.vectors.values(),
                                                                         strict=True))
            + ". The lab loads embeddings into SD1, SD2 and SDXL-style pipelines only.", ti.path,
            hint="Its vectors are read all the same (read_textual_inversion: .vectors per "
                 "encoder) to study; to use it, load each part into its own encoder of a "
                 "pipeline of that family.")
    check_family(pipe, ti.base, ti.path, "embedding", "embedding")
    have = [enc for _, enc in _encoders(pipe)]
    if sorted(have) != sorted(ti.vectors):
        raise IncompatibleModelError(
            f"this embedding has vectors for {len(ti.vectors)} text encoder(s) "
            f"({', '.join(ti.vectors)}) but the pipeline has {len(have)} ({', '.join(have)}).",
            ti.path, hint="SDXL embeddings (clip_l + clip_g) need an SDXL pipeline; SD1/SD2 "
                          "embeddings need a one-encoder pipeline.")
    for enc, vec in ti.vectors.items():
        pipe_width = getattr(pipe, enc).get_input_embeddings().weight.shape[-1]
        if vec.shape[-1] != pipe_width:
            raise _width_error(ti, enc, int(vec.shape[-1]), int(pipe_width))


def _token_names(token: str, n: int) -> list[str]:
    return [token] + [MULTI_VECTOR.format(token=token, i=i) for i in range(1, n)]


def load_textual_inversion(pipe: Any, path: str | Path | TextualInversion,
                           token: str | None = None) -> str:
    """Add a textual inversion's token(s) to the pipeline; return the word to write in prompts.

    Each encoder gets its own vectors through diffusers' loader, given tensors (diffusers never
    opens the file). Raises what read_textual_inversion raises, and IncompatibleModelError when
    the vectors do not fit the pipeline or the token is already taken.
    """
    ti = path if isinstance(path, TextualInversion) else read_textual_inversion(path)
    word = token or ti.token
    check_fits(pipe, ti)
    for tok_name, _enc in _encoders(pipe):
        tokenizer = getattr(pipe, tok_name)
        taken = [t for t in _token_names(word, ti.n_vectors) if t in tokenizer.get_vocab()]
        if taken:
            raise IncompatibleModelError(
                f"the token {taken[0]!r} is already in the pipeline's {tok_name}.", ti.path,
                hint="Unload it first (unload_textual_inversion), or pass another token=.")
    for tok_name, enc in _encoders(pipe):
        encoder = getattr(pipe, enc)
        vectors = ti.vectors[enc].to(device=encoder.device, dtype=encoder.dtype)
        try:
            with quiet_libraries():  # no notice on how a new row is initialised: it is given
                pipe.load_textual_inversion({word: vectors}, token=word,
                                            tokenizer=getattr(pipe, tok_name),
                                            text_encoder=encoder)
        except ValueError as e:
            raise IncompatibleModelError(f"diffusers could not load it: {e}", ti.path) from None
    return word


def loaded_tokens(pipe: Any) -> list[str]:
    """The textual inversion words the pipeline's first tokenizer has (extra rows not counted)."""
    added = [t.content for t in pipe.tokenizer.added_tokens_decoder.values() if not t.special]
    return [t for t in added if not re.fullmatch(r".+_\d+", t) or t.rsplit("_", 1)[0] not in added]


def unload_textual_inversion(pipe: Any, token: str | None = None) -> None:
    """Take a textual inversion's token(s) out of every tokenizer and encoder (all when None).

    Raises LabkitError when the token is not loaded.
    """
    words = loaded_tokens(pipe) if token is None else [token]
    if token is not None and token not in loaded_tokens(pipe):
        raise LabkitError(f"the token {token!r} is not loaded in this pipeline.",
                          hint=f"Loaded: {', '.join(loaded_tokens(pipe)) or 'none'}.")
    for tok_name, enc in _encoders(pipe):
        tokenizer = getattr(pipe, tok_name)
        added = {t.content for t in tokenizer.added_tokens_decoder.values() if not t.special}
        names = [t for w in words for t in added
                 if t == w or re.fullmatch(re.escape(w) + r"_\d+", t)]
        if names:
            pipe.unload_textual_inversion(names, tokenizer=tokenizer,
                                          text_encoder=getattr(pipe, enc))
            # diffusers rebuilds a fast tokenizer's backend, dropping the wrapper by which
            # transformers' CLIPTokenizer strips "</w>" when decoding: put it back.
            rewrap = getattr(tokenizer, "_wrap_decode_method_backend_tokenizer", None)
            if rewrap is not None:
                rewrap()
