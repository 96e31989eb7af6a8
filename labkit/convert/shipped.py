"""The diffusers config folders the lab ships, so single files load with no hub call.

Each folder under labkit/configs/ holds a family's model_index.json and component configs,
written from the public model configs. CLIP's vocab.json and merges.txt are shipped once, in
configs/clip_tokenizer/, and copied into every tokenizer folder when a folder is assembled in
the cache (diffusers wants a complete folder).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from labkit.errors import IncompatibleModelError
from labkit.identify.rules import PREDICTION_TYPE_KEY, V_PREDICTION_VALUES

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
SHARED_TOKENIZER = CONFIG_ROOT / "clip_tokenizer"
TOKENIZER_FILES = ("vocab.json", "merges.txt")

# (base, prediction type) -> shipped folder. SD 2.x 768-v and 512-base share one layout:
# only the prediction type (and the native size) tells them apart.
FOLDERS: dict[tuple[str, str], str] = {
    ("sd1", "epsilon"): "sd15",
    ("sd2", "v_prediction"): "sd2_v",
    ("sd2", "epsilon"): "sd2_base",
    ("sdxl", "epsilon"): "sdxl_base",
}
# base -> the diffusers pipeline class that runs it.
PIPELINE_CLASSES: dict[str, str] = {
    "sd1": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "demo_sd1": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "demo_sdxl": "StableDiffusionXLPipeline",
}
# Without a v_prediction variant, SD 2.x is taken as 768-v (the common release, and diffusers'
# own default) unless the checkpoint's global_step is the 512-base's, as diffusers decides too.
SD2_DEFAULT_PREDICTION = "v_prediction"
SD2_BASE_GLOBAL_STEP = "875000"
PREDICTIONS = ("epsilon", "v_prediction")


def shipped() -> list[str]:
    """The names of the shipped config folders."""
    return sorted(set(FOLDERS.values()))


def pipeline_class_name(base: str, kind: str = "checkpoint") -> str:
    """The diffusers pipeline class for an identified file; raises IncompatibleModelError."""
    if kind != "checkpoint":
        raise IncompatibleModelError(
            f"this file is a {kind}, not a full checkpoint (UNet + VAE + text encoder).",
            hint="Load a full checkpoint or a diffusers folder; apply LoRAs and embeddings to it "
                 "afterwards.")
    if base not in PIPELINE_CLASSES:
        raise IncompatibleModelError(
            f"the lab cannot generate with a {base!r} checkpoint.",
            hint=f"Generation supports the families {sorted(PIPELINE_CLASSES)}.")
    return PIPELINE_CLASSES[base]


def told_prediction(metadata: Mapping[str, str]) -> str | None:
    """The prediction type a file's metadata records (modelspec.prediction_type), else None."""
    said = metadata.get(PREDICTION_TYPE_KEY)
    return "v_prediction" if said in V_PREDICTION_VALUES else said


def prediction_of(base: str, variant: Sequence[str], metadata: Mapping[str, str]) -> str:
    """The prediction type of a checkpoint from its identity and metadata."""
    if "v_prediction" in variant:
        return "v_prediction"
    said = told_prediction(metadata)
    if said is not None:
        return said
    if base == "sd2" and str(metadata.get("global_step", "")) != SD2_BASE_GLOBAL_STEP:
        return SD2_DEFAULT_PREDICTION
    return "epsilon"


def folder_name(base: str, prediction: str) -> str:
    """The shipped folder for a family and prediction type; raises IncompatibleModelError."""
    if (base, prediction) not in FOLDERS:
        raise IncompatibleModelError(
            f"the lab ships no config for a {base!r} checkpoint with {prediction} prediction.",
            hint="Pass config=<a diffusers folder of the same architecture>.")
    return FOLDERS[(base, prediction)]


def cache_root() -> Path:
    """The lab's cache folder: $LABKIT_CACHE, else $XDG_CACHE_HOME/labkit, else ~/.cache/labkit."""
    if os.environ.get("LABKIT_CACHE"):
        return Path(os.environ["LABKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "labkit"


def _digest(source: Path) -> str:
    """A short fingerprint of a folder's files (names, sizes, times), to version the cache."""
    h = hashlib.sha256()
    for p in sorted([*source.rglob("*"), *SHARED_TOKENIZER.iterdir()]):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(CONFIG_ROOT)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def _writable_cache() -> Path:
    root = cache_root() / "configs"
    try:
        root.mkdir(parents=True, exist_ok=True)
        return root
    except OSError:
        fallback = Path(tempfile.gettempdir()) / "labkit-configs"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def config_folder(name: str) -> Path:
    """A complete diffusers config folder (tokenizer files included) for a shipped name."""
    source = CONFIG_ROOT / name
    if name not in shipped():
        raise IncompatibleModelError(f"no shipped config folder {name!r}.",
                                     hint=f"Known: {shipped()}.")
    root = _writable_cache()
    final = root / f"{name}-{_digest(source)}"
    if final.is_dir():
        return final
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    shutil.copytree(source, work, dirs_exist_ok=True)
    for tok in work.glob("tokenizer*"):
        for f in TOKENIZER_FILES:
            shutil.copyfile(SHARED_TOKENIZER / f, tok / f)
    try:
        os.replace(work, final)
    except OSError:  # another process assembled it first
        shutil.rmtree(work, ignore_errors=True)
    return final
