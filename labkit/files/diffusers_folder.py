"""Open a diffusers folder (model_index.json + components), one component folder (unet/, vae/), or a
PEFT adapter folder (adapter_config.json + adapter_model.safetensors|.bin)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from labkit.errors import CorruptFileError, NotAModelError
from labkit.files.model_file import ModelFile, TensorSource
from labkit.files.single import open_file
from labkit.tensors import TensorInfo

MODEL_INDEX = "model_index.json"
CONFIG = "config.json"
WEIGHT_STEMS = ("diffusion_pytorch_model", "model")  # diffusers models, transformers models
WEIGHT_EXTS = (".safetensors", ".bin")  # safetensors first, as diffusers prefers it
MAX_JSON_BYTES = 64 * 1024 * 1024
_VARIANT = re.compile(r"^(?:diffusion_pytorch_model|model)\.(\w+?)(?:-\d+-of-\d+)?\.(?:safetensors|bin)$"
                      r"|^(?:diffusion_pytorch_model|model)\.(?:safetensors|bin)\.index\.(\w+)\.json$")
# PEFT save_pretrained: the adapter's weights, and its LoraConfig (r, lora_alpha, rank_pattern,
# alpha_pattern) kept as the file's metadata under PEFT_CONFIG.
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# peft's DreamBooth example saves each wrapped model in its own folder (unet/, text_encoder/):
# their parent opens as one adapter, keys under the component, configs as diffusers keeps them.
PEFT_COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "transformer")
PEFT_WRAPPER = "base_model.model."
PEFT_METADATA = "lora_adapter_metadata"  # diffusers' per-component LoraConfig: {"unet.r": 4, ...}
_INCOMPLETE = "The download is incomplete: fetch the missing files again."
# model_index.json classes that never hold weights (configs, vocabularies): their folder may be left
# out of a download that fetched only the weights, and the tensors are still all there.
WEIGHTLESS_CLASSES = re.compile(r"Scheduler$|Tokenizer(Fast)?$|ImageProcessor$|FeatureExtractor$")


def with_variant(name: str, variant: str | None) -> str:
    """diffusers' variant naming: the variant goes before the last dot (model.fp16.safetensors)."""
    if variant is None:
        return name
    head, _, ext = name.rpartition(".")
    return f"{head}.{variant}.{ext}"


def read_json(path: Path) -> dict:
    """A JSON object from a small file.

    Raises CorruptFileError if it is too large, not JSON, or not an object.
    """
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CorruptFileError("is too large for a JSON config.", path)
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise CorruptFileError(f"is not valid JSON ({str(exc)[:120]}).", path,
                               _INCOMPLETE) from None
    if not isinstance(data, dict):
        raise CorruptFileError("is not a JSON object.", path, _INCOMPLETE)
    return data


def variants_in(folder: Path) -> list[str]:
    """The weight variants a component folder holds (e.g. ["fp16"])."""
    found = {m.group(1) or m.group(2) for f in folder.iterdir() if (m := _VARIANT.match(f.name))}
    return sorted(found)


def _shards(index: Path) -> tuple[list[Path], dict[str, str]]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CorruptFileError("has no weight_map of tensor name to shard file.", index,
                               _INCOMPLETE)
    shards = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    for shard in shards:
        if shard.parent != index.parent or not shard.is_file():
            raise CorruptFileError(f"names the shard {shard.name!r}, which is missing.", index,
                                   _INCOMPLETE)
    return shards, weight_map


def weight_files(folder: Path, variant: str | None) -> tuple[list[Path], dict[str, str]] | None:
    """The weight files of one component (one file, or shards with their weight_map), or None."""
    for ext in WEIGHT_EXTS:
        for stem in WEIGHT_STEMS:
            single = folder / with_variant(stem + ext, variant)
            if single.is_file():
                return [single], {}
            index = folder / with_variant(f"{stem}{ext}.index.json", variant)
            if index.is_file():
                return _shards(index)
    return None


def _pick(folder: Path, variant: str | None) -> tuple[list[Path], dict[str, str]] | None:
    """The asked variant, else the plain weights, else the only variant there is."""
    found = weight_files(folder, variant) or weight_files(folder, None)
    if found is None and len(variants_in(folder)) == 1:
        found = weight_files(folder, variants_in(folder)[0])
    return found


