"""open_model(path): tell what a path holds by its content, validate it, and list its tensors."""

from __future__ import annotations

import os
from pathlib import Path

from labkit.errors import CorruptFileError, LabkitError, NotAModelError
from labkit.files.model_file import ModelFile, SafetensorsSource, flatten_checkpoint
from labkit.files.safetensors_header import read_header
from labkit.safety import verdicts as safety
from labkit.sniff import not_a_model, not_pickle, read_head, what_is

__all__ = ["ModelFile", "open_model", "what_is"]

def open_safetensors(path: Path) -> ModelFile:
    """Open a safetensors file by its header alone; tensors load on demand (mmap).

    Raises CorruptFileError if the header breaks a rule of the format.
    """
    header = read_header(path)
    source = SafetensorsSource(path)
    where = {name: (source, name) for name in header.table}
    return ModelFile(path, "safetensors", header.table, dict(header.metadata), where)


def open_pickle(path: Path) -> ModelFile:
    """Scan a pickle checkpoint, then load it with weights_only (memory-mapped for zips).

    Raises UnsafeFileError if a pickle names a global outside the allowlist, CorruptFileError
    if torch cannot load it, NotAModelError if it holds no tensors.
    """
    tensors, meta = flatten_checkpoint(safety.safe_load(path))
    if not tensors:
        raise NotAModelError("is a pickle holding no tensors, not a model.", path,
                             "Check that you picked the model file.")
    return ModelFile.from_tensors(path, "pickle", tensors, meta)


def _is_pickle(path: Path) -> bool:
    try:
        return bool(safety.scan(path).pickles)
    except NotAModelError:
        return False


def open_file(path: Path) -> ModelFile:
    """Open one model file by what its content is (see open_model for what it raises)."""
    head, size = read_head(path)
    suffix = path.suffix.lower()
    form = what_is(head, size, suffix)
    if form == "maybe_pickle":
        form = "pickle" if _is_pickle(path) else not_pickle(head, suffix)
    if form == "safetensors":
        return open_safetensors(path)
    if form == "pickle":
        return open_pickle(path)
    if form == "gguf":
        from labkit.files.gguf import open_gguf

        return open_gguf(path)
    raise not_a_model(form, path)


def open_model(path: str | os.PathLike[str], *, variant: str | None = None) -> ModelFile:
    """Open a model file or diffusers folder: validate it and list its tensors without loading them.

    `variant` picks weights such as "fp16" in a diffusers folder. Raises NotAModelError (missing,
    unreadable, not a model), CorruptFileError (breaks its format), UnsafeFileError (a pickle
    names a global outside the allowlist).
    """
    path = Path(path)
    if not path.exists():
        raise NotAModelError("no such file or folder.", path, "Check the path.")
    try:
        if path.is_dir():
            from labkit.files.diffusers_folder import open_folder

            return open_folder(path, variant)
        return open_file(path)
    except LabkitError:
        raise
    except (OSError, ValueError, RecursionError, MemoryError) as exc:
        raise CorruptFileError(f"could not be read ({exc}).", path,
                               "The file may be damaged: download it again.") from None
