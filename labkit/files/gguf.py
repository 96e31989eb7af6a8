"""Read a GGUF file's header and tensor table with explicit bounds (never the `gguf` package)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import BinaryIO, NamedTuple

import torch

from labkit.errors import CorruptFileError, IncompatibleModelError, NotAModelError
from labkit.files.model_file import ModelFile, TensorSource
from labkit.tensors import DTYPES, TensorInfo

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # v1 used 32-bit counts and is long gone
MAX_KEY = 65_535  # the spec's limit on a key's length
MAX_STRING = 16 * 1024 * 1024
MAX_COUNT = 10_000_000  # tensors, key/values, array items: also bounded by the bytes left
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NESTING = 3
META_ITEMS_SHOWN = 16
DEFAULT_ALIGNMENT = 32

# metadata value type -> (name, struct format; None for string and array)
VALUE_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("u8", "<B"), 1: ("i8", "<b"), 2: ("u16", "<H"), 3: ("i16", "<h"), 4: ("u32", "<I"),
    5: ("i32", "<i"), 6: ("f32", "<f"), 7: ("bool", "<?"), 8: ("string", None),
    9: ("array", None), 10: ("u64", "<Q"), 11: ("i64", "<q"), 12: ("f64", "<d"),
}
# ggml tensor type -> (name: safetensors name where one exists, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}
_BLOCKS = {name: (block, size) for name, block, size in GGML_TYPES.values()}


class GGUFTensorInfo(TensorInfo):
    """TensorInfo whose dtype may be a ggml block-quantised type (Q4_K, ...)."""

    __slots__ = ()

    @property
    def nbytes(self) -> int:
        """Size of the data in bytes, counting whole quantisation blocks."""
        block, size = _BLOCKS[self.dtype]
        return self.numel // block * size


class _Bad(Exception):
    """A rule of the format broken; becomes CorruptFileError with the path."""


class _Cursor:
    """Sequential reads that never ask for more than the file holds."""

    def __init__(self, f: BinaryIO, size: int):
        self.f, self.size, self.pos = f, size, 0

    def left(self) -> int:
        return self.size - self.pos

    def read(self, n: int) -> bytes:
        if n > self.left():
            raise _Bad(f"needs {n} bytes at byte {self.pos} but the file ends first (cut short?)")
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def skip(self, n: int) -> None:
        if n > self.left():
            raise _Bad(f"needs {n} bytes at byte {self.pos} but the file ends first (cut short?)")
        self.pos += n
        self.f.seek(self.pos)

    def unpack(self, fmt: str) -> int | float | bool:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self, what: str, item_bytes: int) -> int:
        n = int(self.unpack("<Q"))
        if n > MAX_COUNT or n * item_bytes > self.left():
            raise _Bad(f"claims {n} {what}, more than the file can hold")
        return n

    def string(self, limit: int = MAX_STRING) -> str:
        n = int(self.unpack("<Q"))
        if n > min(limit, self.left()):
            raise _Bad(f"claims a string of {n} bytes at byte {self.pos - 8}")
        return self.read(n).decode("utf-8", errors="replace")


def _value(cur: _Cursor, vtype: int, depth: int = 0) -> object:
    """One metadata value; long arrays are walked (bounded) and summarised, not kept."""
    if vtype not in VALUE_TYPES:
        raise _Bad(f"unknown metadata value type {vtype}")
    name, fmt = VALUE_TYPES[vtype]
    if fmt is not None:
        return cur.unpack(fmt)
    if name == "string":
        return cur.string()
    if depth >= MAX_NESTING:
        raise _Bad("arrays nested too deeply")
    item_type = int(cur.unpack("<I"))
    item_fmt = VALUE_TYPES.get(item_type, ("", None))[1]
    n = cur.count("array items", struct.calcsize(item_fmt) if item_fmt else 8)
    items = [_value(cur, item_type, depth + 1) for _ in range(min(n, META_ITEMS_SHOWN))]
    if n > META_ITEMS_SHOWN:
        if item_fmt:
            cur.skip((n - META_ITEMS_SHOWN) * struct.calcsize(item_fmt))
        else:
            for _ in range(n - META_ITEMS_SHOWN):
                _value(cur, item_type, depth + 1)
        return f"[{n} x {VALUE_TYPES[item_type][0]}]"
    return items


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class GGUFHeader(NamedTuple):
    """What the header says: version, metadata as text, tensors, and where each one's bytes lie."""

    version: int
    metadata: dict[str, str]
    table: dict[str, GGUFTensorInfo]
    spans: dict[str, tuple[int, int]]


