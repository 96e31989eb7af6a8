"""Memory a reader uses on arbitrary bytes, for the tests that feed readers hostile input."""

from __future__ import annotations

import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from labkit.errors import LabkitError


def peak_bytes_reading(read: Callable[[Path], object], data: bytes, name: str) -> int:
    """Write `data` to a temp file named `name`, run `read` on it; the peak Python allocation.

    A LabkitError is an accepted answer; any other exception propagates and fails the test.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        tracemalloc.start()
        try:
            read(path)
        except LabkitError:
            pass
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return peak
