"""A safetensors file's tensors as chunks read straight from the file, for statistics, and
their statistics over the machine's cores.

Positional reads into one reusable buffer, no mmap: memory stays one chunk however large the
tensor, each byte is copied once (from the page cache into a cache-sized buffer), and no page of
the file stays mapped into the process (mapped pages count as the process's memory). A large
file's tensors are split into batches of about equal bytes, each described in a worker process
(labkit.processes): the chunk arithmetic is short calls that hold the GIL between them, so
threads measured slower than one, while two processes take about half the time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from labkit.errors import CorruptFileError, LabkitError
from labkit.files.safetensors_header import read_header
from labkit.processes import process_pool
from labkit.stats import moments as tensor_math
from labkit.tensors import DTYPES

_REDOWNLOAD = "The file may have been cut short or replaced since it was opened: open it again."
PROCESS_MIN_BYTES = 256 * 2**20  # a smaller file is described in this process: workers cost more
BATCHES_PER_JOB = 8  # small enough batches that the bar moves and the cores share the work evenly


@contextmanager
def reading(path: Any, what: str) -> Iterator[None]:
    """Turn any error but the lab's own, raised while reading `what`, into CorruptFileError."""
    try:
        yield
    except LabkitError:
        raise
    except Exception as e:  # torch/safetensors/zipfile errors on a damaged file
        raise CorruptFileError(f"{what} could not be read ({type(e).__name__}: {e}).", path,
                               "The file may be truncated or damaged: download it again."
                               ) from None


def _parts(f, path: Path, start: int, nbytes: int, dtype: str, buffer: bytearray,
           views: dict[str, torch.Tensor]) -> Iterator[torch.Tensor]:
    torch_dtype, itemsize = DTYPES[dtype]
    if torch_dtype is None:
        return
    step = tensor_math.CHUNK * int(itemsize)
    if dtype not in views:  # one view of the buffer per dtype, reused for every full chunk
        views[dtype] = torch.frombuffer(buffer, dtype=torch_dtype, count=tensor_math.CHUNK)
    full, view = views[dtype], memoryview(buffer)
    f.seek(start)
    for offset in range(0, nbytes, step):
        want = min(step, nbytes - offset)
        got = 0
        while got < want and (n := f.readinto(view[got:want])):
            got += n
        if got != want:
            raise CorruptFileError(f"ends inside a tensor's data ({start + offset + got:,} of "
                                   f"{start + nbytes:,} bytes).", path, _REDOWNLOAD)
        yield full if want == step else torch.frombuffer(buffer, dtype=torch_dtype,
                                                         count=want // int(itemsize))


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
    views: dict[str, torch.Tensor] = {}
    with open(path, "rb", buffering=0) as f:
        for name in names:
            begin, end = header.offsets[name]
            yield name, _parts(f, path, header.data_start + begin, end - begin,
                               header.table[name].dtype, buffer, views)


def _described(path: str | Path, names: list[str]) -> Iterator[tuple[str, dict[str, float]]]:
    # The outer `reading`: the file's own errors (opened again here) as CorruptFileError too.
    with tensor_math.one_thread(), reading(path, "its tensor data"):
        for name, parts in file_parts(path, names):
            with reading(path, f"tensor {name!r}"):
                yield name, tensor_math.describe_parts(parts)


def describe_tensors(path: str | Path, names: list[str]) -> list[dict[str, float]]:
    """The statistics (labkit.stats.moments.describe) of each named tensor of a safetensors
    file, in order: the task a worker process runs. Raises CorruptFileError."""
    return [figures for _, figures in _described(path, names)]


def batches(names: Sequence[str], sizes: Sequence[int], count: int) -> list[list[str]]:
    """`names` in order, cut into about `count` runs of about equal total size."""
    budget = sum(sizes) / max(count, 1)
    runs: list[list[str]] = [[]]
    filled = 0
    for name, size in zip(names, sizes, strict=True):
        if filled >= budget and runs[-1]:
            runs.append([])
            filled = 0
        runs[-1].append(name)
        filled += size
    return [run for run in runs if run]


def describe_file(path: str | Path, names: list[str], sizes: Sequence[int], jobs: int,
                  progress: bool) -> dict[str, dict[str, float]]:
    """name -> statistics of the named tensors of a safetensors file (their `sizes` in bytes),
    over `jobs` worker processes when the file holds PROCESS_MIN_BYTES or more, with a bar of
    tensors. Raises CorruptFileError, NotAModelError."""
    from tqdm.auto import tqdm

    jobs = 1 if sum(sizes) < PROCESS_MIN_BYTES else max(1, min(jobs, len(names)))
    found: dict[str, dict[str, float]] = {}
    with tqdm(total=len(names), desc="tensor stats", unit="tensor", disable=not progress) as bar:
        if jobs == 1:
            for name, figures in _described(path, names):
                found[name] = figures
                bar.update()
            return found
        runs = batches(names, sizes, jobs * BATCHES_PER_JOB)
        with process_pool(jobs) as pool:
            futures = {pool.submit(describe_tensors, path, run): run for run in runs}
            for future in as_completed(futures):
                run = futures[future]
                found.update(zip(run, future.result(), strict=True))
                bar.update(len(run))
    return found
