"""A safetensors file's tensors as chunks read straight from the file, for statistics.

Positional reads (os.preadv) into reusable buffers, no mmap: memory stays one chunk per worker
however large the tensor, each byte is copied once (from the page cache into a cache-sized
buffer), and no page of the file stays mapped into the process (mapped pages count as the
process's memory). `file_figures` works on several tensors at once, one per thread: torch's and
numpy's kernels release the GIL, and each tensor's arithmetic is the same as on one thread."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch

from labkit.errors import CorruptFileError
from labkit.files.safetensors_header import SafetensorsHeader, read_header
from labkit.stats import moments as tensor_math
from labkit.tensors import DTYPES

_REDOWNLOAD = "The file may have been cut short or replaced since it was opened: open it again."
T = TypeVar("T")


def _parts(fd: int, path: Path, start: int, nbytes: int, dtype: str,
           buffer: bytearray) -> Iterator[torch.Tensor]:
    torch_dtype, itemsize = DTYPES[dtype]
    if torch_dtype is None:
        return
    step = tensor_math.CHUNK * int(itemsize)
    view = memoryview(buffer)
    for offset in range(0, nbytes, step):
        want = min(step, nbytes - offset)
        got = 0
        while got < want and (n := os.preadv(fd, [view[got:want]], start + offset + got)):
            got += n
        if got != want:
            raise CorruptFileError(f"ends inside a tensor's data ({start + offset + got:,} of "
                                   f"{start + nbytes:,} bytes).", path, _REDOWNLOAD)
        yield torch.frombuffer(buffer, dtype=torch_dtype, count=want // int(itemsize))


def _header_holding(path: Path, names: list[str]) -> tuple[SafetensorsHeader, int]:
    """The file's header (it must still hold every name) and the chunk buffer size in bytes."""
    header = read_header(path)
    missing = [n for n in names if n not in header.table]
    if missing:
        raise CorruptFileError(f"no longer holds tensor {missing[0]!r}.", path, _REDOWNLOAD)
    largest = max((DTYPES[i.dtype][1] for i in header.table.values()), default=1)
    return header, tensor_math.CHUNK * int(max(largest, 1))


def _tensor_parts(fd: int, path: Path, header: SafetensorsHeader, name: str,
                  buffer: bytearray) -> Iterator[torch.Tensor]:
    begin, end = header.offsets[name]
    return _parts(fd, path, header.data_start + begin, end - begin, header.table[name].dtype,
                  buffer)


def file_parts(path: str | Path, names: list[str]) -> Iterator[tuple[str, Iterator[torch.Tensor]]]:
    """(name, chunks) for each of `names` in a safetensors file: each chunk is valid only until
    the next one is read. Raises CorruptFileError if the file is cut short or no longer holds a
    name, NotAModelError if it cannot be read."""
    path = Path(path)
    header, size = _header_holding(path, names)
    buffer = bytearray(size)
    with open(path, "rb", buffering=0) as f:
        for name in names:
            yield name, _tensor_parts(f.fileno(), path, header, name, buffer)


def _one_torch_thread() -> None:
    torch.set_num_threads(1)  # each worker's kernels on its own thread: the same sums as before


def file_figures(path: str | Path, names: list[str],
                 figures: Callable[[Iterable[torch.Tensor]], T],
                 workers: int | None = None) -> Iterator[tuple[str, T]]:
    """(name, figures(chunks)) for each of `names` in a safetensors file, in order, computed
    `workers` tensors at a time (default: one per CPU, at most 4). Raises what file_parts
    raises."""
    path = Path(path)
    header, size = _header_holding(path, names)
    workers = workers or min(os.cpu_count() or 1, 4)
    local = threading.local()

    def one(fd: int, name: str) -> T:
        if not hasattr(local, "buffer"):
            local.buffer = bytearray(size)
        return figures(_tensor_parts(fd, path, header, name, local.buffer))

    ahead: deque[tuple[str, Future[T]]] = deque()
    with open(path, "rb", buffering=0) as f, ThreadPoolExecutor(
            workers, initializer=_one_torch_thread) as pool:
        try:
            for name in names:
                ahead.append((name, pool.submit(one, f.fileno(), name)))
                if len(ahead) > 2 * workers:
                    done, future = ahead.popleft()
                    yield done, future.result()
            while ahead:
                done, future = ahead.popleft()
                yield done, future.result()
        finally:
            for _, future in ahead:
                future.cancel()
