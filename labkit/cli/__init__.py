"""The command line: `python -m labkit inspect|stats|compare|hash|scan|convert|catalog PATH...`, and
the model surgery `merge|bake|extract-lora|resize-lora|merge-lora` (labkit.cli.surgery)."""

from __future__ import annotations

from labkit.cli.dispatch import main

__all__ = ["main"]
