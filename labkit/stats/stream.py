"""A safetensors file's tensors as chunks read straight from the file, for statistics.

Positional reads into one reusable buffer, no mmap: memory stays one chunk however large the
tensor, each byte is copied once (from the page cache into a cache-sized buffer), and no page of
the file stays mapped into the process (mapped pages count as the process's memory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from labkit.errors import CorruptFileError
from labkit.files.safetensors_header import read_header
from labkit.stats import moments as tensor_math
from labkit.tensors import DTYPES

_REDOWNLOAD = "The file may have been cut short or replaced since it was opened: open it again."


def _parts(f, path: Path, start: int, nbytes: int, dtype: str,
           buffer: bytearray) -> Iterator[torch.Tensor]:
    torch_dtype, itemsize = DTYPES[dtype]
    if torch_dtype is None:
        return
    step = tensor_math.CHUNK * int(itemsize)
    view = memoryview(buffer)
    f.seek(start)
    for offset in range(0, nbytes, step):
        want = min(step, nbytes - offset)
        got = 0
        while got < want and (n := f.readinto(view[got:want])):
            got += n
        if got != want:
            raise CorruptFileError(f"ends inside a tensor's data ({start + offset + got:,} of "
                                   f"{start + nbytes:,} bytes).", path, _REDOWNLOAD)
        yield torch.frombuffer(buffer, dtype=torch_dtype, count=want // int(itemsize))


def file_parts(path: str | Path, names: list[str]) -> Iterator[tuple[str, Iterator[torch.Tensor]]]:
    """(name, chunks) for each of `names` in a safetensors file: each chunk is valid only until
    the next one is read. Raises CorruptFileError if the file is cut short or no longer holds a
    name, NotAModelError if it cannot be read."""
    path = Path(path)
    header = read_header(path)
    missing = [n for n in names if n not in header.table]
    if missing:
        raise CorruptFileError(f"no longer holds tensor {missing[0]!r}.", path, _REDOWNLOAD)
    largest = max((DTYPES[i.dtype][1] for i in header.table.values()), default=1)
    buffer = bytearray(tensor_math.CHUNK * int(max(largest, 1)))
    with open(path, "rb", buffering=0) as f:
        for name in names:
            begin, end = header.offsets[name]
            yield name, _parts(f, path, header.data_start + begin, end - begin,
                               header.table[name].dtype, buffer)
