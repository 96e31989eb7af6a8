"""Work spread over the machine's cores in worker processes.

Reading headers and folding tensor chunks is Python work that holds the GIL (threads measured
slower than one), so the lab's parallel reads run in processes. Where the platform can fork they
are forked, and inherit the modules this process has already imported instead of importing torch
again.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def cores() -> int:
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def process_pool(jobs: int) -> ProcessPoolExecutor:
    """A pool of `jobs` worker processes, forked where the platform can fork."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(jobs, mp_context=context)
