"""Conversions between model file forms: ckpt -> safetensors, diffusers folder <-> single file,
fp16, EMA strip. Every write goes to a hidden temporary file (or folder) beside the destination
and is renamed into place, so a destination is either absent or complete; sources are only read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal

import torch

from labkit.convert.shipped import told_prediction
from labkit.errors import IncompatibleModelError, LabkitError, NotAModelError
from labkit.files.diffusers_folder import read_json
from labkit.files.opener import ModelFile, open_model
from labkit.identify import layouts
from labkit.identify.rules import PREDICTION_TYPE_KEY
from labkit.quiet import quiet_libraries
from labkit.tensors import DTYPES

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SINGLE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
TMP_SUFFIX = ".partial"
# Metadata a pickle written by the lab keeps beside state_dict and global_step.
PICKLE_METADATA = (PREDICTION_TYPE_KEY,)

# Components in model_index.json -> family of the single-file layout.
FAMILY_BY_TEXT_ENCODERS = {
    ("text_encoder",): "sd1",
    ("text_encoder", "text_encoder_2"): "sdxl",
    ("text_encoder_2",): "sdxl_refiner",
}
# (family so far, text_encoder's hidden_act) -> family: a lone OpenCLIP encoder is SD 2.x's.
FAMILY_BY_ACTIVATION = {("sd1", "gelu"): "sd2"}
# Families whose single file records the folder's prediction type (as modelspec values):
# SD 2.x 768-v and 512-base share every key, so nothing else tells them apart.
RECORD_PREDICTION = ("sd2",)
MODELSPEC_PREDICTION = {"v_prediction": "v", "epsilon": "epsilon"}

# Pipelines single_file_to_folder rebuilds, by model_index.json's _class_name.
PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline",
             "StableDiffusionXLImg2ImgPipeline", "StableDiffusionInpaintPipeline")

# ---------------------------------------------------------------- paths and atomic writes

def _check_source(src: Path, want_dir: bool) -> Path:
    if not src.exists():
        raise NotAModelError("does not exist.", src, "Check the path.")
    if want_dir and not src.is_dir():
        raise IncompatibleModelError(
            "is a single file, not a diffusers folder (a folder with model_index.json).", src,
            "Use ckpt_to_safetensors, to_fp16 or strip_ema for single files.")
    if not want_dir and src.is_dir():
        raise IncompatibleModelError("is a folder, not a single model file.", src,
                                     "Use folder_to_single_file for diffusers folders.")
    return src


def _check_destination(sources: list[Path], dst: Path, overwrite: bool, want_dir: bool) -> None:
    """Refuse a destination that exists (unless overwrite), is of the other kind (file or
    folder), or is, holds or lies inside a source: the lab never overwrites its sources."""
    if not want_dir and dst.suffix not in SINGLE_SUFFIXES:
        raise LabkitError(f"has suffix {dst.suffix!r}; choose one of {SINGLE_SUFFIXES}.", dst,
                          "The suffix picks the format written.")
    target = dst.resolve()
    for src in map(Path.resolve, sources):
        if target == src or src.is_relative_to(target) or target.is_relative_to(src):
            raise LabkitError(f"is, holds or lies inside the source {src}; the lab never "
                              "overwrites its sources.", dst, "Choose another destination.")
    if not dst.exists():
        return
    if not overwrite:
        raise LabkitError("already exists.", dst, "Pass overwrite=True to replace it.")
    if dst.is_dir() != want_dir:
        raise LabkitError(f"exists and is a {'folder' if dst.is_dir() else 'file'}; it cannot "
                          "be replaced by the other kind.", dst, "Remove it or choose another name.")


def _tmp_name(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


@contextmanager
def _write_errors(dst: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise LabkitError(f"could not be written ({e.strerror or e}).", dst,
                          "Check free disk space and write permission there.") from e


@contextmanager
def _atomic_file(dst: Path) -> Iterator[Path]:
    """A temporary path beside dst, renamed onto dst when the block ends without error."""
    tmp = _tmp_name(dst)
    try:
        with _write_errors(dst):
            dst.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dst)
    finally:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(dst: Path) -> Iterator[Path]:
    """A temporary folder beside dst, renamed onto dst (replacing it) when the block ends without
    error; removed otherwise. Raises LabkitError when the disk refuses the write."""
    tmp, old = _tmp_name(dst), _tmp_name(dst)
    try:
        with _write_errors(dst):
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            yield tmp
            if dst.exists():
                os.rename(dst, old)
            os.rename(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- reading

def _open_single(path: Path) -> ModelFile:
    """A single .safetensors or pickle checkpoint, opened by labkit.files.opener (pickles scanned)."""
    model = open_model(path)
    if model.format not in ("safetensors", "pickle"):
        raise IncompatibleModelError(f"is a {model.format} file; only safetensors and pickle "
                                     "checkpoints convert.", path)
    return model


def _component(model: ModelFile, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """One component's (key, tensor) pairs from an opened pipeline folder, one at a time;
    a component folder opened on its own has plain keys."""
    prefix = f"{name}/" if (model.path / "model_index.json").is_file() else ""
    names = [n for n in model.table if n.startswith(prefix)]
    return ((n[len(prefix):], t) for n, t in model.iter_tensors(names))


def _float_dtype(model: ModelFile) -> torch.dtype:
    """The most common floating dtype of a file's tensors (diffusers would load as float32)."""
    counts = Counter(DTYPES[i.dtype][0] for i in model.table.values())
    floats = [(n, dt) for dt, n in counts.items() if dt is not None and dt.is_floating_point]
    return max(floats, key=lambda x: x[0])[1] if floats else torch.float32


