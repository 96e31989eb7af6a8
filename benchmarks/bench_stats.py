"""Tensor statistics of a >= 1 GB fp16 SD1.5-layout safetensors file: labkit.stats.per_tensor.tensor_stats
against a warm `cat FILE > /dev/null` (time) and against 2x the largest tensor + 300 MB (peak
memory), beside loading the whole state dict and computing the same table.

The file is made here from the SD1.5 key table in tests/data/layouts (random fp16 values, the
position ids as int64 0..76) in a temp folder and removed after. Each side runs in its own
subprocess, which reports its time (imports excluded) and its peak RSS (resource.getrusage).
Run: python benchmarks/bench_stats.py [repeats]
"""

from __future__ import annotations

import json
import math
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from loadavg import load_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "tests" / "data" / "layouts" / "sd15.json"
ITEMSIZE = {"F16": 2, "F32": 4, "I64": 8}
BLOCK = 1 << 23  # bytes of random fp16 values, repeated through the file
MB = 2**20

# Each side as a script run in a fresh interpreter: prints {"seconds", "cpu_s" (all threads and
# worker processes), "peak_mb" (the larger of the process and its largest worker), "base_mb"}.
SIDES = {
    "lab": """
import labkit.stats.per_tensor as stats
def work(path):
    return stats.tensor_stats(path, progress=False)
""",
    "load_all": """
import pandas as pd
from safetensors.torch import load_file
from labkit.stats.moments import describe, one_thread
@one_thread()
def work(path):
    tensors = load_file(path)
    return pd.DataFrame([{"name": k, **describe(t)} for k, t in tensors.items()])
""",
}
MEASURE = """
import json, resource, sys, time
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
cpu = time.process_time()
table = work(sys.argv[1])
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
workers = resource.getrusage(resource.RUSAGE_CHILDREN)
assert len(table) > 1000
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, workers.ru_maxrss) / 1024
print(json.dumps({"seconds": seconds, "cpu_s": cpu + workers.ru_utime + workers.ru_stime,
                  "base_mb": base, "peak_mb": peak}))
"""


def make_file(path: Path) -> int:
    """Write the SD1.5-layout fp16 file; return the size of its largest tensor in bytes."""
    table = json.loads(TABLE.read_text())["tensors"]
    header, offset, largest = {}, 0, 0
    for name, entry in table.items():
        size = math.prod(entry["shape"]) * ITEMSIZE[entry["dtype"]]
        header[name] = {"dtype": entry["dtype"], "shape": entry["shape"],
                        "data_offsets": [offset, offset + size]}
        offset, largest = offset + size, max(largest, size)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    block = (np.random.default_rng(0).standard_normal(BLOCK // 2) * 0.02).astype(np.float16)
    block = block.tobytes()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, entry in table.items():
            size = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            if entry["dtype"] == "I64":
                f.write(np.arange(size // 8, dtype=np.int64).tobytes())
                continue
            while size:
                f.write(block[:min(size, BLOCK)])
                size -= min(size, BLOCK)
    return largest


def run_side(side: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", SIDES[side] + MEASURE, str(path)], cwd=REPO,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cat_seconds(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(f"cat '{path}' > /dev/null", shell=True, check=True)
    return time.perf_counter() - start


def main(repeats: int = 3) -> int:
    with tempfile.TemporaryDirectory(prefix="labkit-bench-stats-") as tmp:
        path = Path(tmp) / "sd15_fp16.safetensors"
        largest = make_file(path)
        size = path.stat().st_size
        print(f"  file: {size / 1e9:.2f} GB, largest tensor {largest / MB:.0f} MB")
        cat_seconds(path)  # warm the page cache
        runs: dict[str, list] = {"cat": [], "lab": [], "load_all": []}
        for _ in range(repeats):  # alternate the sides in each repeat
            runs["cat"].append(cat_seconds(path))
            for side in SIDES:
                runs[side].append(run_side(side, path))
    cat = statistics.median(runs["cat"])
    budget = 2 * largest / MB + 300
    for side, label in (("lab", "tensor_stats"), ("load_all", "load whole state dict + table")):
        secs = statistics.median(r["seconds"] for r in runs[side])
        cpu = statistics.median(r["cpu_s"] for r in runs[side])
        peak = statistics.median(r["peak_mb"] for r in runs[side])
        base = statistics.median(r["base_mb"] for r in runs[side])
        held = side == "lab"  # the other side is a reference: context, not a target
        print(f"{label if held else '  reference, ' + label} time: {secs / cat:.1f}x ({secs:.2f} s "
              f"vs cat {cat:.2f} s, median of {repeats}; CPU seconds {cpu:.2f})"
              + (" target <= 3" if held else ""))
        print(f"{label if held else '  reference, ' + label} peak memory: {peak / budget:.2f}x "
              f"({peak:.0f} MB vs 2 x largest + 300 = {budget:.0f} MB, median of {repeats}; "
              f"{base:.0f} MB of it after imports)" + (" target <= 1" if held else ""))
    print(load_line())
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
