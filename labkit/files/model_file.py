"""ModelFile: an opened model's tensor table and metadata, with tensors loaded one at a time."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from labkit.errors import CorruptFileError, IncompatibleModelError, LabkitError
from labkit.hashes import file_hashes
from labkit.identify import identify
from labkit.tensors import DTYPES, TensorInfo, dtype_counts, info_of, n_params

if TYPE_CHECKING:
    import pandas as pd

MAX_META_CHARS = 2000  # a non-tensor leaf of a pickle is kept as text up to this length
_MAX_DEPTH = 32
# Analyses that layers above files offer as ModelFile methods, registered by them on import
# (files knows nothing of statistics): name -> function(model, **options).
ANALYSES: dict[str, Callable[..., Any]] = {}
NAMED_DTYPES = frozenset(dt for dt, _ in DTYPES.values() if dt is not None)


class TensorSource(Protocol):
    """Where tensors come from: one file or an already loaded dict."""

    def load(self, key: str) -> torch.Tensor:
        """Load one tensor by its key in this source."""
        ...


class SafetensorsSource:
    """Tensors of one safetensors file, read on demand through safe_open (mmap)."""

    def __init__(self, path: Path):
        self.path = path
        self._handle: Any = None

    def load(self, key: str) -> torch.Tensor:
        """Load one tensor via safetensors' safe_open."""
        from safetensors import safe_open

        try:
            if self._handle is None:
                self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            return self._handle.get_tensor(key)
        except Exception as exc:  # safetensors raises its own error types; users get the lab's
            raise CorruptFileError(f"tensor {key!r} could not be read ({exc}).", self.path,
                                   "The file may have changed since it was opened: open it again."
                                   ) from None


