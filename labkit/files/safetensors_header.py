"""Read and validate a safetensors header (8 + N bytes) exactly as the reference reader does.

Two readers, one verdict: a fast one (orjson, when installed, and list-wide checks in C) accepts
the headers that break no rule, and anything it does not accept is read again by the exact one
(json, rule by rule), which names the first rule broken in the reference reader's order.
"""

from __future__ import annotations

import gc
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from operator import itemgetter, mul, sub
from pathlib import Path
from typing import NamedTuple

from labkit.errors import CorruptFileError, NotAModelError
from labkit.sniff import MAX_HEADER
from labkit.tensors import DTYPES, TensorInfo, TensorTable

_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_REDOWNLOAD = "The file is damaged or was cut short: download it again."
_OFF_SPEC = ("The tool that wrote it broke the format and safetensors itself refuses it; downloading "
             "again will not help: ask its author for a fixed copy.")
_BITS = {name: int(size * 8) for name, (_, size) in DTYPES.items()}
_DIGITS_AND_LISTS = b"0123456789,[]"
_FIELDS = tuple(map(itemgetter, ("dtype", "shape", "data_offsets")))

try:  # a C JSON parser 3-5x faster than json's on a 160 kB header; json does the same without it
    from orjson import JSONDecodeError as _OrjsonError
    from orjson import JSONEncodeError as _OrjsonWriteError
    from orjson import dumps as _orjson_dumps
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - orjson is a dependency
    _orjson_loads = None


class Offsets(Mapping[str, tuple[int, int]]):
    """name -> (begin, end) of its data, from columns: no pair made per tensor until asked."""

    def __init__(self, index: dict[str, int], begins: Sequence[int], ends: Sequence[int]):
        self._index, self._begins, self._ends = index, begins, ends

    def __getitem__(self, name: str) -> tuple[int, int]:
        i = self._index[name]
        return self._begins[i], self._ends[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


class SafetensorsHeader(NamedTuple):
    """The validated header: tensors in file order, metadata, and where the data starts."""

    table: TensorTable
    offsets: Mapping[str, tuple[int, int]]
    metadata: dict[str, str]
    data_start: int
    text: bytes = b""  # the header's JSON: equal texts, equal tables and metadata


class _Bad(Exception):
    """A rule broken by the header; turned into CorruptFileError with the path."""


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _Bad(f"the header names {key!r} twice (duplicate keys are not allowed)")
        out[key] = value
    return out


def _is_uint(v: object) -> bool:
    return type(v) is int and v >= 0


def _entry(name: str, raw: object) -> tuple[TensorInfo, tuple[int, int]]:
    if not isinstance(raw, dict) or not raw.keys() >= _ENTRY_KEYS:
        raise _Bad(f"tensor {name!r} must have dtype, shape and data_offsets")
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _Bad(f"tensor {name!r} has unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        raise _Bad(f"tensor {name!r} has a shape that is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(o) for o in offsets)):
        raise _Bad(f"tensor {name!r} has data_offsets that are not two positions")
    return TensorInfo(tuple(shape), dtype), (offsets[0], offsets[1])


def _shape_of(header: object) -> tuple[dict, dict, dict[str, str]]:
    """Check the JSON shape: tensor entries and an optional string-to-string __metadata__."""
    if not isinstance(header, dict):
        raise _Bad("the header is not a JSON object")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        odd = next((f" ({k!r} holds {type(v).__name__})" for k, v in metadata.items()
                    if not isinstance(v, str)), "") if isinstance(metadata, dict) else ""
        raise _Bad(f"__metadata__ must map strings to strings{odd}", _OFF_SPEC)
    infos, offsets = {}, {}
    for name, raw in header.items():
        if name != "__metadata__":
            infos[name], offsets[name] = _entry(name, raw)
    return infos, offsets, metadata


def _check_data(infos: dict, offsets: dict) -> tuple[list[str], int]:
    """Offsets contiguous from 0 in sorted order, each matching shape x dtype; returns the order."""
    order = sorted(offsets, key=lambda n: offsets[n])
    start = 0
    for name in order:
        begin, end = offsets[name]
        if begin != start or end < begin:
            raise _Bad(f"tensor {name!r} has data_offsets [{begin}, {end}] but the previous "
                       f"tensor ends at {start} (offsets must be contiguous from 0)")
        bits = infos[name].numel * _BITS[infos[name].dtype]
        if bits % 8 or bits // 8 != end - begin:
            raise _Bad(f"tensor {name!r} of shape {list(infos[name].shape)} and dtype "
                       f"{infos[name].dtype} needs {bits / 8:g} bytes but its offsets give "
                       f"{end - begin}")
        start = end
    return order, start


