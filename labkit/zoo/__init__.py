"""The demo world: a tiny SD1-style model trained for real, its adapters, in every file form.

`path(name)` gives a demo file's location; `manifest()` lists them all (zoo.json); both look in
`data_dir()`: $LABKIT_DATA, else the source checkout's data/ (zoo.registry.data_dir).
`DATA`, `MANIFEST` and `TOKENIZER` are that folder, its zoo.json and its tokenizer/, looked up
when read.
"""

from __future__ import annotations

import json
from pathlib import Path

from labkit.errors import LabkitError
from labkit.zoo.registry import DATA_ENV, data_dir

__all__ = ["DATA_ENV", "data_dir", "manifest", "path"]

_IN_DATA = {"DATA": "", "MANIFEST": "zoo.json", "TOKENIZER": "tokenizer"}


def __getattr__(name: str) -> Path:
    if name in _IN_DATA:
        return data_dir() / _IN_DATA[name]
    raise AttributeError(f"module 'labkit.zoo' has no attribute {name!r}")


def manifest(data: Path | None = None) -> list[dict]:
    """The manifest entries (name, path, format, kind, base, sha256, made_by) of `data`
    (default: data_dir()). Raises LabkitError if zoo.json is missing or unreadable."""
    file = (data or data_dir()) / "zoo.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise LabkitError(f"cannot read the demo manifest ({exc}).", file,
                          "Rebuild it with `python -m labkit.zoo build`.") from None


def path(name: str, data: Path | None = None) -> Path:
    """The path of a demo file by its manifest name. Raises LabkitError for an unknown name."""
    data = data or data_dir()
    entries = {e["name"]: e for e in manifest(data)}
    if name not in entries:
        raise LabkitError(f"no demo file named {name!r}.", data / "zoo.json",
                          f"Known names: {', '.join(sorted(entries))}.")
    return data / entries[name]["path"]