class LoadedSource:
    """Tensors already loaded (memory-mapped) by the safe pickle loader."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self.tensors = tensors

    def load(self, key: str) -> torch.Tensor:
        """Return the loaded tensor."""
        return self.tensors[key]


def _leaf_text(value: object) -> str:
    name = getattr(value, "__qualname__", None) if isinstance(value, type) else None
    return (name or str(value))[:MAX_META_CHARS]


def _flatten(obj: object, prefix: str, tensors: dict[str, torch.Tensor] | None,
             meta: dict[str, str], depth: int = 0) -> None:
    """Nested dicts/lists to dotted keys: tensors into `tensors` (when given), leaves into `meta`."""
    if isinstance(obj, torch.Tensor):
        if tensors is not None:  # a trained Parameter (TI .pt) comes back requiring grad: drop that
            tensors[prefix.rstrip(".")] = obj.detach()
        return
    if depth < _MAX_DEPTH and isinstance(obj, Mapping | torch.nn.ParameterDict):
        for key, value in obj.items():
            _flatten(value, f"{prefix}{_leaf_text(key)}.", tensors, meta, depth + 1)
    elif depth < _MAX_DEPTH and isinstance(obj, list | tuple) and any(
            isinstance(v, torch.Tensor | Mapping) for v in obj):
        for i, value in enumerate(obj):
            _flatten(value, f"{prefix}{i}.", tensors, meta, depth + 1)
    else:
        meta[prefix.rstrip(".")] = _leaf_text(obj)


def flatten_checkpoint(obj: object) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A loaded pickle's tensors (a top-level state_dict unwrapped) and its non-tensor leaves."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        _flatten(obj["state_dict"], "", tensors, meta)
        rest = {k: v for k, v in obj.items() if k != "state_dict"}
        _flatten(rest, "", None, meta)
    else:
        _flatten(obj, "", tensors, meta)
    return tensors, meta


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class OneSource(Mapping[str, tuple[TensorSource, str]]):
    """Where each tensor of a table lives when all live in one source under their own names:
    answered from the table, with no entry made per tensor."""

    def __init__(self, source: TensorSource, table: Mapping[str, TensorInfo]):
        self._source, self._table = source, table

    def __getitem__(self, name: str) -> tuple[TensorSource, str]:
        if name not in self._table:
            raise KeyError(name)
        return self._source, name

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


class ModelFile:
    """An opened model: format, tensor table in file order, metadata; tensors load on demand."""

    def __init__(self, path: Path, format: str, table: Mapping[str, TensorInfo],
                 metadata: dict[str, str], where: Mapping[str, tuple[TensorSource, str]],
                 components: dict[str, Path] | None = None, content_key: bytes | None = None):
        self.path = path
        # Bytes that fix the table and metadata (a safetensors header's text), or None: models
        # with equal keys are identified alike (the catalog identifies each layout once).
        self.content_key = content_key
        self.format = format
        self.table = table
        self.metadata = metadata
        self.components = components or {}
        self._where = where
        self._identity: Any = None

    @classmethod
    def from_tensors(cls, path: Path, format: str, tensors: Mapping[str, torch.Tensor],
                     metadata: dict[str, str]) -> ModelFile:
        """A ModelFile over tensors already loaded (pickles)."""
        source = LoadedSource(tensors)
        table: dict[str, TensorInfo] = {}
        for name, t in tensors.items():
            if t.dtype in NAMED_DTYPES and t.layout == torch.strided:
                table[name] = info_of(t)
            else:  # quantised, sparse or complex128: listed, not tabled
                metadata[name] = f"tensor {t.dtype} {t.layout} {list(t.shape)} (not listed)"
        return cls(path, format, table, metadata, OneSource(source, table))

    @property
    def tensors(self) -> pd.DataFrame:
        """The table as a DataFrame with columns name, dtype, shape, nbytes."""
        import pandas as pd

        rows = [(n, i.dtype, i.shape, i.nbytes) for n, i in self.table.items()]
        return pd.DataFrame(rows, columns=["name", "dtype", "shape", "nbytes"])

    def locate(self, name: str) -> tuple[TensorSource, str]:
        """Where one tensor lives: its source and its key there.

        Raises IncompatibleModelError for an unknown name.
        """
        if name not in self._where:
            raise IncompatibleModelError(f"has no tensor named {name!r}.", self.path,
                                         "See .tensors for the names it has.")
        return self._where[name]

    def tensor(self, name: str) -> torch.Tensor:
        """Load one tensor by name.

        Raises IncompatibleModelError for an unknown name, CorruptFileError if it cannot be read.
        """
        source, key = self.locate(name)
        return source.load(key)

    def iter_tensors(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) one at a time, in file order or the order given."""
        for name in self.table if names is None else names:
            yield name, self.tensor(name)

    @property
    def identity(self) -> Any:
        """What the file is (labkit.identify.identity.Identity), computed once from the table."""
        if self._identity is None:
            self._identity = identify(self.table, self.metadata)
        return self._identity

    @property
    def kind(self) -> str:
        """checkpoint, unet, vae, text_encoder, lora, ... (see labkit.identify.identity)."""
        return self.identity.kind

    @property
    def base(self) -> str:
        """sd1, sd2, sdxl, ... (see labkit.identify.identity)."""
        return self.identity.base

    def hashes(self, progress: bool = True) -> dict:
        """Civitai's hashes of the file (labkit.hashes.file_hashes)."""
        return file_hashes(self.path, progress=progress)

    def stats(self, pattern: str | None = None, progress: bool = True) -> pd.DataFrame:
        """Per-tensor statistics, streamed (labkit.stats.tensor_stats, registered by labkit.stats).

        Raises LabkitError if labkit.stats was never imported (labkit.open_model imports it).
        """
        if "stats" not in ANALYSES:
            raise LabkitError("statistics are not loaded.", self.path,
                              "Import labkit.stats (or use labkit.open_model, which does).")
        return ANALYSES["stats"](self, pattern=pattern, progress=progress)

    @property
    def n_params(self) -> int:
        """Total number of elements over all tensors."""
        return n_params(self.table)

    @property
    def nbytes(self) -> int:
        """Total size of the tensor data in bytes."""
        return sum(i.nbytes for i in self.table.values())

    def _summary(self) -> dict[str, str]:
        kind, base = self.kind, self.base
        dtypes = dtype_counts(self.table)
        return {
            "format": self.format, "kind": kind, "base": base,
            "tensors": f"{len(self.table):,}", "params": f"{self.n_params:,}",
            "size": _human_bytes(self.nbytes),
            "dtypes": ", ".join(f"{d} x{c}" for d, c in dtypes.most_common()),
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self._summary().items())
        return f"ModelFile({str(self.path)!r}, {fields})"

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                       for k, v in self._summary().items())
        return (f"<div><b>{html.escape(self.path.name)}</b>"
                f"<table>{rows}</table></div>")
