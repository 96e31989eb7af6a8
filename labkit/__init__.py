"""labkit: the Stable Diffusion model lab.

`import labkit as lk` is cheap: the heavy libraries (torch, diffusers, pandas) load on the
first use of a name that needs them.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (a module never shares its function's name, so that
# importing the module cannot shadow the function on the package)
_LAZY_NAMES = {
    "open_model": "labkit.files",
    "ModelFile": "labkit.files",
    "catalog": "labkit.inventory",
    "doctor": "labkit.generate.setup_check",
    "pick_device": "labkit.generate.device",
    "LabkitError": "labkit.errors",
}

_WITH_ANALYSES = {"open_model", "ModelFile"}

__all__ = sorted(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        if name in _WITH_ANALYSES:
            importlib.import_module("labkit.stats")  # registers ModelFile.stats()
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    if not name.startswith("_") and importlib.util.find_spec(f"labkit.{name}") is not None:
        return importlib.import_module(f"labkit.{name}")
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    modules = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return sorted(set(globals()) | set(_LAZY_NAMES) | modules)
