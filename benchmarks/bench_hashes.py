"""All six hashes in one read (labkit.hashes) vs hashlib SHA-256 alone, over the same warm file.

Usage: python benchmarks/bench_hashes.py [size_mib]   (default 1024)
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

from loadavg import load_line  # noqa: E402

from labkit import hashes

REPEATS = 5
BLOCK = 64 * 1024 * 1024


def make_file(path: Path, size: int) -> None:
    """A safetensors file of `size` bytes of random data (one U8 tensor), so AutoV3 is computed."""
    data_len = size - 4096
    header = json.dumps({"__metadata__": {"bench": "hashes"},
                         "x": {"dtype": "U8", "shape": [data_len], "data_offsets": [0, data_len]}})
    raw = header.encode().ljust(4096 - 8)
    block = os.urandom(BLOCK)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for start in range(0, data_len, BLOCK):
            f.write(block[: min(BLOCK, data_len - start)])


def sha256_alone(path: Path) -> str:
    """The anchor: what a user would write to get SHA-256 with the standard library."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn(*args)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    size = int(sys.argv[1] if len(sys.argv) > 1 else 1024) * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.safetensors"
        make_file(path, size)
        sha256_alone(path)  # warm the page cache
        lab, anchor = [], []
        for _ in range(REPEATS):
            lab.append(timed(hashes._compute, path, False))
            anchor.append(timed(sha256_alone, path))
    (lab_s, lab_cpu), (anchor_s, anchor_cpu) = (
        (statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs))
        for runs in (lab, anchor))
    print(f"hashes_six_in_one_read_vs_sha256: {lab_s / anchor_s:.2f}x ({lab_s:.2f} s vs "
          f"{anchor_s:.2f} s, median of {REPEATS}) target <= 1.3")
    print(f"  {size / 2**20:.0f} MiB file, {os.cpu_count()} CPUs; lab {size / lab_s / 1e9:.2f} GB/s, "
          f"sha256 alone {size / anchor_s / 1e9:.2f} GB/s; CPU seconds {lab_cpu:.2f} vs "
          f"{anchor_cpu:.2f}")
    print(load_line())


if __name__ == "__main__":
    main()
