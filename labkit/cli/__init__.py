"""The command line: `python -m labkit inspect|stats|compare|hash|scan|convert|catalog PATH...`."""

from __future__ import annotations

from labkit.cli.dispatch import main

__all__ = ["main"]
