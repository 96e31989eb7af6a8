"""Is the lab ready? A table of the checks a teacher runs before a workshop."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

import pandas as pd

DATA_DIR = Path(os.environ.get("LABKIT_DATA", Path(__file__).resolve().parents[2] / "data"))
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
    demo_files = sorted(p for p in DATA_DIR.rglob("*") if p.is_file()) if DATA_DIR.is_dir() else []
    rows.append(("demo files", f"{len(demo_files)} files in {DATA_DIR}", bool(demo_files),
                 "the lab's own tiny models" if demo_files else "data/ is missing: clone the repo again"))
    return pd.DataFrame(rows, columns=["check", "value", "ok", "note"])
