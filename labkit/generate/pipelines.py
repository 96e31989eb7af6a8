"""Load any SD1, SD2 or SDXL checkpoint (single file or diffusers folder) offline, and generate.

The pipeline class comes from what labkit.identify.identity reads in the tensors, never from the file
name. Single files get their architecture from the config folders the lab ships
(labkit.convert.shipped) or, for the demo models, from the demo's own diffusers folder; pickles
are read by labkit.safety.verdicts only and handed to diffusers as a temporary .safetensors.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from safetensors.torch import save_file

from labkit.convert import shipped as model_configs
from labkit.errors import IncompatibleModelError, LabkitError
from labkit.generate.device import DeviceChoice, pick_device
from labkit.identify.rules import DEMO_BASES


class _TorchvisionNotice(logging.Filter):
    """transformers 5 announces, at the first pipeline load, that image processors fall back to
    PIL without torchvision. The lab runs no image processor (no safety checker), so the notice
    only tells learners to install a package they do not need."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_TorchvisionNotice())

# Making images lives in labkit.generate.sampling; its public names are offered here too.
__all__ = ["MemoryPlan", "cached_pipeline", "config_for", "demo_config", "load_pipeline",
           "memory_plan", "model_bytes", "place"]

# Free memory must exceed the weights by this factor for a whole pipeline on the GPU (the
# UNet's activations at SDXL size take a few GiB); above 1.0x, attention slicing still fits.
GPU_HEADROOM = 1.5
GPU_SLICING = 1.05
PIPELINE_CACHE_SIZE = 2



@dataclass(frozen=True)
class MemoryPlan:
    """How the pipeline is placed on a GPU: "gpu", "attention_slicing" or "cpu_offload", and why."""

    mode: str
    reason: str


def memory_plan(free_bytes: int, weight_bytes: int) -> MemoryPlan:
    """Decide how to place `weight_bytes` of weights on a GPU with `free_bytes` free."""
    gib = 1024**3
    have = f"{free_bytes / gib:.1f} GiB free for {weight_bytes / gib:.1f} GiB of weights"
    if free_bytes >= weight_bytes * GPU_HEADROOM:
        return MemoryPlan("gpu", f"the whole pipeline fits on the GPU ({have})")
    if free_bytes >= weight_bytes * GPU_SLICING:
        return MemoryPlan("attention_slicing",
                          f"the weights fit but little is left for activations ({have}): "
                          "attention is computed in slices (slower, less memory)")
    return MemoryPlan("cpu_offload",
                      f"the weights do not fit ({have}): each part moves to the GPU only while "
                      "it runs (enable_model_cpu_offload; slower)")


def model_bytes(pipe: diffusers.DiffusionPipeline) -> int:
    """The bytes of all weights of a pipeline's torch modules."""
    return sum(p.numel() * p.element_size() for m in _modules(pipe).values() for p in m.parameters())


def _modules(pipe: diffusers.DiffusionPipeline) -> dict[str, torch.nn.Module]:
    return {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}


def _say(message: str, progress: bool) -> None:
    if progress:
        print(message)


def place(pipe: diffusers.DiffusionPipeline, choice: DeviceChoice, progress: bool = True) -> str:
    """Move a pipeline to the chosen device, offloading or slicing when GPU memory is short."""
    if choice.device.type != "cuda":
        pipe.to(choice.device)
        return "cpu"
    free, _total = torch.cuda.mem_get_info(choice.device)
    plan = memory_plan(free, model_bytes(pipe))
    _say(f"Memory: {plan.reason}", progress)
    if plan.mode == "cpu_offload":
        pipe.enable_model_cpu_offload(device=choice.device)
    else:
        pipe.to(choice.device)
    if plan.mode == "attention_slicing":
        pipe.enable_attention_slicing()
    return plan.mode


def demo_config(base: str) -> Path:
    """The demo world's diffusers folder of a demo base: the config of its single files.
    Raises LabkitError when the demo world has no such folder."""
    from labkit import zoo
    for entry in zoo.manifest():
        if (entry["format"], entry["kind"], entry["base"]) == ("diffusers", "checkpoint", base):
            return zoo.path(entry["name"])
    raise LabkitError(f"the demo world has no diffusers folder of base {base!r}.",
                      hint="Rebuild it with `python -m labkit.zoo build`, or pass config=.")


def config_for(model: Any, prediction: str | None = None) -> Path:
    """The config folder of an opened single-file checkpoint: the demo world's own folder for a
    demo base, else the lab's shipped folder of its family and prediction type (guessed when
    None). Raises IncompatibleModelError (no shipped config) or LabkitError (no demo folder)."""
    ident = model.identity
    if ident.base in DEMO_BASES:
        return demo_config(ident.base)
    pred = prediction or model_configs.prediction_of(ident.base, ident.variant, model.metadata)
    return model_configs.config_folder(model_configs.folder_name(ident.base, pred))


def _state_dict_file(path: Path, folder: Path) -> Path:
    """A pickle's tensors, read by labkit.safety.verdicts, written as a .safetensors file in `folder`."""
    from labkit.safety.verdicts import safe_load

    state = safe_load(path)
    while isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise IncompatibleModelError("the pickle holds no state dict of tensors.", path,
                                     hint="Give a Stable Diffusion .ckpt checkpoint.")
    seen: set[int] = set()
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        ptr = value.untyped_storage().data_ptr()
        # safetensors refuses tensors sharing memory; a clone breaks the sharing.
        tensors[key] = value.clone() if ptr in seen else value.contiguous()
        seen.add(ptr)
    out = folder / f"{path.stem}.safetensors"
    save_file(tensors, str(out))
    return out