def _tensor(cur: _Cursor) -> tuple[str, GGUFTensorInfo, int]:
    name = cur.string(MAX_KEY)
    n_dims = int(cur.unpack("<I"))
    if n_dims > MAX_DIMS:
        raise _Bad(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
    dims = [int(cur.unpack("<Q")) for _ in range(n_dims)]
    ggml = int(cur.unpack("<I"))
    if ggml not in GGML_TYPES:
        raise _Bad(f"tensor {name!r} has unknown ggml type {ggml}")
    type_name, block, _ = GGML_TYPES[ggml]
    if dims and dims[0] % block:
        raise _Bad(f"tensor {name!r}: first dimension {dims[0]} is not a multiple of {block}")
    return name, GGUFTensorInfo(tuple(reversed(dims)), type_name), int(cur.unpack("<Q"))


def parse(f: BinaryIO, size: int) -> GGUFHeader:
    """Parse the header and tensor table from an open file of the given size (raises _Bad)."""
    cur = _Cursor(f, size)
    if cur.read(4) != MAGIC:
        raise _Bad("does not start with GGUF")
    version = int(cur.unpack("<I"))
    if version not in VERSIONS:
        raise _Bad(f"is GGUF version {version}; the lab reads versions 2 and 3")
    n_tensors = cur.count("tensors", 24)
    n_kv = cur.count("metadata entries", 12)
    metadata: dict[str, str] = {}
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = cur.string(MAX_KEY)
        value = _value(cur, int(cur.unpack("<I")))
        if key == "general.alignment":
            if not (isinstance(value, int) and 0 < value <= 2**20 and value & (value - 1) == 0):
                raise _Bad(f"general.alignment {value!r} is not a power of two")
            alignment = value
        metadata[key] = _text(value)
    tensors = [_tensor(cur) for _ in range(n_tensors)]
    data_start = -(-cur.pos // alignment) * alignment
    table, spans = {}, {}
    for name, info, offset in sorted(tensors, key=lambda t: t[2]):
        begin = data_start + offset
        if offset % alignment or begin + info.nbytes > size:
            raise _Bad(f"tensor {name!r} at offset {offset} lies outside the data (or unaligned)")
        if name in table:
            raise _Bad(f"names tensor {name!r} twice")
        table[name], spans[name] = info, (begin, info.nbytes)
    return GGUFHeader(version, metadata, table, spans)


def read_gguf(path: Path) -> GGUFHeader:
    """Read a GGUF header and tensor table, bounded by the file's real size.

    Raises NotAModelError if unreadable, CorruptFileError if the header breaks the format.
    """
    try:
        with open(path, "rb") as f:
            return parse(f, os.fstat(f.fileno()).st_size)
    except OSError as exc:
        raise NotAModelError(f"cannot be read ({exc.strerror}).", path) from None
    except _Bad as exc:
        raise CorruptFileError(f"is not a valid GGUF file: {exc}.", path,
                               "The file is damaged or cut short: download it again.") from None


class GGUFSource:
    """Unquantised GGUF tensors read on demand; quantised ones are listed, not decoded."""

    def __init__(self, path: Path, header: GGUFHeader):
        self.path, self.header = path, header

    def load(self, key: str) -> torch.Tensor:
        """Read one unquantised tensor (F32, F16, BF16, F64, I8..I64)."""
        info = self.header.table[key]
        torch_dtype = DTYPES.get(info.dtype, (None, 0))[0]
        if torch_dtype is None:
            raise IncompatibleModelError(
                f"tensor {key!r} is {info.dtype}-quantised; the lab lists GGUF tensors but does "
                "not decode quantised blocks.", self.path,
                "Use ComfyUI-GGUF or llama.cpp's tools to dequantise it.")
        begin, nbytes = self.header.spans[key]
        with open(self.path, "rb") as f:
            f.seek(begin)
            data = bytearray(f.read(nbytes))
        return torch.frombuffer(data, dtype=torch_dtype).reshape(info.shape)


def open_gguf(path: Path) -> ModelFile:
    """Open a GGUF file: metadata and tensor table from the header (see read_gguf for errors)."""
    header = read_gguf(path)
    source: TensorSource = GGUFSource(path, header)
    metadata = {"gguf.version": str(header.version), **header.metadata}
    where = {name: (source, name) for name in header.table}
    return ModelFile(path, "gguf", dict(header.table), metadata, where)
