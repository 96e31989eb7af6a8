"""What the lab knows of one tensor without loading it: shape and dtype, in safetensors' names."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from operator import itemgetter
from typing import NamedTuple

import torch

# safetensors dtype name -> (torch dtype or None where torch has none, bytes per element).
# F6/F4 pack several values per byte; they are listed so headers read, never loaded.
DTYPES: dict[str, tuple[torch.dtype | None, float]] = {
    "BOOL": (torch.bool, 1),
    "U8": (torch.uint8, 1),
    "I8": (torch.int8, 1),
    "I16": (torch.int16, 2),
    "U16": (torch.uint16, 2),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I32": (torch.int32, 4),
    "U32": (torch.uint32, 4),
    "F32": (torch.float32, 4),
    "F64": (torch.float64, 8),
    "I64": (torch.int64, 8),
    "U64": (torch.uint64, 8),
    "C64": (torch.complex64, 8),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
    "F8_E8M0": (getattr(torch, "float8_e8m0fnu", None), 1),
    "F6_E2M3": (None, 0.75),
    "F6_E3M2": (None, 0.75),
    "F4": (None, 0.5),
}

_NAME_OF_TORCH_DTYPE = {dt: name for name, (dt, _) in DTYPES.items() if dt is not None}


class TensorInfo(NamedTuple):
    """Shape and dtype (safetensors name, e.g. "F16") of one tensor."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Size of the data in bytes."""
        return int(self.numel * DTYPES[self.dtype][1])


_SHOWN = 3  # entries a TensorTable's repr shows


class TensorTable(Mapping[str, TensorInfo]):
    """name -> TensorInfo in file order, kept as columns (a header's): each TensorInfo is made
    when asked, so opening a file makes none of its ~1000 (making them all cost a fifth of an
    inspect)."""

    def __init__(self, names: list[str], shapes: Sequence[Sequence[int]], dtypes: Sequence[str],
                 numels: Sequence[int] | None = None):
        self.names, self.shapes, self.dtypes = names, shapes, dtypes
        self.numels = list(map(math.prod, shapes)) if numels is None else numels
        self.index = dict(zip(names, range(len(names)), strict=True))  # str -> int: no GC visits

    def __getitem__(self, name: str) -> TensorInfo:
        i = self.index[name]
        return TensorInfo(tuple(self.shapes[i]), self.dtypes[i])

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name!r}: {self[name]}" for name in self.names[:_SHOWN])
        more = f", ... {len(self) - _SHOWN} more" if len(self) > _SHOWN else ""
        return f"TensorTable({len(self)} tensors: {{{shown}{more}}})"


def dtype_counts(table: Mapping[str, TensorInfo]) -> Counter[str]:
    """How many tensors of each dtype (safetensors names) a table holds."""
    if isinstance(table, TensorTable):
        return Counter(table.dtypes)
    return Counter(map(itemgetter(1), table.values()))


def n_params(table: Mapping[str, TensorInfo]) -> int:
    """The number of elements of all tensors of a table."""
    if isinstance(table, TensorTable):
        return sum(table.numels)
    return sum(map(math.prod, map(itemgetter(0), table.values())))


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype ("F32" for torch.float32)."""
    return _NAME_OF_TORCH_DTYPE[dtype]


def info_of(tensor: torch.Tensor) -> TensorInfo:
    """The TensorInfo of a loaded tensor."""
    return TensorInfo(tuple(tensor.shape), dtype_name(tensor.dtype))
