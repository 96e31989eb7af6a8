"""What is in a folder: one row per model file (or diffusers folder), header-only unless hashes are asked."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from tqdm.auto import tqdm

from labkit.errors import LabkitError, NotAModelError, UnsafeFileError
from labkit.sniff import container_of, sniff

if TYPE_CHECKING:
    from labkit.files.opener import ModelFile

COLUMNS = ["path", "format", "kind", "base", "size_mb", "n_tensors", "error"]
HASH_KEYS = ["sha256", "autov1", "autov2", "autov3", "crc32", "blake3"]
UNSAFE_PREFIX = "unsafe: "

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
MB = 1024 * 1024


def summary(model: ModelFile) -> dict[str, object]:
    """The facts of an opened model: format, identity, tensor count, parameter count, dtypes."""
    identity = model.identity
    dtypes: dict[str, int] = {}
    for info in model.table.values():
        dtypes[info.dtype] = dtypes.get(info.dtype, 0) + 1
    return {
        "format": model.format,
        "kind": identity.kind,
        "base": identity.base,
        "variant": list(identity.variant),
        "base_source": identity.base_source,
        "evidence": list(identity.evidence),
        "n_tensors": len(model.table),
        "n_params": sum(info.numel for info in model.table.values()),
        "dtypes": dict(sorted(dtypes.items(), key=lambda kv: -kv[1])),
    }


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


def find_models(folder: Path) -> Iterator[tuple[Path, str]]:
    """(path, claimed format) of every model under `folder`, a diffusers folder as one unit."""
    if is_diffusers_folder(folder):
        yield folder, "diffusers"
        return
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs.sort()
        units = [d for d in dirs if not d.startswith(".") and is_diffusers_folder(here / d)]
        for d in units:
            yield here / d, "diffusers"
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in units]
        for name in sorted(files):
            fmt = listed_format(here / name)
            if fmt:
                yield here / name, fmt


def size_bytes(path: Path) -> int:
    """The size of a file, or of every file under a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _without_path(error: LabkitError) -> str:
    """The message without its leading path: the catalog shows the path in its own column."""
    text = str(error)
    return text.removeprefix(f"{error.path}: ") if error.path else text


def _refusal(error: UnsafeFileError) -> str:
    refused = [f"{g.module}.{g.name}" for g in getattr(error.verdict, "globals", ())
               if not g.allowed]
    return f"names {', '.join(refused)}" if refused else _without_path(error)


def _row(path: Path, claimed: str, shown: str, hashes: bool) -> dict[str, object]:
    from labkit.files.opener import open_model

    row: dict[str, object] = dict.fromkeys(COLUMNS)
    row.update(path=shown, format=claimed, size_mb=round(size_bytes(path) / MB, 3))
    try:
        model = open_model(path)
        facts = summary(model)
        row.update({k: facts[k] for k in ("format", "kind", "base", "n_tensors")})
    except UnsafeFileError as e:
        row["error"] = UNSAFE_PREFIX + _refusal(e)
    except LabkitError as e:
        row["error"] = _without_path(e)
    except Exception as e:  # one odd file must not stop the catalog of the rest
        row["error"] = f"{path}: could not be read ({type(e).__name__}: {e})"
    if hashes:
        row.update(dict.fromkeys(HASH_KEYS))
        if row["error"] is None and not path.is_dir():
            from labkit.hashes import file_hashes

            row.update({k: v for k, v in file_hashes(path, progress=False).items()
                        if k in HASH_KEYS})
    return row


def catalog(folder: str | Path, hashes: bool = False, progress: bool = True) -> pd.DataFrame:
    """Every model under `folder` with format, kind, base, size; raises NotAModelError if no folder.

    A file that cannot be read is a row with its error (an unsafe pickle's error starts with
    "unsafe: "); the six hashes are added (cached) when `hashes` is True.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAModelError("this is not a folder", path=folder,
                             hint="Give catalog a folder; use inspect for a single file.")
    found = list(find_models(folder))
    bar = tqdm(found, desc="catalog", unit="file", disable=not progress)
    rows = [_row(path, claimed, path.relative_to(folder).as_posix(), hashes)
            for path, claimed in bar]
    columns = COLUMNS + (HASH_KEYS if hashes else [])
    return pd.DataFrame(rows, columns=columns).astype({"n_tensors": "Int64"})
