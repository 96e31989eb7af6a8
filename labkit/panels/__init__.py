"""One thin ipywidgets panel per notebook topic."""

from __future__ import annotations

import importlib
from typing import Any

_PANELS = {
    "welcome_panel": "labkit.panels.welcome",
    "stats_panel": "labkit.panels.stats",
    "inspector_panel": "labkit.panels.inspector",
    "generate_panel": "labkit.panels.generate",
    "lora_panel": "labkit.panels.lora",
    "embeddings_panel": "labkit.panels.embeddings",
    "families_panel": "labkit.panels.families",
    "surgery_panel": "labkit.panels.surgery",
    "catalog_panel": "labkit.panels.catalog",
}


def __getattr__(name: str) -> Any:
    if name in _PANELS:
        return getattr(importlib.import_module(_PANELS[name]), name)
    raise AttributeError(f"module 'labkit.panels' has no attribute {name!r}")
