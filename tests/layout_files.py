"""Test helper: real SD key tables from /work/shared/layouts as TensorInfo tables and sparse files.

A sparse safetensors file is its header followed by a hole: zero-filled, full length, no disk.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

from labkit.tensors import TensorInfo

LAYOUTS = Path(__file__).resolve().parent / "data" / "layouts"  # copies of /work/shared/layouts
LAYOUT_NAMES = sorted(p.stem for p in LAYOUTS.glob("*.json"))


def load_layout(name: str) -> dict[str, TensorInfo]:
    """The key table of one layout file (e.g. "sd15") as {key: TensorInfo}, in file order."""
    data = json.loads((LAYOUTS / f"{name}.json").read_text())
    return {k: TensorInfo(tuple(v["shape"]), v["dtype"]) for k, v in data["tensors"].items()}


def write_sparse(path: Path, table: Mapping[str, TensorInfo],
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write a valid zero-filled safetensors file for `table`: the header, then a hole."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key, info in table.items():
        header[key] = {"dtype": info.dtype, "shape": list(info.shape),
                       "data_offsets": [offset, offset + info.nbytes]}
        offset += info.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return path


def read_sparse(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """(table, metadata) from a safetensors header: the minimal read, 8 + N bytes."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    metadata = header.pop("__metadata__", {})
    return {k: TensorInfo(tuple(v["shape"]), v["dtype"]) for k, v in header.items()}, metadata
