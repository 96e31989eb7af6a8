"""Model files read and written one tensor at a time, so that surgery on two 2 GB checkpoints
holds a few tensors in memory, never whole models.

Reading: a .safetensors file by positional reads into a buffer, or (`mapped`) each tensor as a
read-only view of its own pages, mapped when read and unmapped when the tensor is freed (no copy;
never the whole file mapped at once, as mapped pages count as the process's memory), the kernel
asked to read the next READ_AHEAD bytes meanwhile (a file not in the page cache: the disk works
while the tensors before are merged; 5-6 s instead of 7-10 s for the two 2 GB files); other
forms through labkit.files' ModelFile.tensor. Writing: the output's table is known before any tensor is
(names, shapes and dtypes come from the sources' headers), so its header is written first and
each tensor's bytes after it, to a hidden temporary file beside the destination that is renamed
into place at the end, after an fsync: a destination is absent or complete. Every WRITE_BEHIND
bytes the kernel is asked to write the new bytes out now and to drop the ones before them from
its cache: the disk works while the next tensors are computed, the final fsync finds little left
to do, and a 2 GB output recycles a few dozen MB of page cache instead of 2 GB of fresh pages
(on the lab's 2-core VM the merge's fsync took 0.01 s against 1 s with no hints, and its 2 GB
of writes 0.5-0.6 s with the drops against 1.2-3 s without them).
"""

from __future__ import annotations

import json
import mmap
import os
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import torch

from labkit.errors import CorruptFileError, LabkitError, NotAModelError
from labkit.files.model_file import ModelFile
from labkit.files.opener import open_model
from labkit.files.safetensors_header import read_header
from labkit.tensors import DTYPES, TensorInfo, dtype_name

OUTPUT_SUFFIX = ".safetensors"
TMP_SUFFIX = ".partial"
ALIGN = 8  # safetensors pads its header so that the data starts on an 8-byte boundary
WRITE_BEHIND = 32 << 20  # bytes between two write-behind hints
READ_AHEAD = 64 << 20  # bytes a mapped reader asks the kernel to read past the tensor it maps
# Per-tensor mappings need MAP_POPULATE (Linux): one call maps every page, no fault per page.
_CAN_MAP = hasattr(mmap, "MAP_POPULATE") and hasattr(os, "posix_fadvise")
_REOPEN = "The file may have changed since it was opened: open it again."


class Buffer:
    """A reusable block of memory handed out as tensors: after the first large one, no tensor
    costs an allocation (fresh memory is zeroed and page-faulted in, a pass of its own)."""

    def __init__(self, nbytes: int = 0) -> None:
        self._bytes = bytearray(nbytes)

    def view(self, nbytes: int) -> memoryview:
        """The first `nbytes` bytes, grown when needed; valid until the next call."""
        if len(self._bytes) < nbytes:
            self._bytes = bytearray(nbytes)
        return memoryview(self._bytes)[:nbytes]

    def tensor(self, info: TensorInfo) -> torch.Tensor:
        """An uninitialised tensor of `info`'s shape and dtype over the buffer."""
        torch_dtype = DTYPES[info.dtype][0]
        if not info.nbytes:
            return torch.empty(info.shape, dtype=torch_dtype)
        return torch.frombuffer(self.view(info.nbytes), dtype=torch_dtype).reshape(info.shape)


