"""labkit: the Stable Diffusion model lab.

`import labkit as lk` is cheap: the heavy libraries (torch, diffusers, pandas) load on the
first use of a name that needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (a module never shares its function's name, so that
# importing the module cannot shadow the function on the package)
_LAZY_NAMES = {
    "open_model": "labkit.files",
    "ModelFile": "labkit.files",
    "catalog": "labkit.inventory",
    "doctor": "labkit.setup_check",
    "pick_device": "labkit.device",
    "LabkitError": "labkit.errors",
}
_SUBMODULES = {
    "cli", "convert", "device", "embeddings", "errors", "files", "hashes", "identify", "inventory",
    "layouts", "lora", "metadata", "panels", "pipelines", "plots", "safety", "setup_check", "stats",
    "tensors", "zoo",
}

__all__ = sorted(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"labkit.{name}")
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES) | _SUBMODULES)
