"""Which paths under a folder are models: a listing by names and stats, then each file's first bytes.

The walk (`candidates`) opens no file, so a cached catalog costs a listing; `listed_format` reads
a file's head to tell a model from a text file or a zip of images.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

from labkit.errors import LabkitError
from labkit.sniff import container_of, sniff

# extension -> format: such files are listed even when their content is not a model (a broken
# download shows up as a row with its error)
EXTENSION_FORMATS = {".safetensors": "safetensors", ".gguf": "gguf", ".ckpt": "pickle",
                     ".pt": "pickle", ".pth": "pickle", ".bin": "pickle"}
# what files.what_is says -> the format a file proves by its content ("maybe_pickle" proves
# nothing: any text starting with a letter that is a protocol-0 opcode, such as a LICENSE, says so)
CONTENT_FORMATS = {"safetensors": "safetensors", "gguf": "gguf", "pickle": "pickle"}
# a folder that is one diffusers model: a pipeline, or one component with its config
PIPELINE_MARKER = "model_index.json"
COMPONENT_CONFIG = "config.json"
COMPONENT_WEIGHT_STEMS = ("diffusion_pytorch_model", "model")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
DIFFUSERS = "diffusers"


def is_diffusers_folder(folder: Path) -> bool:
    """True for a diffusers pipeline folder or a single component folder (config + weights)."""
    if (folder / PIPELINE_MARKER).is_file():
        return True
    if not (folder / COMPONENT_CONFIG).is_file():
        return False
    return any(p.name.startswith(COMPONENT_WEIGHT_STEMS) and p.name.endswith(WEIGHT_SUFFIXES)
               for p in folder.iterdir())


def _is_torch_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith(".pkl") for name in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def content_format(path: Path) -> str | None:
    """The model format a file's first bytes prove (safetensors, gguf, pickle), else None.

    A zip counts as a pickle checkpoint only when it holds a .pkl, so other zips are not models.
    """
    try:
        sniffed = sniff(path)
    except LabkitError:
        return None
    found = CONTENT_FORMATS.get(sniffed.form)
    if found == "pickle" and container_of(sniffed.head) == "zip" and not _is_torch_zip(path):
        return None
    return found


def listed_format(path: Path) -> str | None:
    """The format a catalog lists a file under: its content's, else its model extension's."""
    return content_format(path) or EXTENSION_FORMATS.get(path.suffix.lower())


def candidates(folder: Path) -> Iterator[tuple[Path, bool]]:
    """(path, is a diffusers folder) of every file and diffusers folder under `folder`, sorted,
    hidden folders skipped; opens no file (a file's content decides later whether it is a model)."""
    if is_diffusers_folder(folder):
        yield folder, True
        return
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs.sort()
        units = [d for d in dirs if not d.startswith(".") and is_diffusers_folder(here / d)]
        for d in units:
            yield here / d, True
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in units]
        for name in sorted(files):
            yield here / name, False


def find_models(folder: Path) -> Iterator[tuple[Path, str]]:
    """(path, claimed format) of every model under `folder`, a diffusers folder as one unit."""
    for path, is_folder in candidates(folder):
        fmt = DIFFUSERS if is_folder else listed_format(path)
        if fmt:
            yield path, fmt


def size_bytes(path: Path) -> int:
    """The size of a file, or of every file under a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