def _safetensors_path(model: Any, tmp: Path) -> Path:
    """A path diffusers reads with safetensors (it picks its reader by the suffix): the file
    itself, a .safetensors link to it, or a pickle's tensors rewritten."""
    if model.format == "pickle":
        return _state_dict_file(model.path, tmp)
    if model.format != "safetensors":
        raise IncompatibleModelError(
            f"a {model.format} file cannot be loaded as a whole pipeline.", model.path,
            hint="Give a full checkpoint as .safetensors, .ckpt or a diffusers folder.")
    if model.path.suffix == ".safetensors":
        return model.path
    link = tmp / f"{model.path.stem}.safetensors"
    try:
        link.symlink_to(model.path.resolve())
    except OSError:  # no symlinks (Windows without the privilege): copy
        shutil.copyfile(model.path, link)
    return link


@contextmanager
def _loading_bars(show: bool) -> Iterator[None]:
    """diffusers' and transformers' loading bars on or off for the duration (they are global)."""
    from transformers.utils import logging as tf_logging

    libraries = (diffusers.utils.logging, tf_logging)
    before = [lib.is_progress_bar_enabled() for lib in libraries]

    def switch(states: list[bool]) -> None:
        for lib, on in zip(libraries, states, strict=True):
            (lib.enable_progress_bar if on else lib.disable_progress_bar)()

    switch([show] * len(libraries))
    try:
        yield
    finally:
        switch(before)


def _build(cls: type, model: Any, dtype: torch.dtype, config: Path | None,
           prediction: str | None, ema: bool) -> diffusers.DiffusionPipeline:
    # The lab ships no safety checker; saying so up front spares a page-long warning.
    extra = ({"requires_safety_checker": False}
             if "requires_safety_checker" in inspect.signature(cls.__init__).parameters else {})
    if model.format == "diffusers":
        return cls.from_pretrained(str(model.path), dtype=dtype, local_files_only=True,
                                   **extra)
    folder = Path(config) if config is not None else config_for(model, prediction)
    # (a mapped file cannot be deleted on Windows: leave that to the system's temp cleanup)
    with tempfile.TemporaryDirectory(prefix="labkit-", ignore_cleanup_errors=True) as tmp:
        return cls.from_single_file(str(_safetensors_path(model, Path(tmp))), config=str(folder),
                                    dtype=dtype, local_files_only=True, extract_ema=ema, **extra)


def load_pipeline(path: str | Path, device: str = "auto", dtype: str = "auto",
                  progress: bool = True, config: str | Path | None = None,
                  prediction: str | None = None, ema: bool = True) -> diffusers.DiffusionPipeline:
    """A diffusers pipeline from a checkpoint file or diffusers folder, offline.

    `config` overrides the config folder for a single file; `prediction` ("epsilon" or
    "v_prediction") overrides the guess for SD 2.x files; `ema` takes the UNet from a file's
    `model_ema.` copy when it has one (the weights released for inference). Raises NotAModelError (missing or not
    a model), CorruptFileError, UnsafeFileError (a pickle outside the allowlist) and
    IncompatibleModelError (not a full checkpoint of a family the lab runs).
    """
    from labkit.files.opener import open_model

    if prediction not in (None, *model_configs.PREDICTIONS):
        raise LabkitError(f"unknown prediction type {prediction!r}.",
                          hint=f"Use one of {model_configs.PREDICTIONS}, or None to guess.")
    choice = pick_device(device, dtype)
    _say(f"Device: {choice}", progress)
    model = open_model(path)
    ident = model.identity
    cls = getattr(diffusers, model_configs.pipeline_class_name(ident.base, ident.kind))
    _say(f"{model.path.name}: {ident.kind} of base {ident.base} -> {cls.__name__}", progress)
    try:
        with _loading_bars(progress):
            pipe = _build(cls, model, choice.dtype, config, prediction, ema)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise IncompatibleModelError(
            f"diffusers could not build a {cls.__name__} from it ({type(e).__name__}: {e}).",
            model.path, hint="Check that it is a complete checkpoint of the family named above, "
                             "or pass config=<a diffusers folder of the same architecture>.") from e
    pipe.set_progress_bar_config(disable=not progress)
    place(pipe, choice, progress)
    return pipe


_CACHE: OrderedDict[tuple, diffusers.DiffusionPipeline] = OrderedDict()


def cached_pipeline(path: str | Path, device: str = "auto", dtype: str = "auto",
                    progress: bool = True) -> diffusers.DiffusionPipeline:
    """load_pipeline, remembering the last few pipelines by (path, its mtime, device, dtype)."""
    p = Path(path).expanduser().resolve()
    key = (str(p), p.stat().st_mtime_ns if p.exists() else None, device, dtype)
    if key not in _CACHE:
        _CACHE[key] = load_pipeline(p, device, dtype, progress)
        while len(_CACHE) > PIPELINE_CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return _CACHE[key]

