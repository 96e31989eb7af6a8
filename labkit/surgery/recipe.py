"""What surgery may combine, and the record it writes of what it did.

Families: two checkpoints merge only when identify gives them one base (a SD1 and an SDXL file
share no weights), and only model kinds merge (a LoRA given as a checkpoint is refused). The
record: modelspec fields and, under `labkit.recipe`, the operation, its parameters and each
source's name and SHA256 with the recipe that source itself carries (so a merge of merges keeps
its whole lineage).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labkit.errors import IncompatibleModelError
from labkit.files.model_file import ModelFile

RECIPE_KEY = "labkit.recipe"
# Kinds of file that hold model weights to merge, bake into or extract from.
MODEL_KINDS = ("checkpoint", "unet", "text_encoder", "vae")
ADAPTER_KINDS = ("lora", "loha", "lokr", "lycoris_full", "dora")
# modelspec fields a result takes from its first source (the rest are the result's own).
KEPT_MODELSPEC = ("modelspec.architecture", "modelspec.implementation", "modelspec.resolution",
                  "modelspec.prediction_type")
MODELSPEC_VERSION = "1.0.0"


def _said(model: ModelFile) -> str:
    ident = model.identity
    return f"{model.path} is a {ident.kind.replace('_', ' ')} of base {ident.base}"


SINGLE_FORMATS = ("safetensors", "pickle")  # surgery reads and writes single files


def require_model(model: ModelFile, role: str) -> None:
    """Raise IncompatibleModelError when a file given as a model (role "A", "base"...) is not
    one (a LoRA, a textual inversion) or not a single file (a diffusers folder, a GGUF)."""
    if model.format not in SINGLE_FORMATS:
        raise IncompatibleModelError(
            f"was given as model {role}, but it is a {model.format} "
            f"{'folder' if model.path.is_dir() else 'file'}; surgery works on single "
            ".safetensors or .ckpt checkpoints.", model.path,
            "Convert it to one file first: `python -m labkit convert SRC --out X.safetensors`.")
    if model.identity.kind not in MODEL_KINDS:
        hint = ("Give it as the LoRA argument instead (bake CKPT LORA)."
                if model.identity.kind in ADAPTER_KINDS else "Give a checkpoint file.")
        raise IncompatibleModelError(f"was given as model {role}, but it is a "
                                     f"{model.identity.kind.replace('_', ' ')}, not a model.",
                                     model.path, hint)


def require_same_family(models: Sequence[ModelFile], roles: Sequence[str]) -> None:
    """Raise IncompatibleModelError, naming both files, when the models are not all model files
    of one base and kind."""
    for model, role in zip(models, roles, strict=True):
        require_model(model, role)
    first = models[0]
    for model in models[1:]:
        same = (model.identity.base, model.identity.kind) == (first.identity.base,
                                                              first.identity.kind)
        if not same:
            raise IncompatibleModelError(
                f"cannot be combined with {model.path}: {_said(first)}, {_said(model)}. Their "
                "weights do not correspond.", first.path,
                "Give models of one family (identify them with `python -m labkit inspect`).")


def require_adapter_fits(adapter_base: str, adapter_path: Path, model: ModelFile) -> None:
    """Raise IncompatibleModelError, naming both files, when a LoRA was made for another base."""
    if adapter_base not in ("unknown", model.identity.base):
        raise IncompatibleModelError(
            f"is a LoRA for base {adapter_base}, but {_said(model)}.", adapter_path,
            "Use a LoRA trained for that checkpoint's family.")


def source_record(model: ModelFile, role: str, hashed: bool = True) -> dict[str, Any]:
    """A source as the recipe names it: role, file name, size, SHA256 (cached by labkit.hashes;
    None when not `hashed`), base and the recipe the source itself carries, if any."""
    from labkit.hashes import file_hashes

    sha = file_hashes(model.path, progress=False)["sha256"] if hashed else None
    record: dict[str, Any] = {"role": role, "name": model.path.name,
                              "bytes": model.path.stat().st_size, "sha256": sha,
                              "base": model.identity.base}
    parent = model.metadata.get(RECIPE_KEY)
    if parent:
        try:
            record["recipe"] = json.loads(parent)
        except ValueError:
            record["recipe"] = parent
    return record


def recipe_metadata(operation: str, parameters: Mapping[str, Any],
                    sources: Sequence[tuple[ModelFile, str]], title: str,
                    extra: Mapping[str, str] | None = None, hashed: bool = True) -> dict[str, str]:
    """The output's metadata: modelspec fields (some kept from the first source), the recipe
    (operation, parameters, sources with hashes unless not `hashed`, and lineage) and `extra`
    fields."""
    first = sources[0][0].metadata
    meta = {k: first[k] for k in KEPT_MODELSPEC if k in first}
    meta |= {"modelspec.sai_model_spec": MODELSPEC_VERSION, "modelspec.title": title,
             "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
             "modelspec.description": f"labkit {operation}: see {RECIPE_KEY}"}
    recipe = {"operation": operation, "parameters": dict(parameters),
              "sources": [source_record(m, role, hashed) for m, role in sources]}
    meta[RECIPE_KEY] = json.dumps(recipe, sort_keys=True)
    return meta | dict(extra or {})


def recipe_of(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """The recipe a file's metadata carries, None when it has none."""
    text = metadata.get(RECIPE_KEY)
    return None if text is None else json.loads(text)
