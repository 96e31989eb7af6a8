"""Where the catalog's reads run: in this process, over the machine's cores, or on a Dask cluster.

The work is `facts.read_facts` over chunks of paths; results come back in order with a progress
bar of files and bytes. Header parsing and identification are Python work that holds the GIL, so
more than one job means processes (labkit.processes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, as_completed
from typing import Any, NamedTuple

from tqdm.auto import tqdm

from labkit.errors import LabkitError
from labkit.inventory.facts import read_facts
from labkit.processes import process_pool

Row = dict[str, Any] | None
CHUNKS_PER_JOB = 8  # small enough chunks that the bar moves and the cores share the load evenly
DASK_TIMEOUT_S = 10
PROCESS_MIN_ITEMS = 64  # fewer reads run in this process: starting workers would cost more


class Item(NamedTuple):
    """One path to read: its absolute path, whether it is a diffusers folder, its size in bytes."""

    path: str
    is_folder: bool
    size: int


def read_chunk(items: Sequence[tuple[str, bool, int]], hashes: bool) -> list[Row]:
    """read_facts over a chunk of items, in order (the task a worker process or Dask runs)."""
    return [read_facts(path, is_folder, hashes) for path, is_folder, _ in items]


def _chunks(items: Sequence[Item], jobs: int) -> list[list[Item]]:
    size = max(1, -(-len(items) // (jobs * CHUNKS_PER_JOB)))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _bar(items: Sequence[Item], progress: bool) -> tqdm:
    return tqdm(total=sum(i.size for i in items), unit="B", unit_scale=True, desc="catalog",
                disable=not progress, postfix=f"0/{len(items)} files")


def _gathered(chunks: list[list[Item]], futures: Sequence[Any], completed: Callable[[Any], Iterator],
              progress: bool) -> list[Row]:
    """The chunks' rows in order, the bar moving as each chunk's future completes."""
    order = {id(f): n for n, f in enumerate(futures)}
    results: list[list[Row]] = [[] for _ in chunks]
    files = sum(map(len, chunks))
    done = 0
    with _bar([i for c in chunks for i in c], progress) as bar:
        for future in completed(futures):
            n = order[id(future)]
            results[n] = future.result()
            done += len(chunks[n])
            bar.set_postfix_str(f"{done}/{files} files", refresh=False)
            bar.update(sum(i.size for i in chunks[n]))
    return [row for rows in results for row in rows]


def run_local(items: Sequence[Item], hashes: bool, jobs: int, progress: bool) -> list[Row]:
    """The rows of `items` in order, over `jobs` processes (in this process when jobs is 1 or
    there are fewer than PROCESS_MIN_ITEMS)."""
    jobs = max(1, min(jobs, len(items)))
    if jobs == 1 or len(items) < PROCESS_MIN_ITEMS:
        chunks = _chunks(items, 1)
        with _bar(items, progress) as bar:
            rows: list[Row] = []
            for chunk in chunks:
                rows += read_chunk(chunk, hashes)
                bar.set_postfix_str(f"{len(rows)}/{len(items)} files", refresh=False)
                bar.update(sum(i.size for i in chunk))
        return rows
    import labkit.files.opener  # noqa: F401 - imported once here, inherited by the forked workers

    chunks = _chunks(items, jobs)
    with process_pool(jobs) as pool:
        futures: list[Future] = [pool.submit(read_chunk, chunk, hashes) for chunk in chunks]
        return _gathered(chunks, futures, as_completed, progress)


def run_dask(items: Sequence[Item], hashes: bool, address: str, progress: bool) -> list[Row]:
    """The rows of `items` in order, read by the workers of the Dask cluster at `address`.

    The workers must see the same paths (a shared file system) and have labkit installed.
    Raises LabkitError when dask.distributed is missing or the scheduler cannot be reached.
    """
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise LabkitError("--dask needs dask.distributed, which is not installed.", None,
                          "Install the extra: pip install 'labkit[dask]'.") from None
    try:
        client = Client(address, timeout=DASK_TIMEOUT_S)
    except (OSError, TimeoutError) as e:
        raise LabkitError(f"no Dask scheduler answered at {address} ({e}).", None,
                          "Check the address (tcp://HOST:PORT) and that the scheduler runs.") from None
    try:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        chunks = _chunks(items, workers)
        futures = client.map(read_chunk, chunks, hashes=hashes, pure=False)
        return _gathered(chunks, futures, dask_completed, progress)
    finally:
        client.close()
