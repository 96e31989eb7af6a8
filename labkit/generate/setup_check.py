"""Is the lab ready? A table of the checks a teacher runs before a workshop."""

from __future__ import annotations

import importlib.metadata
import platform

import pandas as pd

from labkit import zoo
from labkit.errors import LabkitError

_LIBRARIES = ("torch", "diffusers", "transformers", "peft", "safetensors", "ipywidgets")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def doctor() -> pd.DataFrame:
    """Check Python, the libraries, the compute device and the demo files; one row per check."""
    from labkit.generate.device import pick_device

    rows = [("python", platform.python_version(), True, "3.11 or newer is needed")]
    for lib in _LIBRARIES:
        v = _version(lib)
        rows.append((lib, v or "missing", v is not None, "installed" if v else "run `make lab`"))
    choice = pick_device()
    rows.append(("device", str(choice.device), True, choice.reason))
    rows.append(_demo_files())
    return pd.DataFrame(rows, columns=["check", "value", "ok", "note"])


def _demo_files() -> tuple[str, str, bool, str]:
    """The demo files row: are the files of zoo.json all in the data folder (zoo.data_dir())?"""
    try:
        folder = zoo.data_dir()
        entries = zoo.manifest(folder)
    except LabkitError as e:
        return ("demo files", "not found", False, str(e))
    missing = [e["name"] for e in entries if not (folder / e["path"]).exists()]
    value = f"{len(entries) - len(missing)} of {len(entries)} in {folder}"
    note = (f"missing: {', '.join(missing)}; copy data/ again (the kit's or the repo's)"
            if missing else "the lab's own tiny models")
    return ("demo files", value, not missing, note)