class Reader:
    """One source model: its ModelFile (table, metadata, identity) and its tensors one by one.
    With `reuse`, each tensor read from a .safetensors file lives in one reused buffer and is
    valid only until the next read (streaming: memory stays the largest tensor). With `mapped`,
    each one is a read-only view of the file's pages instead (Linux; elsewhere, or where the file
    cannot be mapped, a read as without it): no copy, unmapped when the tensor is freed. Never
    write into such a tensor; a file cut short while one is in use ends the process (SIGBUS), as
    with any mapped file (safetensors' safe_open maps whole files)."""

    def __init__(self, path: str | Path, reuse: bool = False, mapped: bool = False):
        self.model: ModelFile = open_model(path)
        self.path = self.model.path
        self.table: Mapping[str, TensorInfo] = self.model.table
        self._header = read_header(self.path) if self.model.format == "safetensors" else None
        self._file: BinaryIO | None = None
        largest = max((i.nbytes for i in self.table.values()), default=0)
        self._mapped = mapped and _CAN_MAP
        self._ahead = 0  # how far into the file the read-ahead asked for reaches
        reused = reuse and not self._mapped and self._header is not None
        self._buffer = Buffer(largest) if reused else None

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor (in a fresh buffer unless the reader reuses one). Raises CorruptFileError,
        NotAModelError (a dtype torch has no type for)."""
        if self._header is None:
            return self.model.tensor(name)
        info = self.table[name]
        if DTYPES[info.dtype][0] is None:
            raise NotAModelError(f"tensor {name!r} has dtype {info.dtype}, which torch cannot "
                                 "hold.", self.path, "Surgery works on float and integer tensors.")
        begin, end = self._header.offsets[name]
        if self._file is None:
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        if self._mapped and end > begin:
            mapped = self._map(name, info, self._header.data_start + begin, end - begin)
            if mapped is not None:
                return mapped
        tensor = (self._buffer or Buffer()).tensor(info)
        self._file.seek(self._header.data_start + begin)
        got = self._file.readinto(memoryview(tensor_bytes(tensor))) if end > begin else 0
        if got != end - begin:
            raise CorruptFileError(f"ends inside tensor {name!r}.", self.path, _REOPEN)
        return tensor

    def _map(self, name: str, info: TensorInfo, start: int, nbytes: int) -> torch.Tensor | None:
        """The tensor at `start` as a read-only view of its mapped, populated pages; None (and
        reads from then on) when the file cannot be mapped. Raises CorruptFileError when the
        file ends before the tensor does."""
        assert self._file is not None
        fd = self._file.fileno()
        page, end = start - start % mmap.ALLOCATIONGRANULARITY, start + nbytes
        if os.fstat(fd).st_size < end:  # a mapped page past the end would be SIGBUS
            raise CorruptFileError(f"ends inside tensor {name!r}.", self.path, _REOPEN)
        if self._ahead < end + READ_AHEAD // 2:  # asked every READ_AHEAD / 2 bytes or so
            begin = max(self._ahead, start)
            os.posix_fadvise(fd, begin, end + READ_AHEAD - begin, os.POSIX_FADV_WILLNEED)
            self._ahead = end + READ_AHEAD
        try:
            pages = mmap.mmap(fd, end - page, offset=page, prot=mmap.PROT_READ,
                              flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        except (OSError, ValueError):  # a file system without mappings: read instead
            self._mapped = False
            return None
        with warnings.catch_warnings():  # torch warns (once) that it cannot mark it read-only
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.frombuffer(memoryview(pages)[start - page:], dtype=DTYPES[info.dtype][0])
        return flat.reshape(info.shape)

    def close(self) -> None:
        """Close the file handle, if one is open."""
        if self._file is not None:
            self._file.close()
            self._file = None


@contextmanager
def readers(*paths: str | Path | None, reuse: bool = False,
            mapped: bool = False) -> Iterator[list[Reader | None]]:
    """Readers for the given paths (None stays None; `reuse`, `mapped`: as Reader's), closed at
    the end. Raises what open_model raises: NotAModelError, CorruptFileError, UnsafeFileError."""
    opened: list[Reader | None] = []
    try:
        for path in paths:
            opened.append(None if path is None else Reader(path, reuse, mapped))
        yield opened
    finally:
        for reader in opened:
            if reader is not None:
                reader.close()


def check_output(out: str | Path, sources: list[Path], overwrite: bool = False) -> Path:
    """The output path, refused (LabkitError) when it is not a .safetensors name, is one of the
    sources, or exists without overwrite."""
    out = Path(out)
    if out.suffix != OUTPUT_SUFFIX:
        raise LabkitError(f"has suffix {out.suffix!r}; surgery writes {OUTPUT_SUFFIX} files.", out,
                          f"End the output name in {OUTPUT_SUFFIX}.")
    if any(out.resolve() == Path(s).resolve() for s in sources):
        raise LabkitError("is one of the sources; the lab never overwrites its sources.", out,
                          "Choose another output name.")
    if out.is_dir():
        raise LabkitError("is a folder.", out, "Give a file name ending in .safetensors.")
    if out.exists() and not overwrite:
        raise LabkitError("already exists.", out, "Pass overwrite (--overwrite) to replace it, "
                          "or choose another output name.")
    return out


def header_bytes(plan: Mapping[str, TensorInfo], metadata: Mapping[str, str]) -> bytes:
    """The 8-byte length and the JSON header of a safetensors file holding `plan`, in order."""
    entries: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, info in plan.items():
        entries[name] = {"dtype": info.dtype, "shape": list(info.shape),
                         "data_offsets": [offset, offset + info.nbytes]}
        offset += info.nbytes
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % ALIGN)
    return len(text).to_bytes(8, "little") + text


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's bytes in memory order (any dtype, bf16 included)."""
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def write_all(f: BinaryIO, data: memoryview | bytes) -> None:
    """Write every byte to an unbuffered file (a raw write may take only part)."""
    view = memoryview(data)
    while view:
        view = view[f.write(view):]


class StreamWriter:
    """Writes the tensors of a planned table, in the plan's order, after its header."""

    def __init__(self, f: BinaryIO, plan: Mapping[str, TensorInfo], dst: Path):
        self._f, self._dst = f, dst
        self._pending = iter(plan.items())
        # bytes written; where the last hint asked for write-out; where the drops have reached
        self._written = self._asked = self._dropped = f.tell()

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write the next tensor of the plan; its name, shape and dtype must be the plan's."""
        self.write_parts(name, TensorInfo(tuple(tensor.shape), dtype_name(tensor.dtype)), [tensor])

    def write_parts(self, name: str, info: TensorInfo, parts: Iterable[torch.Tensor]) -> None:
        """Write the next tensor of the plan (`info`: its shape and dtype, the plan's) from
        consecutive pieces of it in that dtype, each written before the next is asked for."""
        want_name, want = next(self._pending, (None, None))
        if (name, info) != (want_name, want):
            raise ValueError(f"{self._dst}: expected {want_name} {want}, got {name} {info}")
        size = 0
        for part in parts:
            if dtype_name(part.dtype) != info.dtype:
                raise ValueError(f"{self._dst}: {name} is {info.dtype}, got a {part.dtype} part")
            data = tensor_bytes(part)
            write_all(self._f, data)
            size += len(data)
            self._written += len(data)
            if self._written - self._asked >= WRITE_BEHIND:
                self._write_behind()
        if size != info.nbytes:
            raise ValueError(f"{self._dst}: {name} needs {info.nbytes} bytes, its parts gave {size}")

    def _write_behind(self) -> None:
        """Ask the kernel to write out the bytes since the last hint and to drop the ones the
        last hint asked for (on disk by now; pages still being written stay). Linux starts the
        write-out of dirty pages on POSIX_FADV_DONTNEED; elsewhere a hint or nothing."""
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._f.fileno(), self._dropped, self._written - self._dropped,
                             os.POSIX_FADV_DONTNEED)
        self._dropped, self._asked = self._asked, self._written

    def finished(self) -> bool:
        """Whether every planned tensor was written."""
        return next(self._pending, None) is None