def _fast(raw: bytes, file_size: int) -> SafetensorsHeader | None:
    """The header when it breaks no rule, read with orjson and checked list-wide; None to have
    the exact reader decide (anything unusual: a broken rule, extra keys, an escaped ':')."""
    if _orjson_loads is None or b"\\" in raw and b"\\u003" in raw:  # memchr first: rare
        return None
    try:
        header = _orjson_loads(raw)
    except _OrjsonError:
        return None
    if type(header) is not dict:
        return None
    keys = len(header)
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif type(metadata) is not dict or not all(type(v) is str for v in metadata.values()):
        return None
    names, entries = list(header), list(header.values())
    if not entries:
        return None  # an empty table: the exact reader says what it is
    try:  # an entry that is no dict, or a pair that is no list of two, fails a step here
        if not _all(len, entries, 3):
            return None
        dtypes, shapes, pairs = (list(map(field, entries)) for field in _FIELDS)
        begins, ends = map(list, zip(*pairs, strict=True))
        bits = list(map(_BITS.__getitem__, dtypes))
        if not _all(type, shapes, list) or not _uints(begins, ends, shapes):
            return None
    except (KeyError, TypeError, ValueError):  # a key missing, an unhashable dtype, not a pair
        return None
    # A duplicate key anywhere leaves orjson's objects fewer keys than the text has ':' outside
    # strings: the text holds no escaped ':' and its strings are names, metadata and dtypes.
    keys += 3 * len(entries) + len(metadata)
    in_strings = sum("".join(s).count(":") for s in (names, metadata, metadata.values()))
    if raw.count(b":") != keys + in_strings:
        return None
    if begins[0] != 0 or begins[1:] != ends[:-1]:  # not contiguous in the order written
        order = sorted(range(len(names)), key=list(zip(begins, ends, strict=True)).__getitem__)
        names, dtypes, shapes, bits, begins, ends = (
            [column[i] for i in order] for column in (names, dtypes, shapes, bits, begins, ends))
        if begins[0] != 0 or begins[1:] != ends[:-1]:
            return None
    numels = list(map(math.prod, shapes))
    if (list(map(mul, numels, bits)) != list(map(mul, map(sub, ends, begins), repeat(8)))
            or ends[-1] + 8 + len(raw) != file_size):
        return None
    table = TensorTable(names, shapes, dtypes, numels)
    return SafetensorsHeader(table, Offsets(table.index, begins, ends), metadata, 8 + len(raw), raw)


def _all(fn: object, values: list, expected: object) -> bool:
    """True when fn(v) == expected for every v of a non-empty list (a C loop, no Python frame)."""
    return set(map(fn, values)) == {expected}  # type: ignore[call-overload]


def _uints(begins: list, ends: list, shapes: list[list]) -> bool:
    """True when every offset and every size of the (list) shapes is an int >= 0 below 2**64: no
    bool, float, string or list among them. orjson writes them back, in C, as nothing but digits,
    commas and one '[' per list: a type test per value costs three times as much."""
    try:
        text = _orjson_dumps((begins, ends, shapes))
    except _OrjsonWriteError:  # an int of 2**64 or more
        return False
    return not text.translate(None, _DIGITS_AND_LISTS) and text.count(b"[") == len(shapes) + 4


def parse(head: bytes, file_size: int) -> SafetensorsHeader:
    """Validate a header given the file's first bytes (at least 8 + N when present) and its size.

    Raises _Bad naming the first rule broken, in the reference reader's order.
    """
    if file_size < 8 or len(head) < 8:
        raise _Bad(f"the file is {file_size} bytes, too short to hold the 8-byte header length")
    n = int.from_bytes(head[:8], "little")
    if n > MAX_HEADER:
        raise _Bad(f"the header length {n} is over the {MAX_HEADER} bytes safetensors allows")
    if 8 + n > file_size or len(head) < 8 + n:
        raise _Bad(f"the header claims {n} bytes but the file has only {file_size - 8} after "
                   "the length (cut short?)")
    collecting = gc.isenabled()
    gc.disable()  # the parse makes ~5000 containers: collections of the whole heap would dwarf it
    try:
        fast = _fast(head[8 : 8 + n], file_size)
    finally:
        if collecting:
            gc.enable()
    if fast is not None:
        return fast
    try:
        text = head[8 : 8 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("the header is not UTF-8 text") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise _Bad(f"the header is not valid JSON ({str(exc)[:120]})") from None
    infos, offsets, metadata = _shape_of(header)
    order, end = _check_data(infos, offsets)
    if end + 8 + n != file_size:
        extra = file_size - (end + 8 + n)
        what = f"{extra} trailing bytes after" if extra > 0 else f"{-extra} bytes missing from"
        raise _Bad(f"the file has {what} the tensor data (the header says it is "
                   f"{end + 8 + n} bytes, it is {file_size})")
    table = TensorTable(order, [infos[k].shape for k in order], [infos[k].dtype for k in order])
    return SafetensorsHeader(table, {k: offsets[k] for k in order}, metadata, 8 + n,
                             bytes(head[8 : 8 + n]))


def read_header(path: str | Path) -> SafetensorsHeader:
    """Read only the 8 + N header bytes of a safetensors file and validate them.

    Raises NotAModelError if the file cannot be read, CorruptFileError if a rule is broken.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            first = f.read(8)
            n = int.from_bytes(first, "little") if len(first) == 8 else 0
            rest = f.read(n) if n <= min(MAX_HEADER, size - 8) else b""
    except OSError as exc:
        raise NotAModelError(f"cannot be read ({exc.strerror}).", path) from None
    try:
        return parse(first + rest, size)
    except _Bad as exc:
        raise CorruptFileError(f"is not a valid safetensors file: {exc.args[0]}.", path,
                               exc.args[1] if len(exc.args) > 1 else _REDOWNLOAD) from None