def _component(folder: Path, variant: str | None, prefix: str,
               table: dict[str, TensorInfo], where: dict[str, tuple[TensorSource, str]]) -> bool:
    """Add one component's tensors under prefix; False if the folder holds no weights."""
    found = _pick(folder, variant)
    if found is None:
        return False
    files, weight_map = found
    for file in files:
        model = open_file(file)
        for name in model.table:
            table[prefix + name] = model.table[name]
            where[prefix + name] = model.locate(name)
    missing = [k for k in weight_map if prefix + k not in table]
    if missing:
        raise CorruptFileError(f"lists {len(missing)} tensors not in their shards, such as "
                               f"{missing[0]!r}.", folder, _INCOMPLETE)
    return True


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _pipeline(path: Path, variant: str | None) -> ModelFile:
    index = read_json(path / MODEL_INDEX)
    table: dict[str, TensorInfo] = {}
    where: dict[str, tuple[TensorSource, str]] = {}
    components: dict[str, Path] = {}
    for name, value in index.items():
        if name.startswith("_") or not (isinstance(value, list) and len(value) == 2 and value[0]):
            continue
        folder, weightless = path / name, bool(WEIGHTLESS_CLASSES.search(str(value[1])))
        if not folder.is_dir() and not weightless:
            raise CorruptFileError(f"is a diffusers folder missing its component folder {name}/ "
                                   f"({value[1]}), named in {MODEL_INDEX}.", path, _INCOMPLETE)
        if folder.is_dir() and _component(folder, variant, f"{name}/", table, where):
            components[name] = folder
        elif (folder / CONFIG).is_file():
            raise CorruptFileError(
                f"is a diffusers folder whose component {name!r} ({value[1]}) has no weights "
                f"(expected {name}/diffusion_pytorch_model.safetensors or model.safetensors).",
                path, _INCOMPLETE)
    metadata = {k: _as_text(v) for k, v in index.items()}
    return ModelFile(path, "diffusers", table, metadata, where, components)


def _peft_folder(path: Path) -> ModelFile:
    """A PEFT adapter folder: its weights file, with adapter_config.json as metadata."""
    config = read_json(path / PEFT_CONFIG)
    weights = next((path / name for name in PEFT_WEIGHTS if (path / name).is_file()), None)
    if weights is None:
        raise CorruptFileError(f"is a PEFT adapter folder ({PEFT_CONFIG}) with no weights "
                               f"(expected {' or '.join(PEFT_WEIGHTS)}).", path, _INCOMPLETE)
    model = open_file(weights)
    model.metadata[PEFT_CONFIG] = json.dumps(config)
    return model


def _peft_components(path: Path) -> ModelFile | None:
    """The PEFT adapter folders under a folder's component subfolders as one adapter, or None."""
    parts = [c for c in PEFT_COMPONENTS if (path / c / PEFT_CONFIG).is_file()]
    if not parts:
        return None
    table: dict[str, TensorInfo] = {}
    where: dict[str, tuple[TensorSource, str]] = {}
    configs: dict[str, object] = {}
    formats = []
    for component in parts:
        model = _peft_folder(path / component)
        formats.append(model.format)
        for name, info in model.table.items():
            key = f"{component}.{name.removeprefix(PEFT_WRAPPER)}"
            table[key], where[key] = info, model.locate(name)
        configs |= {f"{component}.{k}": v
                    for k, v in json.loads(model.metadata[PEFT_CONFIG]).items()}
    return ModelFile(path, formats[0], table, {PEFT_METADATA: json.dumps(configs)}, where,
                     {c: path / c for c in parts})


def open_folder(path: Path, variant: str | None = None) -> ModelFile:
    """Open a diffusers pipeline folder or a single component folder.

    Raises NotAModelError for a folder with no model, CorruptFileError for missing weights,
    shards or a broken index, UnsafeFileError for an unsafe .bin.
    """
    if (path / MODEL_INDEX).is_file():
        return _pipeline(path, variant)
    if (path / PEFT_CONFIG).is_file():
        return _peft_folder(path)
    if (peft := _peft_components(path)) is not None:
        return peft
    if (path / CONFIG).is_file():
        table: dict[str, TensorInfo] = {}
        where: dict[str, tuple[TensorSource, str]] = {}
        if not _component(path, variant, "", table, where):
            raise CorruptFileError("has config.json but no weights (expected "
                                   "diffusion_pytorch_model.safetensors or model.safetensors).",
                                   path, _INCOMPLETE)
        metadata = {k: _as_text(v) for k, v in read_json(path / CONFIG).items()}
        return ModelFile(path, "diffusers", table, metadata, where, {path.name: path})
    raise NotAModelError("is a folder with no model in it (no model_index.json, and no "
                         "config.json with weights).",
                         path, "Give the path of a model file, or of a diffusers folder.")