@contextmanager
def stream_writer(dst: Path, plan: Mapping[str, TensorInfo],
                  metadata: Mapping[str, str]) -> Iterator[StreamWriter]:
    """A writer for `plan` into a temporary file beside dst, renamed onto dst when the block ends
    with every tensor written. Raises LabkitError when the disk refuses the write."""
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        # unbuffered: a buffered file copies each large tensor once more, at a quarter the speed
        with open(tmp, "wb", buffering=0) as f:
            write_all(f, header_bytes(plan, metadata))
            writer = StreamWriter(f, plan, dst)
            yield writer
            if not writer.finished():
                raise ValueError(f"{dst}: not every planned tensor was written")
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except OSError as e:
        raise LabkitError(f"could not be written ({e.strerror or e}).", dst,
                          "Check free disk space and write permission there.") from e
    finally:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_tensors(dst: Path, tensors: Mapping[str, torch.Tensor],
                  metadata: Mapping[str, str]) -> Path:
    """Write a small dict of tensors (a LoRA) atomically as .safetensors; returns dst."""
    plan = {k: TensorInfo(tuple(v.shape), dtype_name(v.dtype)) for k, v in tensors.items()}
    with stream_writer(dst, plan, metadata) as w:
        for name, tensor in tensors.items():
            w.write(name, tensor)
    return dst