def _family(model: ModelFile) -> str:
    texts = tuple(n for n in ("text_encoder", "text_encoder_2") if n in model.components)
    family = FAMILY_BY_TEXT_ENCODERS.get(texts)
    if family is None or not {"unet", "vae"} <= model.components.keys():
        raise IncompatibleModelError(
            "is not an SD1, SD2 or SDXL pipeline folder (needs unet, vae and text encoders).",
            model.path, "Only SD1, SD2 and SDXL folders convert to one file.")
    act = read_json(model.components[texts[0]] / "config.json").get("hidden_act")
    return FAMILY_BY_ACTIVATION.get((family, act), family)


def _scheduled_prediction(folder: Path) -> str | None:
    """The prediction type a pipeline folder's scheduler config names (epsilon when it names
    none, as diffusers reads it); None without a scheduler config."""
    config = folder / "scheduler" / "scheduler_config.json"
    return read_json(config).get("prediction_type", "epsilon") if config.is_file() else None


def _recorded(family: str, folder: Path) -> dict[str, str]:
    """The metadata a family's single file carries about its folder (its prediction type)."""
    prediction = _scheduled_prediction(folder) if family in RECORD_PREDICTION else None
    if prediction is None:
        return {}
    return {PREDICTION_TYPE_KEY: MODELSPEC_PREDICTION.get(prediction, prediction)}


def _check_prediction(model: ModelFile, config: Path) -> None:
    """Refuse a config folder whose scheduler contradicts the prediction type the file records."""
    said, scheduled = told_prediction(model.metadata), _scheduled_prediction(config)
    if said is not None and scheduled is not None and said != scheduled:
        raise IncompatibleModelError(
            f"records prediction type {said!r} ({PREDICTION_TYPE_KEY}), but the scheduler in "
            f"{config} uses {scheduled!r}: the folder would sample wrongly.", model.path,
            f"Pass a config folder whose scheduler has prediction_type {said!r} (for SD 2.x the "
            "lab ships sd2_v for v and sd2_base for epsilon).")


# ---------------------------------------------------------------- tensor steps

