"""open_model(path): a model file or a diffusers folder, validated, its tensors listed, not loaded."""

from __future__ import annotations

import os
from pathlib import Path

from labkit.errors import CorruptFileError, LabkitError, NotAModelError
from labkit.files.diffusers_folder import open_folder
from labkit.files.model_file import ModelFile
from labkit.files.single import open_file

__all__ = ["ModelFile", "open_model"]


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
        return open_folder(path, variant) if path.is_dir() else open_file(path)
    except LabkitError:
        raise
    except (OSError, ValueError, RecursionError, MemoryError) as exc:
        raise CorruptFileError(f"could not be read ({exc}).", path,
                               "The file may be damaged: download it again.") from None
