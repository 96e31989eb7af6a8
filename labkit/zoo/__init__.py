"""The demo world: a tiny SD1-style model trained for real, its adapters, in every file form.

`path(name)` gives a demo file's location; `manifest()` lists them all (data/zoo.json).
"""

from __future__ import annotations

import json
from pathlib import Path

from labkit.errors import LabkitError

DATA = Path(__file__).resolve().parents[2] / "data"
MANIFEST = DATA / "zoo.json"
TOKENIZER = DATA / "tokenizer"


def manifest(data: Path = DATA) -> list[dict]:
    """The manifest entries (name, path, format, kind, base, sha256, made_by).
    Raises LabkitError if zoo.json is missing or unreadable."""
    file = data / "zoo.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise LabkitError(f"cannot read the demo manifest ({exc}).", file,
                          "Rebuild it with `python -m labkit.zoo build`.") from None


def path(name: str, data: Path = DATA) -> Path:
    """The path of a demo file by its manifest name. Raises LabkitError for an unknown name."""
    entries = {e["name"]: e for e in manifest(data)}
    if name not in entries:
        raise LabkitError(f"no demo file named {name!r}.", data / "zoo.json",
                          f"Known names: {', '.join(sorted(entries))}.")
    return data / entries[name]["path"]