def _cast(tensors: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return tensors
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def _apply_ema(tensors: dict[str, torch.Tensor], keep: Literal["ema", "model"],
               path: Path) -> dict[str, torch.Tensor]:
    """Drop the EMA copy; with keep="ema" its weights first replace the model's."""
    if keep == "ema":
        twins = {layouts.ema_key(k): k for k in tensors if k.startswith("model.")}
        orphans = [k for k in tensors if k.startswith(layouts.EMA_PREFIX)
                   and k not in twins and k not in layouts.EMA_BUFFERS]
        if orphans:
            raise IncompatibleModelError(
                f"has {len(orphans)} EMA tensors with no model twin (e.g. {orphans[0]}).", path,
                'Use keep="model" to drop the EMA copy instead.')
        tensors = {k: tensors.get(layouts.ema_key(k), v) if k.startswith("model.") else v
                   for k, v in tensors.items()}
    return {k: v for k, v in tensors.items() if not k.startswith(layouts.EMA_PREFIX)}


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors with no storage shared between them (safetensors refuses sharing)."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen or not v.is_contiguous() else v
        seen.add(ptr)
    return out


def _write_single(tensors: dict[str, torch.Tensor], dst: Path, metadata: dict[str, str]) -> Path:
    """Write tensors as .safetensors (metadata in the header) or a zip pickle {"state_dict"}."""
    with _atomic_file(dst) as tmp:
        if dst.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(_unshared(tensors), str(tmp), metadata or None)
        else:
            step = metadata.get("global_step", "0")
            kept = {k: metadata[k] for k in PICKLE_METADATA if k in metadata}
            torch.save({"state_dict": tensors,
                        "global_step": int(step) if step.isdigit() else 0, **kept}, tmp)
    return dst


def _rewrite(src: str | os.PathLike, dst: str | os.PathLike, *, dtype: torch.dtype | None,
             ema: Literal["ema", "model"] | None, overwrite: bool,
             require: str | None = None, require_ema: bool = False) -> Path:
    """Read a single file (of format `require` if given; with EMA weights if require_ema),
    keep tensors only, apply the EMA step and dtype, write dst."""
    src, dst = _check_source(Path(src), want_dir=False), Path(dst)
    _check_destination([src], dst, overwrite, want_dir=False)
    model = _open_single(src)
    if require and model.format != require:
        raise IncompatibleModelError(f"is a {model.format} file, not a {require} checkpoint.",
                                     src, "Use to_fp16 or strip_ema for .safetensors files.")
    if require_ema and not any(k.startswith(layouts.EMA_PREFIX) for k in model.table):
        raise IncompatibleModelError("has no EMA weights (no model_ema. keys).", src,
                                     "There is nothing to strip.")
    tensors = dict(model.iter_tensors())
    if ema is not None:
        tensors = _apply_ema(tensors, ema, src)
    return _write_single(_cast(tensors, dtype), dst, model.metadata)


# ---------------------------------------------------------------- public functions

def ckpt_to_safetensors(src: str | os.PathLike, dst: str | os.PathLike, *,
                        dtype: torch.dtype | None = None, strip_ema: bool = False,
                        overwrite: bool = False) -> Path:
    """Rewrite a pickle checkpoint as .safetensors (tensors only; scalars such as global_step
    become header metadata). Raises NotAModelError, UnsafeFileError, LabkitError (destination)."""
    if Path(dst).suffix != ".safetensors":
        raise LabkitError("must end in .safetensors.", dst)
    return _rewrite(src, dst, dtype=dtype, ema="ema" if strip_ema else None, overwrite=overwrite,
                    require="pickle")


def to_fp16(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a single file with every floating tensor in float16 (integers kept), in dst's format
    by suffix. Raises NotAModelError, CorruptFileError, UnsafeFileError, LabkitError."""
    return _rewrite(src, dst, dtype=torch.float16, ema=None, overwrite=overwrite)


def strip_ema(src: str | os.PathLike, dst: str | os.PathLike, *,
              keep: Literal["ema", "model"] = "ema", dtype: torch.dtype | None = None,
              overwrite: bool = False) -> Path:
    """Write a single file without its `model_ema.` copy. keep="ema" (default, as in released
    "ema-only" files): the EMA weights replace the model's; keep="model": the EMA copy is dropped.
    Raises IncompatibleModelError (no EMA), NotAModelError, CorruptFileError, LabkitError."""
    return _rewrite(src, dst, dtype=dtype, ema=keep, overwrite=overwrite, require_ema=True)


def _ema_tensors(model: ModelFile, layout: layouts.Layout) -> dict[str, torch.Tensor]:
    """LDM's `model_ema.` copy of a UNet (from a pipeline or a unet folder) with LitEma's buffers."""
    unet = layouts.component_to_original("unet", _component(model, "unet"), layout)
    return {layouts.ema_key(k): v for k, v in unet} | {k: v.clone() for k, v in layouts.EMA_BUFFERS.items()}


def folder_to_single_file(folder: str | os.PathLike, dst: str | os.PathLike, *,
                          dtype: torch.dtype | None = None,
                          include_ema: bool | str | os.PathLike | None = None,
                          overwrite: bool = False) -> Path:
    """Write a diffusers SD1/SD2/SDXL folder as one file in the original layout (.safetensors,
    or a zip pickle {"state_dict", "global_step"} for .ckpt); an SD 2.x file records the
    scheduler's prediction type as modelspec.prediction_type. include_ema adds `model_ema.`
    copies of the UNet: True copies the folder's own UNet, a path names an EMA UNet folder.
    Raises NotAModelError, IncompatibleModelError, CorruptFileError, LabkitError."""
    folder, dst = _check_source(Path(folder), want_dir=True), Path(dst)
    _check_destination([folder], dst, overwrite, want_dir=False)
    if not (folder / "model_index.json").is_file():
        raise IncompatibleModelError(
            "has no model_index.json: not a diffusers pipeline folder.", folder,
            "Give the pipeline folder (with unet/, vae/, text_encoder/), not one component.")
    model = open_model(folder)
    family = _family(model)
    layout = layouts.make_layout(family, read_json(folder / "unet" / "config.json"),
                                 read_json(folder / "vae" / "config.json"))
    tensors: dict[str, torch.Tensor] = {}
    for name in layout.components:
        part = dict(layouts.component_to_original(name, _component(model, name), layout))
        tensors |= part | layouts.original_only(name, part, layout)
    if include_ema:
        ema = model if include_ema is True else open_model(
            _check_source(Path(include_ema), want_dir=True))
        tensors |= _ema_tensors(ema, layout)
    return _write_single(_cast(tensors, dtype), dst, _recorded(family, folder))


def single_file_to_folder(src: str | os.PathLike, dst_folder: str | os.PathLike, *,
                          config_folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Rebuild a diffusers folder from a single file with diffusers' own loader, offline, using
    config_folder (model_index.json, component configs, tokenizers), whose scheduler must match
    the prediction type the file records, if any. Raises NotAModelError,
    IncompatibleModelError, UnsafeFileError, LabkitError."""
    import diffusers

    src, dst = _check_source(Path(src), want_dir=False), Path(dst_folder)
    config = _check_source(Path(config_folder), want_dir=True)
    _check_destination([src, config], dst, overwrite, want_dir=True)
    class_name = read_json(config / "model_index.json").get("_class_name")
    if class_name not in PIPELINES:
        raise IncompatibleModelError(f"names pipeline {class_name!r}; supported: {PIPELINES}.",
                                     config / "model_index.json")
    with atomic_folder(dst) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent,
                                                                 prefix=".labkit-") as work:
        weights, model = src, _open_single(src)
        _check_prediction(model, config)
        # diffusers would torch.load anything not named .safetensors: give it safetensors only.
        if model.format != "safetensors" or src.suffix != ".safetensors":
            weights = _rewrite(src, Path(work) / "model.safetensors", dtype=None, ema=None,
                               overwrite=False)
        with quiet_libraries():
            try:
                pipe = getattr(diffusers, class_name).from_single_file(
                    str(weights), config=str(config), local_files_only=True,
                    torch_dtype=_float_dtype(model))
            except Exception as e:  # diffusers raises many types for a file that does not fit
                raise IncompatibleModelError(
                    f"could not be loaded as a {class_name} with the configs in {config} ({e}).",
                    src, "Check that the file is a full checkpoint of that family.") from e
            pipe.save_pretrained(tmp)
    return dst
